"""ATNA forwarding throughput: audit events/s from the database to a real rsyslog, against peers in the same run.

One SQLite audit log of ``--events`` rows (every event type, failures among them) and one rsyslog (gtls, mutual
TLS, direct queues, one line per message in a file) on 127.0.0.1. Rows, each timed from its first byte to the
point named:

1. ``radtrace audit forward`` (the production forwarder, in process): read rows, build and validate each A.5 XML
   message, frame RFC 5424, send octet-counted over TLS, wait for TCP acknowledgement, fsync the cursor.
   "acked" = every message acknowledged by rsyslog's TCP stack (cursor settled); "in file" = all written by rsyslog.
2. The same forwarder over plain TCP (octet-counted, no TLS) to a second rsyslog input.
3. Peer, transport ceiling: the same framed messages, prebuilt, written raw over one TLS connection in batches of
   ``--batch`` (what a sender that did no work per message would reach).
4. Peer: util-linux ``logger`` (``--tcp --octet-count --rfc5424``, plain TCP: it has no TLS) sending the same XML
   bodies from a file, one message per line.

    .venv/bin/python bench/atna.py [--events 20000] [--batch 500]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from radtrace.audit.atna.forwarder import AtnaForwarder, CursorFile, transport_for
from radtrace.audit.atna.message import AuditSource, audit_message_xml
from radtrace.audit.atna.syslog import StreamTransport
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.queries import AuditRecord
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.config import AtnaSettings
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.atna import Rsyslog, free_port, make_pki
from radtrace.tls_keys import tls_context

PEER = Actor(ae_title="MODALITY1", host="10.20.30.40", process="radtrace@bench:1")


def seed(store: Store, count: int) -> None:
    kinds = list(EventType)
    events = [
        AuditEvent(
            kinds[n % len(kinds)],
            PEER,
            outcome=Outcome.MINOR_FAILURE if n % 11 == 5 else Outcome.SUCCESS,
            study_uid=f"1.2.826.0.1.3680043.8.498.{n // 20}",
            accession=f"ACC{n // 20}",
            patient_id=f"PAT{n // 200}",
            payload={"reason": "association aborted"} if n % 11 == 5 else {"n": n},
        )
        for n in range(count)
    ]
    for start in range(0, count, 1000):
        AuditRecorder(store).record_many(events[start : start + 1000])


def wait_lines(receiver: Rsyslog, target: int, timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    while receiver.count_lines() < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"rsyslog wrote {receiver.count_lines()} of {target} lines")
        time.sleep(0.005)
    return time.monotonic()


def forward(store: Store, settings: AtnaSettings, cursor: Path) -> AtnaForwarder:
    forwarder = AtnaForwarder(store, settings, CursorFile(cursor), transport_for(settings), AuditSource("bench"))
    forwarder.run(threading.Event(), until_caught_up=True)
    return forwarder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    n = args.events
    console = Console(width=130)
    rows: list[tuple[str, str, float, float | None]] = []

    with tempfile.TemporaryDirectory(prefix="radtrace-bench-atna-") as temporary:
        work = Path(temporary)
        store = Store.from_url(f"sqlite:///{work / 'radtrace.db'}")
        upgrade(store)
        console.print(f"seeding {n} audit events ...")
        seed(store, n)
        pki = make_pki(work / "pki")
        receiver = Rsyslog(work / "rsyslog", free_port(), pki, plain_port=free_port())
        receiver.start()
        assert receiver.plain_port is not None
        common = {
            "enabled": True,
            "host": "127.0.0.1",
            "batch_size": args.batch,
            "settle_s": 0.0,
            "poll_interval_s": 0.01,
        }
        tls = AtnaSettings(
            transport="tls",
            port=receiver.port,
            ca_bundle=pki.ca,
            server_name="localhost",
            certificate=pki.client_cert,
            private_key=pki.client_key,
            **common,  # type: ignore[arg-type]
        )
        plain = AtnaSettings(transport="tcp", port=receiver.plain_port, **common)  # type: ignore[arg-type]
        expected = 0

        def timed(label: str, transport: str, run: Callable[[], None]) -> None:
            nonlocal expected
            expected += n
            start = time.monotonic()
            run()
            acked = time.monotonic()
            in_file = wait_lines(receiver, expected)
            rows.append((label, transport, n / (acked - start), n / (in_file - start)))
            console.print(f"  {label} ({transport}): done")

        try:
            timed("radtrace audit forward", "TLS, client cert", lambda: _ignore(forward(store, tls, work / "c1.json")))
            timed("radtrace audit forward", "TCP, no TLS", lambda: _ignore(forward(store, plain, work / "c2.json")))

            # Peers get the very same messages, built beforehand (not timed).
            with store.session() as session:
                records = [
                    AuditRecord.from_row(row)
                    for row in session.execute(sa.select(AuditEventRow.__table__).order_by(AuditEventRow.seq))
                    .mappings()
                    .all()
                ]
            builder = AtnaForwarder(
                store, tls, CursorFile(work / "unused.json"), transport_for(tls), AuditSource("bench")
            )
            framed = [builder._message(record) for record in records]

            def raw_tls() -> None:
                sender = StreamTransport(
                    "127.0.0.1",
                    receiver.port,
                    tls_context(pki.ca, pki.client_cert, pki.client_key),
                    server_name="localhost",
                )
                sender.connect()
                for start in range(0, len(framed), args.batch):
                    sender.send(framed[start : start + args.batch])
                sender.close()

            timed("peer: raw writes, prebuilt", "TLS, client cert", raw_tls)

            logger = shutil.which("logger")
            if logger:
                bodies = work / "bodies.txt"
                source = AuditSource("bench")
                bodies.write_bytes(b"".join(audit_message_xml(record, source) + b"\n" for record in records))
                command = [
                    logger,
                    "--tcp",
                    "--octet-count",
                    "--rfc5424",
                    "--size",
                    "65536",
                    "--msgid",
                    "IHE+RFC-3881",
                    "-p",
                    "authpriv.notice",
                    "-n",
                    "127.0.0.1",
                    "-P",
                    str(receiver.plain_port),
                    "-f",
                    str(bodies),
                ]
                timed("peer: util-linux logger", "TCP, no TLS", lambda: _ignore(subprocess.run(command, check=True)))
        finally:
            receiver.stop()
            store.dispose()

    table = Table(title=f"ATNA forwarding: {n} audit events to rsyslog 8 on 127.0.0.1 ({socket.gethostname()})")
    table.add_column("sender")
    table.add_column("transport")
    table.add_column("events/s, acknowledged", justify="right")
    table.add_column("events/s, in rsyslog's file", justify="right")
    for label, transport, acked_rate, file_rate in rows:
        table.add_row(label, transport, f"{acked_rate:,.0f}", f"{file_rate:,.0f}" if file_rate else "-")
    console.print(table)
    console.print(
        "acknowledged: every message acknowledged by the receiver's TCP stack (the forwarder's cursor settled); "
        "in file: every line written by rsyslog. logger cannot wait for acknowledgement: its 'acknowledged' is "
        "its exit."
    )


def _ignore(_: object) -> None:
    return None


if __name__ == "__main__":
    main()
