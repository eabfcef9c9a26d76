"""The listener's upper layer fuzzed for some minutes with a raw-socket peer, the invariants checked after each case.

A ``radtrace listen`` process (tests/upper_layer_fuzz_support.py's harness: short timeouts, SQLite) gets, from
127.0.0.2 and up: an A-ASSOCIATE-RQ with each of its length fields (the PDU's, every item's and sub-item's, the
maximum length's value) at its boundaries (0..7, one off, doubled, 0x7FFF.., 0xFFFF, 0x10000, 2^31, 2^32-1); a
P-DATA-TF with its PDU and PDV lengths at theirs; every message control header byte; commands and data sets in
fragments of 1 to 4096 bytes, 500 PDVs in one PDU; A-RELEASE-RQ and -RP (and their broken lengths, twice, then
P-DATA or an A-ABORT) in every association state; every PDU type inside an association; then random mutations of
valid PDUs (seeded) until the time is up. After each case (Harness.check): the process lives and answers echoscu,
acknowledged instances intact and no others, no partial file, no connection left, RSS and descriptors within bounds,
no line not the listener's, no traceback. At the end: ``radtrace audit verify`` on its audit log, and the refusals
it counted (association_rejected, aggregated counts included).

    .venv/bin/python bench/listener_upper_layer_fuzz.py --minutes 10 --out /tmp/fuzz

Another checkout: ``PYTHONPATH=<its src>``. 2026-12-06, this machine (2 shared cores): before 446edd8, 34 of the first
71 boundary cases failed (pynetdicom's TypeError traceback for a presentation context without its abstract syntax);
at bdc300a, 10 minutes: 1,080 cases in 601 s, none failed, RSS 156.2 -> 173.9 MB (peak 177.8), no traceback, the
audit log verified, 882 refusals counted in 690 association_rejected events.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dicom_peer_support import ABORT, RELEASE_RQ, echo_rq, fragments, p_data, pdu, pdv, store_rq
from upper_layer_fuzz_support import ECHO, FILM_DATA, RQ, SOP_CLASS, Case, running_harness, store_steps

RELEASE_RP = pdu(0x06, bytes(4))


def length_fields(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, size, value) of every length field of an A-ASSOCIATE-RQ, and of its maximum length's value."""
    fields = [(2, 4, len(data) - 6)]
    at = 74
    while at + 4 <= len(data):
        kind, length = data[at], struct.unpack_from(">H", data, at + 2)[0]
        fields.append((at + 2, 2, length))
        sub = at + 4 + (4 if kind == 0x20 else 0)
        while kind in (0x20, 0x50) and sub + 4 <= at + 4 + length:
            size = struct.unpack_from(">H", data, sub + 2)[0]
            fields.append((sub + 2, 2, size))
            if data[sub] == 0x51:
                fields.append((sub + 4, 4, struct.unpack_from(">L", data, sub + 4)[0]))
            sub += 4 + size
        at += 4 + length
    return fields


