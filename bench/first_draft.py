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

``--trace``: where the first study's extra time goes. Every process of serve runs with ``PYTHONPROFILEIMPORTTIME=1``;
the modules imported while a study is between its "queued" and its "reported" line (in any process: the worker, its
draft process, the listener) are summed per study (``imports first``, ``imports second``: seconds of their outermost
imports' cumulative time) and the largest of the first study's are listed on stderr. Import timing slows every
import, so a traced run's other figures are not comparable with an untraced one's.

    .venv/bin/python bench/first_draft.py --runs 3 --src /tmp/wt-base/src --src src
    .venv/bin/python bench/first_draft.py --runs 1 --trace
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from _support import ROOT, interleaved, print_medians, serving

FILMS = (
    ROOT / "tests/data/real-cxr/fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",  # the README's
    ROOT / "tests/data/real-cxr/nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm",
)
READY = ("taking radtrace.gpu", "taking radtrace.dispatch", "Application startup complete", "DICOM listener RADTRACE")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*study (\w+) revision 1 (queued|reported)")
#: A line of ``-X importtime``: self and cumulative microseconds, the module indented by its depth.
IMPORT = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def one_run(src: Path, timeout_s: float, trace: bool = False) -> dict[str, float]:
    """One serve: the first and the second study's seconds from queued to reported (and, traced, the seconds of the
    imports each study's time held)."""
    lines: list[str] = []
    extra = {"PYTHONPROFILEIMPORTTIME": "1"} if trace else {}
    with serving(src, lambda _name, line, _at: lines.append(line), prefix="first-draft-", extra_env=extra,
                 stdout=False) as (process, env, port):  # fmt: skip

        def wait_for(check: str, count: int = 1) -> None:
            deadline = time.monotonic() + timeout_s
            while sum(check in line for line in list(lines)) < count:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"no {check!r} line; serve's last lines:\n" + "".join(lines[-20:]))
                time.sleep(0.05)

        for mark in READY:
            wait_for(mark)
        for count, film in enumerate(FILMS, start=1):
            subprocess.run([sys.executable, "-m", "radtrace", "send", "--port", str(port), "--called-ae",
                            "RADTRACE", "--calling-ae", "RADTRACE-SEND", str(film)], env=env,
                           capture_output=True, check=True, timeout=120)  # fmt: skip
            wait_for(" reported (attempt", count)
    order, seconds, imports = read_lines(lines)
    first, second = (seconds[study] for study in order[:2])
    figures = {"first": first, "second": second, "first - second": first - second}
    if trace:
        for name, study in (("imports first", order[0]), ("imports second", order[1])):
            figures[name] = sum(seconds for seconds, _ in imports.get(study, []))
        largest = sorted(imports.get(order[0], []), reverse=True)[:12]
        print("first study's largest imports (cumulative s): " + ", ".join(f"{module} {seconds:.3f}"
              for seconds, module in largest), file=sys.stderr)  # fmt: skip
    return figures


def read_lines(lines: list[str]) -> tuple[list[str], dict[str, float], dict[str, list[tuple[float, str]]]]:
    """From serve's stderr: the studies in the order they were queued, each one's seconds from "queued" to
    "reported" (by the lines' own timestamps), and the outermost imports (seconds, module) made while it was between
    the two (``-X importtime`` lines; a module's nested imports come before it, indented deeper)."""
    stamps: dict[tuple[str, str], datetime] = {}
    order: list[str] = []
    seen: dict[str, list[tuple[float, int, str]]] = {}
    running: str | None = None
    for line in lines:
        if (found := STAMP.match(line)) is not None:
            when, study, what = found.groups()
            stamps[(study, what)] = datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f")
            if study not in order:
                order.append(study)
            running = study if what == "queued" else None
        elif running is not None and (imported := IMPORT.match(line)) is not None:
            seen.setdefault(running, []).append((int(imported[2]) / 1e6, len(imported[3]), imported[4]))
    seconds = {s: (stamps[(s, "reported")] - stamps[(s, "queued")]).total_seconds() for s in order
               if (s, "reported") in stamps}  # fmt: skip
    imports = {}
    for study, found_imports in seen.items():
        top = min(depth for _, depth, _ in found_imports)
        imports[study] = [(cumulative, module) for cumulative, depth, module in found_imports if depth == top]
    return order, seconds, imports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--src", action="append", type=Path, help="a checkout's src (repeat for peers)")
    parser.add_argument("--timeout-s", type=float, default=240.0, help="give up on a step after this long")
    parser.add_argument("--trace", action="store_true", help="sum the imports each study's time held (see above)")
    args = parser.parse_args()
    sources = [path.resolve() for path in (args.src or [ROOT / "src"])]
    results = interleaved(sources, args.runs, lambda src: one_run(src, args.timeout_s, args.trace), digits=2)
    columns = ["first", "second", "first - second", *(["imports first", "imports second"] if args.trace else [])]
    print_medians(f"radtrace serve (demo): seconds from queued to reported, median of {args.runs} (min-max)",
                  "study", results, columns, digits=2)  # fmt: skip


if __name__ == "__main__":
    main()
