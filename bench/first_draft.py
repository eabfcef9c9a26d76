"""The first hour's first draft: seconds from a study's "queued" to its "reported" under ``radtrace serve`` (demo
model), for the first study after the start and for a second one, median of --runs.

Each run starts ``radtrace serve`` on a fresh data directory (embedded SQLite and broker, ``model.backend = demo``,
ports picked free, ``model.draft_processes`` as configured: 1), waits until every child is ready, then sends the
README's film with ``radtrace send`` (tests/data/real-cxr), waits for its "reported" line, sends a second film and
waits for that one. The seconds are the log lines' own timestamps (the listener's "queued", the worker's
"reported"), so the settle time and the send are not counted. ``first - second`` is what the first study pays for
being first (before the drafter was warmed at start: the draft process's spawn, imports and first build).

Peers: other checkouts' code in the same run (``--src DIR`` repeated; ``PYTHONPATH=<its src>``, e.g. a git worktree of
the commit before), runs interleaved (A B, B A, ...): on a loaded machine compare columns of one run only.

    .venv/bin/python bench/first_draft.py --runs 3 --src /tmp/wt-base/src --src src
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILMS = (
    ROOT / "tests/data/real-cxr/fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",  # the README's
    ROOT / "tests/data/real-cxr/nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm",
)
READY = ("taking radtrace.gpu", "taking radtrace.dispatch", "Application startup complete", "DICOM listener RADTRACE")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*study (\w+) revision 1 (queued|reported)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_run(src: Path, timeout_s: float) -> dict[str, float]:
    """One serve: the first and the second study's seconds from queued to reported."""
    with tempfile.TemporaryDirectory(prefix="first-draft-") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
        env.update(
            PYTHONPATH=str(src),
            PYTHONUNBUFFERED="1",
            RADTRACE_DATA_DIR=str(Path(tmp) / "var"),
            RADTRACE_MODEL__BACKEND="demo",
            RADTRACE_MODEL__DEMO="true",
            RADTRACE_LISTENER__PORT=str(port),
            RADTRACE_API__PORT=str(free_port()),
            RADTRACE_LISTENER__ALLOWED_CALLERS='[{"ae_title": "RADTRACE-SEND", "host": "127.0.0.1"}]',
        )
        lines: list[str] = []
        process = subprocess.Popen([sys.executable, "-m", "radtrace", "serve"], cwd=tmp, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, errors="replace")  # fmt: skip
        reader = threading.Thread(target=lambda: lines.extend(process.stderr or ()), daemon=True)
        reader.start()

        def wait_for(check: str, count: int = 1) -> None:
            deadline = time.monotonic() + timeout_s
            while sum(check in line for line in list(lines)) < count:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"no {check!r} line; serve's last lines:\n" + "".join(lines[-20:]))
                time.sleep(0.05)

        try:
            for mark in READY:
                wait_for(mark)
            for count, film in enumerate(FILMS, start=1):
                subprocess.run([sys.executable, "-m", "radtrace", "send", "--port", str(port), "--called-ae",
                                "RADTRACE", "--calling-ae", "RADTRACE-SEND", str(film)], env=env,
                               capture_output=True, check=True, timeout=120)  # fmt: skip
                wait_for(" reported (attempt", count)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            reader.join(timeout=5)
        stamps: dict[tuple[str, str], datetime] = {}
        order: list[str] = []
        for line in lines:
            if (found := STAMP.match(line)) is not None:
                when, study, what = found.groups()
                stamps[(study, what)] = datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f")
                if study not in order:
                    order.append(study)
        first, second = ((stamps[(s, "reported")] - stamps[(s, "queued")]).total_seconds() for s in order[:2])
        return {"first": first, "second": second, "first - second": first - second}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--src", action="append", type=Path, help="a checkout's src (repeat for peers)")
    parser.add_argument("--timeout-s", type=float, default=240.0, help="give up on a step after this long")
    args = parser.parse_args()
    sources = [path.resolve() for path in (args.src or [ROOT / "src"])]
    results: dict[str, list[dict[str, float]]] = {str(src): [] for src in sources}
    for run in range(args.runs):
        for src in sources if run % 2 == 0 else list(reversed(sources)):
            figures = one_run(src, args.timeout_s)
            results[str(src)].append(figures)
            print(f"run {run + 1} {src}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), file=sys.stderr)
    print(f"radtrace serve (demo): seconds from queued to reported, median of {args.runs} (min-max)")
    print(f"{'study':<16}" + "".join(f"{Path(src).parent.name + '/src':>28}" for src in results))
    for column in ("first", "second", "first - second"):
        row = f"{column:<16}"
        for runs in results.values():
            values = [figures[column] for figures in runs]
            row += f"{statistics.median(values):>14.2f} ({min(values):.2f}-{max(values):.2f})".rjust(28)
        print(row)


if __name__ == "__main__":
    main()
