"""Where the listener's memory goes during the upper-layer fuzz: RSS by kind of mapping, and the Python heap traced.

bench/listener_upper_layer_fuzz.py's cases (the systematic ones, in order) against a ``radtrace listen`` process;
at each mark (cases played so far) the process's RSS split by /proc/<pid>/smaps (the main heap, glibc's per-thread
malloc arenas, 8 MiB thread stacks, other anonymous memory, files) and tracemalloc's view of the Python heap, started
after the first store (a hook in the listener's ``sitecustomize``, only for this run; SIGUSR1 starts it, then takes a
snapshot), with the files whose allocations grew most since the first mark.

    .venv/bin/python bench/listener_fuzz_memory.py --out /tmp/fuzz-memory [--marks 10,50,100,200]
    MALLOC_MMAP_THRESHOLD_=131072 .venv/bin/python bench/listener_fuzz_memory.py --out /tmp/fuzz-memory-2

2026-12-06, this machine (2 shared cores), at 7543b3c, ``--marks 10,50,100,200,400,600 --no-tracemalloc``: RSS
151.2 -> 156.2 -> 161.0 -> 163.5 MB at 0/10/50/100 cases, then 164.2, 164.0, 163.8 at 200/400/600: a rise in the
first 100 cases, then flat (as the 10-minute fuzz saw). None of it is a cache growing per peer:

- It is glibc's per-thread malloc arenas (10 -> 12 of them, bounded by 8 per core): their resident memory 1.9 -> 13.3
  MB at 100 cases, 13.7 at 600, freed memory glibc keeps for later threads; the main heap, stacks and files did not
  move. Three quarters of it is large buffers: once a 1 MiB read-ahead buffer (pdu_socket.READ_AHEAD) is freed, glibc
  raises its mmap threshold past 1 MiB, and later read-ahead and PDU body buffers come from (and stay in) the arenas,
  reused by the next connections. With ``MALLOC_MMAP_THRESHOLD_=131072`` the arenas went 0.9 -> 3.5 MB (RSS 150.3 ->
  154.9 -> 156.0 at 100/600 cases), at the cost of an mmap and its page faults for every PDU body over 128 KiB.
- The Python heap (tracemalloc, another run: tracing itself fills the arenas, RSS 151 -> 178 MB at 100 cases): 1.0 MB
  at 10 cases, 2.2 at 50, 3.3 at 100, 2.0 at 200: the buffers and threads of the connections alive at the snapshot
  (1 MiB read-ahead per established one, 64 KiB per one negotiating), and, once, linecache's copies of source files
  (420 KB: traceback.extract_tb in transport._negotiation_failed, and the warnings module formatting pydicom's
  'Invalid value for VR UI'), bounded by the files there are.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from listener_upper_layer_fuzz import systematic
from upper_layer_fuzz_support import Harness, running_harness

#: The listener's hook: SIGUSR1 starts tracemalloc, each later one writes a snapshot (N.snap) to the directory named.
#: Only in the ``radtrace listen`` process (its environment names its port), never in this one.
HOOK = """
import os, signal, threading, tracemalloc
_dir = os.environ.get("LISTENER_MEMORY_SNAPSHOTS")
if _dir and os.environ.get("RADTRACE_LISTENER__PORT"):
    def _snapshot(signum, frame):
        if not tracemalloc.is_tracing():
            tracemalloc.start(10)
            open(os.path.join(_dir, "tracing"), "w").close()
            return
        def write():
            n = len([f for f in os.listdir(_dir) if f.endswith(".snap")])
            tracemalloc.take_snapshot().dump(os.path.join(_dir, f"{n}.part"))
            os.rename(os.path.join(_dir, f"{n}.part"), os.path.join(_dir, f"{n}.snap"))
        threading.Thread(target=write, daemon=True).start()
    signal.signal(signal.SIGUSR1, _snapshot)
