"""Run a command in a container, and hold it stopped instead of exiting when the command exits 2.

Usage (compose.yaml's radtrace services, as their entrypoint): ``hold_on_exit_2.py radtrace audit forward``.

systemd stops restarting a radtrace service that exits 2 (``RestartPreventExitStatus=2``): restarting cannot help
(a newer radtrace raised the database's floor, a refused setting, an audit log that does not chain onto what was
forwarded); the line before the exit says which. Docker has no such setting: ``restart: unless-stopped`` restarted
the container after every exit, the same refusal every few seconds, and ``restart: on-failure`` does not start the
container again after a reboot (a forwarder stopped by the daemon's SIGTERM exits 0), so the audit trail stopped
reaching the repository without a word. Here the container stays up under ``unless-stopped``:

* exit 0 or 1 (a crash, the database away): the same exit, and Docker restarts it as before;
* exit 2: one line on stderr saying the container is held, not restarted; the file ``HOLD_ON_EXIT_2_FILE``
  (``/tmp/radtrace-held``, a tmpfs: gone at the next start) holds the same words, so the image's health check
  (healthcheck.py) reports the container ``unhealthy`` with them (``docker compose ps``; ``docker inspect``); it then
  waits for ``docker compose restart`` (once corrected) or ``stop``, and exits 0;
* SIGTERM and SIGINT are passed to the command (``docker compose stop``: it finishes its step and exits).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

HOLD_FILE = Path(os.environ.get("HOLD_ON_EXIT_2_FILE", "/tmp/radtrace-held"))  # noqa: S108 - the container's tmpfs
EXIT_HELD = 2


def main(argv: list[str]) -> int:
    if not argv:
        print("hold_on_exit_2: usage: hold_on_exit_2.py COMMAND [ARGUMENT...]", file=sys.stderr)
        return 2
    HOLD_FILE.unlink(missing_ok=True)
    stopping = threading.Event()
    started: list[subprocess.Popen[bytes]] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if started and started[0].poll() is None:
            started[0].send_signal(signum)

    for signum in (
        signal.SIGTERM,
        signal.SIGINT,
    ):  # before the command starts: PID 1 ignores what it has no handler for
        signal.signal(signum, stop)
    child = subprocess.Popen(argv)  # the container's own command line
    started.append(child)
    if stopping.is_set():  # asked to stop while it started
        child.terminate()
    code = child.wait()
    if code != EXIT_HELD or stopping.is_set():
        return code
    words = (
        f"'{' '.join(argv)}' exited 2: restarting cannot help (the line before this one says why); held, not "
        "restarted: correct it (or upgrade this host's radtrace), then 'docker compose restart' this service"
    )
    HOLD_FILE.write_text(words + "\n")
    print(f"hold_on_exit_2: {words}", file=sys.stderr, flush=True)
    stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
