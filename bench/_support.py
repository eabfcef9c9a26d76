"""What the ``radtrace serve`` benchmarks share (``first_draft.py``, ``serve_startup.py``): a free port, ``radtrace
serve`` (demo model) on a fresh data directory with its output read line by line as it comes, stopped with SIGTERM,
and the peers' runs interleaved (A B, B A, ...) into one table of medians.

Peers are other checkouts' code in the same run (``--src DIR`` repeated; ``PYTHONPATH=<its src>``, e.g. a git
worktree of the commit before); without ``--src``, this checkout's ``src``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]

#: A line of serve's output as it comes: (stream name "stdout" or "stderr", the line, time.perf_counter() when read).
OnLine = Callable[[str, str, float], None]
Figures = dict[str, float]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(src: Path, on_line: OnLine, *, prefix: str, extra_env: dict[str, str] | None = None,
            stdout: bool = True) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], int]]:  # fmt: skip
    """``radtrace serve`` from ``src`` (demo model, embedded SQLite and broker, listener and API on free ports, the
    ``RADTRACE-SEND`` AE admitted from 127.0.0.1) in a fresh temporary directory; each line of its stderr (and stdout,
    unless ``stdout`` is False) goes to ``on_line`` from a reader thread. Yields the process, its environment (for
    ``radtrace send``) and the listener's port; SIGTERM on exit (SIGKILL after 60 s), the readers joined."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
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
            **(extra_env or {}),
        )
        process = subprocess.Popen([sys.executable, "-m", "radtrace", "serve"], cwd=tmp, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, errors="replace")  # fmt: skip

        def read(name: str, stream: IO[str] | None) -> None:
            for line in stream or ():
                on_line(name, line, time.perf_counter())

        streams = [("stdout", process.stdout)] if stdout else []
        readers = [threading.Thread(target=read, args=(name, stream), daemon=True)
                   for name, stream in [*streams, ("stderr", process.stderr)]]  # fmt: skip
        for reader in readers:
            reader.start()
        try:
            yield process, env, port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for reader in readers:
                reader.join(timeout=5)


def interleaved(sources: Sequence[Path], runs: int, one_run: Callable[[Path], Figures], digits: int = 1
                ) -> dict[str, list[Figures]]:  # fmt: skip
    """``one_run`` for each source, ``runs`` times, the order reversed every other run (a machine loaded by others
    weighs on both alike); each run's figures said on stderr as they come."""
    results: dict[str, list[Figures]] = {str(src): [] for src in sources}
    for run in range(runs):
        for src in sources if run % 2 == 0 else list(reversed(sources)):
            figures = one_run(src)
            results[str(src)].append(figures)
            said = ", ".join(f"{k} {v:.{digits}f}" for k, v in figures.items())
            print(f"run {run + 1} {src}: {said}", file=sys.stderr)
    return results


def print_medians(title: str, first_column: str, results: dict[str, list[Figures]], columns: Sequence[str],
                  digits: int = 1) -> None:  # fmt: skip
    """The table: one row per column of figures, one column per source, median (min-max) of its runs."""
    print(title)
    width = max(len(first_column), *(len(column) for column in columns)) + 2
    print(f"{first_column:<{width}}" + "".join(f"{Path(src).parent.name + '/src':>28}" for src in results))
    for column in columns:
        row = f"{column:<{width}}"
        for runs in results.values():
            values = [figures[column] for figures in runs if column in figures]
            if not values:
                row += f"{'-':>28}"
                continue
            spread = f"({min(values):.{digits}f}-{max(values):.{digits}f})"
            row += f"{statistics.median(values):>14.{digits}f} {spread}".rjust(28)
        print(row)
