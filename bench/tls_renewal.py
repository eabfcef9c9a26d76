"""What following TLS files on disk costs: RenewedContext.get() per use, a listener handshake, an expiry scrape.

Three figures, on this checkout's code and, with ``--peer-src``, another checkout's in the same run (a child process
with ``PYTHONPATH=<its src>``, e.g. a git worktree of 977afda, before RenewedContext looked at the files' status):

1. ``RenewedContext.get()`` with the files unchanged (installed an hour ago; their certificate's and CA's ends
   looked at where the checkout reads them), µs per call, best of ``--repeat`` x
   ``--number``: the RIS sender's CA bundle, client certificate and key of a few kB, and with a 215 kB CA bundle
   (the system's, ``/etc/ssl/certs/ca-certificates.crt``, plus the test CA), as a site trusting it has;
2. a server-side TLS handshake over loopback, ms each (``--handshakes``, best of 3): the listener's context loaded once
   (``server_ssl_context``) against the one that looks at its files at each ClientHello (``renewed_server_context``);
3. one Prometheus scrape of the TLS expiry gauges (``radtrace_tls_*_expiry_seconds``, a ``get()`` and the gauges of
   each setting), µs: "-" where the checkout has none.

    .venv/bin/python bench/tls_renewal.py [--number 20000] [--repeat 5] [--handshakes 400] [--peer-src DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The system CA bundle a site may name as ``dispatch.ris.ca_bundle`` (Debian's, about 215 kB).
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOUR_NS = 3_600_000_000_000


def _installed_an_hour_ago(*paths: Path) -> None:
    past = time.time_ns() - HOUR_NS
    for path in paths:
        os.utime(path, ns=(past, past))


def _renewed_class() -> Any:
    try:
        from radtrace.tls_renewal import RenewedContext
    except ImportError:  # before 75417c5 it lived in the RIS sender
        from radtrace.reporting.dispatch.senders import RenewedContext  # type: ignore[attr-defined,no-redef]
    return RenewedContext


def _get_us(folder: Path, *, big: bool, number: int, repeat: int) -> float:
    from radtrace.testing.atna import make_pki
    from radtrace.tls_keys import tls_context

    pki = make_pki(folder)
    if big:
        pki.ca.write_bytes(SYSTEM_BUNDLE.read_bytes() + pki.ca.read_bytes())
    files = (pki.ca, pki.client_cert, pki.client_key)
    _installed_an_hour_ago(*files)
    build = lambda: tls_context(*files, setting="dispatch.ris.")  # noqa: E731
    try:  # its certificate's and CA's ends read too, as senders.py gives them
        renewed = _renewed_class()(build, files, "dispatch.ris", certificate=pki.client_cert, ca_bundle=pki.ca)
    except TypeError:  # before the expiry gauges
        renewed = _renewed_class()(build, files, "dispatch.ris")
    renewed.get()
    return min(timeit.repeat(renewed.get, number=number, repeat=repeat)) / number * 1e6


def _handshake_ms(context: ssl.SSLContext, client: ssl.SSLContext, count: int) -> float:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        for _ in range(count):
            accepted, _ = server.accept()
            with context.wrap_socket(accepted, server_side=True) as wrapped:
                wrapped.recv(1)

    thread = threading.Thread(target=serve)
    thread.start()
    start = time.perf_counter()
    for _ in range(count):
        with client.wrap_socket(socket.create_connection(("127.0.0.1", port))) as connection:
            connection.sendall(b"x")
    thread.join()
    server.close()
    return (time.perf_counter() - start) / count * 1e3


def _handshakes(folder: Path, count: int) -> dict[str, float | None]:
    from radtrace.config import TlsSettings
    from radtrace.dicom_listener import ae
    from radtrace.testing.atna import make_pki

    pki = make_pki(folder)
    _installed_an_hour_ago(pki.server_cert, pki.server_key)
    tls = TlsSettings(enabled=True, certificate=pki.server_cert, private_key=pki.server_key)
    client = ssl.create_default_context(cafile=str(pki.ca))
    client.check_hostname = False  # no SNI sent, as dcmtk's echoscu
    renewing: Callable[[TlsSettings], ssl.SSLContext | None] | None = getattr(ae, "renewed_server_context", None)
    once = min(_handshake_ms(ae.server_ssl_context(tls), client, count) for _ in range(3))  # type: ignore[arg-type]
    if renewing is None:
        return {"once": once, "renewing": None}
    return {"once": once, "renewing": min(_handshake_ms(renewing(tls), client, count) for _ in range(3))}  # type: ignore[arg-type]


def _scrape_us(folder: Path, number: int) -> float | None:
    try:
        from radtrace.tls_renewal import watch_tls_expiry
    except ImportError:
        return None
    from prometheus_client import CollectorRegistry, generate_latest

    from radtrace.testing.atna import make_pki
    from radtrace.tls_keys import tls_context

    pki = make_pki(folder)
    files = (pki.ca, pki.client_cert, pki.client_key)
    _installed_an_hour_ago(*files)
    renewed = _renewed_class()(
        lambda: tls_context(*files, setting="dispatch.ris."), files, "dispatch.ris",
        certificate=pki.client_cert, ca_bundle=pki.ca,
    )  # fmt: skip
    renewed.get()
    registry = CollectorRegistry()
    watch_tls_expiry(registry)
    assert b'radtrace_tls_certificate_expiry_seconds{setting="dispatch.ris"}' in generate_latest(registry)
    return min(timeit.repeat(lambda: generate_latest(registry), number=number, repeat=3)) / number * 1e6


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """This process's code: the figures of the module docstring."""
    # the system bundle holds expired roots (Debian's: E-Tugra, 2023): said once as an error, not a figure here
    logging.getLogger("radtrace").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="radtrace-bench-tls-") as tmp:
        folder = Path(tmp)
        small = _get_us(folder / "small", big=False, number=args.number, repeat=args.repeat)
        big = (
            _get_us(folder / "big", big=True, number=args.number, repeat=args.repeat)
            if SYSTEM_BUNDLE.exists()
            else None
        )
        handshakes = _handshakes(folder / "handshake", args.handshakes)
        scrape = _scrape_us(folder / "scrape", max(1, args.number // 20))
    import radtrace

    return {"src": str(Path(radtrace.__file__).resolve().parents[1]), "get_small_us": small, "get_big_us": big,
            "handshake_once_ms": handshakes["once"], "handshake_renewing_ms": handshakes["renewing"],
            "scrape_us": scrape}  # fmt: skip


def _peer(args: argparse.Namespace) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": str(Path(args.peer_src).resolve())}
    command = [sys.executable, __file__, "--json", "--number", str(args.number), "--repeat", str(args.repeat),
               "--handshakes", str(args.handshakes)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the peer ({args.peer_src}) failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="get() calls per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings, the best kept")
    parser.add_argument("--handshakes", type=int, default=400, help="loopback handshakes per timing (best of 3)")
    parser.add_argument("--peer-src", help="another checkout's src, measured in a child process (PYTHONPATH)")
    parser.add_argument("--json", action="store_true", help="print this checkout's figures as JSON only")
    args = parser.parse_args()
    ours = measure(args)
    if args.json:
        print(json.dumps(ours))
        return
    from rich.console import Console
    from rich.table import Table

    columns = [("this checkout", ours)] + ([("peer", _peer(args))] if args.peer_src else [])
    table = Table(title=f"TLS files followed on disk ({socket.gethostname()}, {os.cpu_count()} CPUs)")
    table.add_column("figure")
    for name, figures in columns:
        table.add_column(f"{name}\n{figures['src']}", justify="right")
    rows = (
        ("get(), 3 files of a few kB (µs)", "get_small_us", 1),
        ("get(), 215 kB CA bundle (µs)", "get_big_us", 1),
        ("handshake, context loaded once (ms)", "handshake_once_ms", 2),
        ("handshake, renewing context (ms)", "handshake_renewing_ms", 2),
        ("scrape of the TLS expiry gauges (µs)", "scrape_us", 1),
    )
    for label, key, digits in rows:
        table.add_row(label, *(_cell(figures[key], digits) for _, figures in columns))
    Console().print(table)


if __name__ == "__main__":
    main()
