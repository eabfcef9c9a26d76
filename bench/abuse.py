"""A hostile network against ``radtrace listen``, with dcmtk's ``storescp`` under the same attacks in the same run.

All on 127.0.0.1 (hostile connections come from 127.0.0.2 and up, the legitimate sender from
127.0.0.1), the listener with its default limits:

1. memory: ``--claims`` (100) connections each send a PDU header claiming 4 GiB (an A-ASSOCIATE-RQ,
   0xFFFFFFFF bytes) and stay open; the receiver's peak RSS (the kernel's high-water mark) while they
   are held, against its RSS before. Target < 300 MB.
2. slot starvation: ``--drips`` (200) connections each send the header of a 1000-byte A-ASSOCIATE-RQ and
   then one byte every 0.5 s; after 1 s a legitimate C-ECHO from 127.0.0.1 is timed. Target < 2 s.
3. a decompression bomb: a 5.9 KB JPEG 2000 instance whose codestream and header declare
   65535 x 65535: what the receiver answers. Target: refused at receive (no worker ever sees it).
4. fuzzing (radtrace only): ``--datasets`` mutated data sets and ``--pdus`` mutated PDU sequences, seeded,
   with the fuzz suite's invariants after each batch: inputs, crashes, acknowledged-but-lost.

    .venv/bin/python bench/abuse.py [--claims 100] [--drips 200] [--datasets 1000] [--pdus 500] [--seed 14]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from radtrace.dicom_listener.dcmtk import dcmtk_env, echoscu
from radtrace.testing.abuse import (
    Fuzzer,
    ListenerProcess,
    echo_seconds,
    hostile_sources,
    mutated_datasets,
    mutated_pdus,
    store_files,
)
from radtrace.testing.bombs import j2k_bomb
from radtrace.testing.services import free_port

MB = 1024 * 1024
CLAIM = struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF) + b"\x00\x01\x00\x00"  # A-ASSOCIATE-RQ of 4 GiB
DRIP_FIRST = struct.pack(">BBL", 0x01, 0, 1000) + b"\x00\x01"  # a plausible A-ASSOCIATE-RQ, then a byte at a time


def _kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))


class Storescp:
    """dcmtk's storescp on 127.0.0.1:port (a single process, as packaged)."""

    def __init__(self, directory: Path, port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.process = subprocess.Popen(
            # +xa: every transfer syntax it knows, as radtrace accepts (by default it takes uncompressed only)
            ["storescp", "+xa", "--aetitle", "RADTRACE", "--output-directory", str(directory), str(port)],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while echoscu(port).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("storescp did not start")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def _held(port: int, count: int, first: bytes, *, drip: bool = False) -> Iterator[list[socket.socket]]:
    """``count`` connections from hostile sources, each sent ``first``; with ``drip``, one more byte every 0.5 s."""
    sources = hostile_sources()
    opened: list[socket.socket] = []
    stop = threading.Event()
    for index in range(count):
        with contextlib.suppress(OSError):
            sock = socket.create_connection(
                ("127.0.0.1", port), timeout=0.5, source_address=(sources[index % len(sources)], 0)
            )
            opened.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(first)

    def dripping() -> None:
        while not stop.wait(0.5):
            for sock in opened:
                with contextlib.suppress(OSError):
                    sock.send(b"\x00")

    thread = threading.Thread(target=dripping, daemon=True)
    if drip:
        thread.start()
    try:
        yield opened
    finally:
        stop.set()
        if drip:
            thread.join(5)
        for sock in opened:
            sock.close()


def _still_open(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the receiver has not closed (what it sent before closing is read and dropped)."""
    count = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            count += 1  # nothing more to read, and no end of stream: still open
        except OSError:
            pass
    return count


def _memory(pid: int, port: int, claims: int) -> tuple[int, int, int]:
    before = _kib(pid, "VmRSS") * 1024
    with _held(port, claims, CLAIM) as socks:
        time.sleep(2.0)
        peak = _kib(pid, "VmHWM") * 1024
        held = _still_open(socks)
    return before, peak, held


def _echo_during_drips(port: int, drips: int, echo: object) -> tuple[float | None, int]:
    with _held(port, drips, DRIP_FIRST, drip=True) as socks:
        time.sleep(1.0)
        took = echo()  # type: ignore[operator]
        held = _still_open(socks)
    return took, held


def _dcmtk_echo(port: int) -> float | None:
    started = time.monotonic()
    try:
        done = subprocess.run(
            ["echoscu", "-aet", "PACS", "-aec", "RADTRACE", "-to", "10", "-ta", "10", "127.0.0.1", str(port)],
            env=dcmtk_env(),
            capture_output=True,
            timeout=12,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - started if done.returncode == 0 else None


def _fmt_s(value: float | None) -> str:
    return "no answer within 10 s" if value is None else f"{value * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=100)
    parser.add_argument("--drips", type=int, default=200)
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--pdus", type=int, default=500)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="radtrace-abuse-"))
    bomb = j2k_bomb(work / "bomb")
    results: dict[str, dict[str, str]] = {"radtrace": {}, "storescp": {}}

    # dcmtk first, each attack against a fresh process (storescp cannot be left blocked for the next one)
    for attack in ("memory", "drips", "bomb"):
        peer = Storescp(work / f"storescp-{attack}", free_port())
        try:
            if attack == "memory":
                before, peak, held = _memory(peer.pid, peer.port, args.claims)
                results["storescp"]["memory"] = f"{before / MB:.0f} → peak {peak / MB:.0f} MB ({held} held open)"
            elif attack == "drips":
                took, held = _echo_during_drips(peer.port, args.drips, lambda port=peer.port: _dcmtk_echo(port))
                results["storescp"]["drips"] = f"{_fmt_s(took)} ({held} drips open)"
            else:
                status = store_files([bomb], peer.port)[bomb]
                stored = sum(1 for _ in (work / "storescp-bomb").iterdir())
                answer = "no status" if status is None else f"0x{status:04X}"
                results["storescp"]["bomb"] = f"{answer} ({stored} file stored)"
        finally:
            peer.close()

    console.print(f"radtrace: listener with default limits, fuzz seed {args.seed} …")
    with ListenerProcess(work / "radtrace", free_port()) as listener:
        before, peak, held = _memory(listener.pid, listener.port, args.claims)
        results["radtrace"]["memory"] = f"{before / MB:.0f} → peak {peak / MB:.0f} MB ({held} held open)"
        took, held = _echo_during_drips(listener.port, args.drips, lambda: echo_seconds(listener.port, timeout=10))
        results["radtrace"]["drips"] = f"{_fmt_s(took)} ({held} drips open)"
        status = store_files([bomb], listener.port)[bomb]
        results["radtrace"]["bomb"] = "no status" if status is None else f"0x{status:04X} (refused at receive)"
        rss_after = listener.rss_bytes()
    results["radtrace"]["bomb"] += f", listener RSS {rss_after / MB:.0f} MB after"

    files = mutated_datasets(work / "fuzz-in", args.datasets, args.seed)
    sequences = mutated_pdus(args.pdus, args.seed)
    started = time.monotonic()
    with ListenerProcess(work / "radtrace-fuzz", free_port(), fsync="false") as listener:
        fuzzer = Fuzzer(listener, rss_bound_bytes=300 * MB)
        fuzzer.check("start")
        fuzzer.send_datasets(files)
        fuzzer.send_pdus(sequences)
    report = fuzzer.report
    fuzz_s = time.monotonic() - started

    table = Table(title=f"hostile network, {args.claims} claims / {args.drips} drips, 127.0.0.1")
    table.add_column("attack")
    table.add_column("radtrace listen")
    table.add_column("dcmtk storescp")
    table.add_column("target")
    table.add_row(
        f"RSS, {args.claims} connections claiming a 4 GiB PDU",
        results["radtrace"]["memory"],
        results["storescp"]["memory"],
        "< 300 MB",
    )
    table.add_row(
        f"legitimate C-ECHO, {args.drips} drip connections open",
        results["radtrace"]["drips"],
        results["storescp"]["drips"],
        "< 2 s",
    )
    table.add_row("65535² JPEG 2000 bomb (5.9 KB)", results["radtrace"]["bomb"], results["storescp"]["bomb"], "refused")
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report.statuses.items()))
    table.add_row(
        f"fuzz, seed {args.seed} ({fuzz_s:.0f} s)",
        f"{report.datasets} data sets + {report.pdu_sequences} PDU sequences; crashes {report.crashes}; "
        f"acknowledged-but-lost {report.acknowledged_but_lost} of {report.acknowledged}; without status "
        f"{report.without_status}; peak RSS {report.peak_rss_bytes / MB:.0f} MB; slowest echo "
        f"{report.slowest_echo_s * 1000:.0f} ms; statuses {statuses}",
        "—",
        "0 crashes, 0 lost",
    )
    console.print(table)
    if report.broken:
        console.print("broken invariants:", *report.broken[:20], sep="\n  ")


if __name__ == "__main__":
    main()
