"""Where ``radtrace serve`` (demo model) spends its time to "ready": seconds from the command's start to its start-up
table, each child's start, each child's own ready line and serve's "what next" lines, median of --runs.

Each run starts ``radtrace serve`` on a fresh data directory (embedded SQLite and broker, ``model.backend = demo``,
ports picked free) and reads its stdout and stderr as they come, timing (``time.perf_counter``) the first line that
marks each step; once every child has said it is ready it sends SIGTERM. ``cpu_s`` is the user + system CPU of serve
and its children from start to exit (the stop included). Runs of the peers are interleaved (A B, B A, ...), so a
machine loaded by others weighs on both alike: compare columns of one run only. On a shared, loaded machine the
seconds vary by 3x from run to run (35 to 120 s to "what next" on 2 cores with load 10-14); ``cpu_s`` (13-16 s there)
is the steady figure, and what a cut of imports or checks moves.

Where ``PYTHONDONTWRITEBYTECODE=1`` is set and ``src`` holds no ``__pycache__`` (an editable install), every
radtrace process compiles its modules again (about 0.3 s of CPU each): give each peer the same state.

Peers: other checkouts' code in the same run (``--src DIR`` repeated; ``PYTHONPATH=<its src>``, e.g. a git worktree of
the commit before); without ``--src``, this checkout's ``src``.

    .venv/bin/python bench/serve_startup.py --runs 5 --src /tmp/wt-base/src --src src
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Step name -> (stream, the text of the first line that marks it).
MARKS: dict[str, tuple[str, str]] = {
    "checks_table": ("stdout", "radtrace serve: start-up checks"),
    "children_started": ("stderr", "started api (pid"),
    "api_ready": ("stderr", "Application startup complete"),
    "listener_ready": ("stderr", "radtrace.dicom_listener.ae: DICOM listener"),
    "what_next": ("stdout", "radtrace serve: what next"),
    "worker_ready": ("stderr", "taking radtrace.gpu"),
    "dispatcher_ready": ("stderr", "taking radtrace.dispatch"),
}
LAST = ("api_ready", "listener_ready", "what_next", "worker_ready", "dispatcher_ready")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_run(src: Path, timeout_s: float) -> dict[str, float]:
    """One serve from start to "every child ready"; the seconds of each mark, and cpu_s."""
    with tempfile.TemporaryDirectory(prefix="serve-startup-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
        env.update(
            PYTHONPATH=str(src),
            PYTHONUNBUFFERED="1",
            RADTRACE_DATA_DIR=str(Path(tmp) / "var"),
            RADTRACE_MODEL__BACKEND="demo",
            RADTRACE_MODEL__DEMO="true",
            RADTRACE_LISTENER__PORT=str(free_port()),
            RADTRACE_API__PORT=str(free_port()),
            RADTRACE_LISTENER__ALLOWED_CALLERS='[{"ae_title": "RADTRACE-SEND", "host": "127.0.0.1"}]',
        )
        seen: dict[str, float] = {}
        done = threading.Event()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "radtrace", "serve"],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )

        def read(stream_name: str, stream: object) -> None:
            for line in stream:  # type: ignore[attr-defined]
                now = time.perf_counter() - started
                for mark, (where, text) in MARKS.items():
                    if where == stream_name and mark not in seen and text in line:
                        seen[mark] = now
                if all(mark in seen for mark in LAST):
                    done.set()

        readers = [
            threading.Thread(target=read, args=("stdout", process.stdout), daemon=True),
            threading.Thread(target=read, args=("stderr", process.stderr), daemon=True),
        ]
        for reader in readers:
            reader.start()
        done.wait(timeout_s)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for reader in readers:
            reader.join(timeout=5)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        seen["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--src", action="append", type=Path, help="a checkout's src (repeat for peers)")
    parser.add_argument("--timeout-s", type=float, default=240.0, help="give up on a run after this long")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sources = [path.resolve() for path in (args.src or [ROOT / "src"])]
    results: dict[str, list[dict[str, float]]] = {str(src): [] for src in sources}
    for run in range(args.runs):
        order = sources if run % 2 == 0 else list(reversed(sources))
        for src in order:
            figures = one_run(src, args.timeout_s)
            results[str(src)].append(figures)
            print(f"run {run + 1} {src}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    columns = [*MARKS, "cpu_s"]
    print(f"radtrace serve (demo) start-up, seconds from start, median of {args.runs} (min-max)")
    print(f"{'step':<18}" + "".join(f"{Path(src).parent.name + '/src':>28}" for src in results))
    for column in columns:
        row = f"{column:<18}"
        for runs in results.values():
            values = [figures[column] for figures in runs if column in figures]
            if not values:
                row += f"{'-':>28}"
                continue
            row += f"{statistics.median(values):>14.1f} ({min(values):.1f}-{max(values):.1f})".rjust(28)
        print(row)


if __name__ == "__main__":
    main()
