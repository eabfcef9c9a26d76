"""How long an idle ``radtrace worker``, ``radtrace listen`` and ``radtrace serve`` take to stop on SIGTERM (median
of --runs).

Each run starts the command on a fresh data directory (embedded SQLite and broker, the tiny random model on the CPU,
built once with ``radtrace model make-tiny`` unless ``--model``), waits for the line where each Celery worker names
its queues (serve: the GPU worker's and the dispatcher's; listen: the line naming its port) and ``IDLE_S`` more, sends
SIGTERM and times the exit; for serve, each child's exit too. Peer: another checkout's code in the same run
(``PYTHONPATH=<its src>``), e.g. a git worktree of the commit before.

    .venv/bin/python bench/stop.py --runs 5 [--what worker|listen|serve|both|all] [--model DIR] [--env NAME=VALUE ...]

``both`` is worker and serve; ``all`` adds listen.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: How long after its start-up lines a command is left idle before SIGTERM (Celery starts consuming meanwhile).
IDLE_S = 4.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: ``--env NAME=VALUE`` settings added to every run (e.g. RADTRACE_BROKER__URL=redis://127.0.0.1:6379/0).
EXTRA_ENV: dict[str, str] = {}


def _env(data_dir: Path, model: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        RADTRACE_DATA_DIR=str(data_dir),
        RADTRACE_MODEL__PATH=str(model),
        RADTRACE_MODEL__DEVICE="cpu",
        RADTRACE_LISTENER__HOST="127.0.0.1",
        RADTRACE_LISTENER__PORT=str(_free_port()),
        RADTRACE_LISTENER__ALLOWED_CALLERS=json.dumps([{"ae_title": "PACS"}]),
        RADTRACE_LISTENER__MIN_FREE_BYTES="0",
        RADTRACE_API__PORT=str(_free_port()),
    )
    return env | EXTRA_ENV


def _wait_for(log: Path, needle: str, count: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(needle) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"not ready ({needle!r} x{count}):\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.1)


def _children(pid: int) -> dict[int, str]:
    """serve's children: pid → the component (the radtrace subcommand and its queues)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            words = [word.decode() for word in argv if word]
            found[int(entry.name)] = " ".join(words[words.index("--started-by-serve") + 1 :][:2])
    return found


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def one_stop(what: str, model: Path, children: dict[str, list[float]]) -> float:
    """Start ``what`` idle, SIGTERM it once ready; seconds from the signal to its exit (serve: each child's time
    added to ``children``)."""
    with tempfile.TemporaryDirectory(prefix="radtrace-stop-") as tmp:
        data = Path(tmp)
        log = data / "log.txt"
        argv = [sys.executable, "-m", "radtrace", what]
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=_env(data, model),
                                       start_new_session=True)  # fmt: skip
            try:
                # Celery's own "ready." is below radtrace's level for its loggers: the worker's line naming its queues
                # (serve: the worker's and the dispatcher's), then a few seconds for Celery to start consuming.
                ready = {"worker": "(solo pool of 1", "listen": "DICOM listener", "serve": "(threads pool of"}[what]
                _wait_for(log, ready, 1, process)
                if what == "serve":
                    _wait_for(log, "(solo pool of 1", 1, process)
                time.sleep(IDLE_S)
                below = _children(process.pid) if what == "serve" else {}
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                while process.poll() is None and time.monotonic() - started < 120:
                    for pid, name in list(below.items()):
                        if _gone(pid):
                            children.setdefault(name, []).append(time.monotonic() - started)
                            del below[pid]
                    time.sleep(0.01)
                code = process.wait(timeout=1)
                took = time.monotonic() - started
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        if code != 0:
            raise SystemExit(f"{what} exited {code}:\n{log.read_text(errors='replace')[-4000:]}")
        return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--what", choices=["worker", "listen", "serve", "both", "all"], default="both")
    parser.add_argument("--model", type=Path, help="the model directory (default: a tiny random one, built here)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a setting for every run")
    args = parser.parse_args()
    EXTRA_ENV.update(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="radtrace-stop-model-") as tmp:
        model = args.model
        if model is None:
            model = Path(tmp) / "tiny"
            subprocess.run([sys.executable, "-m", "radtrace", "model", "make-tiny", str(model)], check=True,
                           capture_output=True)  # fmt: skip
        print("| command | runs | median s | min s | max s |")
        print("|---|---|---|---|---|")
        chosen = {"both": ["worker", "serve"], "all": ["worker", "listen", "serve"]}.get(args.what, [args.what])
        for what in chosen:
            children: dict[str, list[float]] = {}
            times = [one_stop(what, model, children) for _ in range(args.runs)]
            print(f"| radtrace {what} (idle), SIGTERM to exit | {args.runs} | {statistics.median(times):.2f} | "
                  f"{min(times):.2f} | {max(times):.2f} |", flush=True)  # fmt: skip
            for name, each in sorted(children.items()):
                print(f"| &nbsp; serve's child {name} | {len(each)} | {statistics.median(each):.2f} | "
                      f"{min(each):.2f} | {max(each):.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