"""

#: A glibc arena's reservation (64-bit).
_ARENA_BYTES = 64 << 20


@dataclass
class _Mapping:
    low: int
    high: int
    perm: str
    name: str
    rss: int = 0


def memory_kinds(pid: int) -> dict[str, int]:
    """Resident KiB of the process by kind of mapping, and how many arenas and 8 MiB stacks it has."""
    maps: list[_Mapping] = []
    with open(f"/proc/{pid}/smaps", encoding="ascii", errors="replace") as smaps:
        for line in smaps:
            parts = line.split()
            if parts and "-" in parts[0] and not parts[0].endswith(":"):
                low, high = (int(x, 16) for x in parts[0].split("-"))
                maps.append(_Mapping(low, high, parts[1], parts[5] if len(parts) > 5 else ""))
            elif parts and parts[0] == "Rss:":
                maps[-1].rss = int(parts[1])
    kinds = {"heap": 0, "arenas": 0, "stacks": 0, "other_anonymous": 0, "files": 0, "arena_count": 0, "stack_count": 0}
    for mapping, after in zip(maps, [*maps[1:], None], strict=True):
        if mapping.name == "[heap]":
            kinds["heap"] += mapping.rss
        elif mapping.name.startswith("/"):
            kinds["files"] += mapping.rss
        elif _arena(mapping, after):
            kinds["arenas"] += mapping.rss
            kinds["arena_count"] += 1
        elif not mapping.name and mapping.high - mapping.low == 8 << 20 and mapping.perm.startswith("rw"):
            kinds["stacks"] += mapping.rss
            kinds["stack_count"] += 1
        else:
            kinds["other_anonymous"] += mapping.rss
    return kinds


def _arena(mapping: _Mapping, reserve: _Mapping | None) -> bool:
    """A glibc arena: anonymous, read-write, aligned on 64 MiB, and with its reserve (no access) making 64 MiB."""
    return (
        not mapping.name
        and mapping.low % _ARENA_BYTES == 0
        and mapping.perm.startswith("rw")
        and reserve is not None
        and reserve.low == mapping.high
        and reserve.perm.startswith("---")
        and reserve.high - mapping.low == _ARENA_BYTES
    )


def snapshot(harness: Harness, directory: Path) -> tracemalloc.Snapshot:
    """A tracemalloc snapshot of the listener's Python heap, waited for."""
    before = len(list(directory.glob("*.snap")))
    os.kill(harness.listener.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while len(list(directory.glob("*.snap"))) <= before:
        assert time.monotonic() < deadline, "the listener wrote no snapshot"
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(str(directory / f"{before}.snap"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a new directory: the listener's data, report.json")
    parser.add_argument("--marks", default="10,50,100,200", help="cases played at each measure (comma-separated)")
    parser.add_argument("--no-tracemalloc", action="store_true", help="RSS only (tracing adds to the arenas)")
    args = parser.parse_args()
    marks = sorted(int(mark) for mark in args.marks.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    hook, snapshots = args.out / "hook", args.out / "snapshots"
    hook.mkdir(exist_ok=True)
    snapshots.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK, encoding="utf-8")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    os.environ["LISTENER_MEMORY_SNAPSHOTS"] = str(snapshots)
    rows: list[dict[str, object]] = []
    trace = not args.no_tracemalloc
    with running_harness(args.out) as harness:
        first = None
        if trace:
            os.kill(harness.listener.pid, signal.SIGUSR1)  # tracing from now on: after start-up and the first store
            while not (snapshots / "tracing").exists():
                time.sleep(0.1)
            first = snapshot(harness, snapshots)
        cases = 0
        for case in [None, *systematic()]:
            if case is not None:
                harness.play(case)
                harness.check(case.name)
                cases += 1
            if case is not None and cases not in marks:
                continue
            row: dict[str, object] = {
                "cases": cases,
                "rss_kib": harness.listener.rss_bytes() // 1024,
                **memory_kinds(harness.listener.pid),
            }
            if first is not None:
                taken = first if case is None else snapshot(harness, snapshots)
                grown = taken.compare_to(first, "filename")[:5]
                row["python_traced_kib"] = sum(stat.size for stat in taken.statistics("filename")) // 1024
                row["python_grown_kib"] = {str(s.traceback[0].filename): s.size_diff // 1024 for s in grown}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if cases >= marks[-1]:
                break
    (args.out / "report.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
