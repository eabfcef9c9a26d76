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

Peers: as in ``bench/_support.py`` (``--src DIR`` repeated; without it, this checkout's ``src``).

    .venv/bin/python bench/serve_startup.py --runs 5 --src /tmp/wt-base/src --src src
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
from pathlib import Path

from _support import ROOT, interleaved, print_medians, serving

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


def one_run(src: Path, timeout_s: float) -> dict[str, float]:
    """One serve from start to "every child ready"; the seconds of each mark, and cpu_s."""
    seen: dict[str, float] = {}
    done = threading.Event()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()

    def read(stream_name: str, line: str, at: float) -> None:
        for mark, (where, text) in MARKS.items():
            if where == stream_name and mark not in seen and text in line:
                seen[mark] = at - started
        if all(mark in seen for mark in LAST):
            done.set()

    with serving(src, read, prefix="serve-startup-"):
        done.wait(timeout_s)
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
    results = interleaved(sources, args.runs, lambda src: one_run(src, args.timeout_s))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print_medians(f"radtrace serve (demo) start-up, seconds from start, median of {args.runs} (min-max)", "step",
                  results, [*MARKS, "cpu_s"])  # fmt: skip


if __name__ == "__main__":
    main()