def boundaries(size: int, actual: int) -> list[int]:
    top = 0xFFFF if size == 2 else 0xFFFFFFFF
    values = {0, 1, 2, 3, 4, 5, 6, 7, actual - 1, actual + 1, actual * 2, top, top - 1, top // 2, top // 2 + 1}
    if size == 4:
        values |= {0xFFFF, 0x10000, 0x10001}
    return sorted(v for v in values if 0 <= v <= top and v != actual)


def with_field(data: bytes, offset: int, size: int, value: int) -> bytes:
    return data[:offset] + value.to_bytes(size, "big") + data[offset + size :]


def systematic() -> Iterator[Case]:
    for offset, size, actual in length_fields(RQ):
        for value in boundaries(size, actual):
            yield Case(f"RQ field@{offset}/{size}={value:#x}", [with_field(RQ, offset, size, value), ECHO, RELEASE_RQ])
    data = p_data(pdv(1, 0x03, echo_rq()))
    for offset, size, actual in [(2, 4, len(data) - 6), (6, 4, len(data) - 10)]:
        for value in boundaries(size, actual):
            yield Case(f"P-DATA field@{offset}={value:#x}", [RQ, with_field(data, offset, size, value), RELEASE_RQ])
    for control in range(256):
        yield Case(f"PDV control {control:#x}", [RQ, p_data(pdv(1, control, echo_rq())), RELEASE_RQ])
    for size in (1, 2, 3, 7, 64, 1000):
        yield Case(f"command in {size}-byte fragments", [RQ, *fragments(1, echo_rq(), size, command=True), RELEASE_RQ])
    command = fragments(3, store_rq(SOP_CLASS, "2.25.1001"), 1000, command=True)[0]
    for size in (1, 17, 4096):
        cut = fragments(3, FILM_DATA[:20000], size, command=False, last=False)[:400]
        yield Case(f"data set in {size}-byte fragments, cut", [RQ, command, *cut, RELEASE_RQ])
    many = b"".join(pdv(3, 0x00, FILM_DATA[i : i + 10]) for i in range(0, 5000, 10))
    yield Case("500 PDVs in one P-DATA", [RQ, command, pdu(0x04, many), ABORT])
    yield Case("PDVs of 2 bytes", [RQ, command, pdu(0x04, struct.pack(">LBB", 2, 3, 0) * 200), ABORT])
    yield Case("PDV length 1", [RQ, pdu(0x04, struct.pack(">LB", 1, 3))])
    states: dict[str, list[bytes | float]] = {
        "Sta2 (nothing sent)": [],
        "after RQ, AC unread": [RQ],
        "Sta6 established": [RQ, 0.2],
        "mid command": [RQ, 0.2, *fragments(1, echo_rq(), 8, command=True, last=False)[:3]],
        "after command, before data": [RQ, 0.2, command],
        "mid data set": [RQ, 0.2, *store_steps("2.25.1002", FILM_DATA[:60000], last=False)],
        "after release RQ": [RQ, 0.2, RELEASE_RQ],
        "after abort": [RQ, 0.2, ABORT],
    }
    releases = {
        "A-RELEASE-RQ": RELEASE_RQ,
        "A-RELEASE-RP": RELEASE_RP,
        "RQ twice": RELEASE_RQ + RELEASE_RQ,
        "RQ length 0": pdu(0x05, b"", length=0),
        "RQ length 3": pdu(0x05, b"\0" * 3),
        "RQ length 2^32-1": pdu(0x05, bytes(4), length=0xFFFFFFFF),
        "RQ then P-DATA": RELEASE_RQ + ECHO,
        "RQ then an A-ASSOCIATE-AC": RELEASE_RQ + pdu(0x02, RQ[6:]),
        "RQ then A-ABORT": RELEASE_RQ + ABORT,
    }
    for state, steps in states.items():
        for what, release in releases.items():
            yield Case(f"{what} in {state}", [*steps, release, 0.1])
    for kind in range(256):
        yield Case(f"PDU type {kind:#x} inside an association", [RQ, 0.1, pdu(kind, bytes(16))])
        if kind % 8 == 0:
            yield Case(f"PDU type {kind:#x} first", [pdu(kind, bytes(16))])


def mutate(rnd: random.Random, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(rnd.randint(1, 4)):
        kind = rnd.choice(["flip", "cut", "length", "insert", "byte"])
        at = rnd.randrange(max(len(data), 1))
        if kind == "flip" and data:
            data[at] ^= 1 << rnd.randrange(8)
        elif kind == "cut":
            del data[at:]
        elif kind == "length":
            size = rnd.choice([2, 4])
            value = rnd.choice([0, 1, 6, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]) & ((1 << (8 * size)) - 1)
            data[at : at + size] = value.to_bytes(size, "big")
        elif kind == "byte" and data:
            data[at] = rnd.choice([0, 1, 2, 3, 0x7F, 0x80, 0xFF])
        else:
            data[at:at] = rnd.randbytes(rnd.randint(1, 16))
    return bytes(data)


def mutated(rnd: random.Random) -> Iterator[Case]:
    bases = [ECHO, RELEASE_RQ, RELEASE_RP, ABORT, fragments(3, store_rq(SOP_CLASS, "2.25.99"), 1000, command=True)[0],
             p_data(pdv(3, 0x00, FILM_DATA[:4000])), p_data(pdv(3, 0x02, FILM_DATA[:100]))]  # fmt: skip
    n = 0
    while True:
        n += 1
        first = RQ if rnd.random() < 0.5 else mutate(rnd, RQ)
        picked = [rnd.choice(bases) for _ in range(rnd.randint(0, 6))]
        rest: list[bytes | float] = [mutate(rnd, base) if rnd.random() < 0.7 else base for base in picked]
        if rnd.random() < 0.2:
            rest.insert(rnd.randint(0, len(rest)), rnd.choice([0.05, 0.3]))
        yield Case(f"random {n}", [first, *rest])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, required=True, help="a new directory: the listener's data, report.json")
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, object] = {}
    failures: list[tuple[str, str]] = []
    cases = 0
    with running_harness(args.out) as harness:
        rss_start = harness.listener.rss_bytes()
        for source in (systematic(), mutated(random.Random(args.seed))):
            for case in source:
                if time.monotonic() - started > args.minutes * 60 or not harness.listener.alive():
                    break
                try:
                    harness.play(case)
                    harness.check(case.name)
                except AssertionError as exc:
                    failures.append((case.name, str(exc)[:600]))
                    print("FAIL", case.name, str(exc)[:300], flush=True)
                cases += 1
                if cases % 100 == 0:
                    print(cases, case.name, "rss", harness.listener.rss_bytes(), round(time.monotonic() - started))
        report |= {"rss_start": rss_start, "rss_end": harness.listener.rss_bytes()}
        report["rss_peak"] = harness.listener.peak_rss_bytes()
        text = harness.listener.log.read_text(errors="replace")
        report |= {"log_lines": len(text.splitlines()), "tracebacks": text.count("Traceback")}
    report |= {"cases": cases, "failures": failures, "seconds": round(time.monotonic() - started)}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    verify = subprocess.run(
        [sys.executable, "-m", "radtrace", "audit", "verify"],
        capture_output=True,
        text=True,
        env=environment | {"RADTRACE_DATA_DIR": str(args.out / "radtrace")},
        check=False,
    )
    report["audit_verify"] = [verify.returncode, (verify.stdout + verify.stderr)[-300:]]
    engine = sa.create_engine(f"sqlite:///{(args.out / 'radtrace' / 'radtrace.db').resolve()}")
    with engine.connect() as connection:
        types = connection.execute(sa.text("SELECT event_type, count(*) FROM audit_events GROUP BY event_type"))
        report["audit_events"] = {str(kind): int(count) for kind, count in types}
        query = sa.text("SELECT payload FROM audit_events WHERE event_type = 'association_rejected'")
        report["refusals_counted"] = sum(json.loads(p).get("count", 1) for p in connection.execute(query).scalars())
    engine.dispose()
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}), len(failures), "failures")


if __name__ == "__main__":
    main()
