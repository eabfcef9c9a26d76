"""Services started at once check the same folders: each one's write probe is its own.

Seen in CI (test_first_hour): under ``radtrace serve`` the dispatcher's start-up check said "spool: No such file or
directory" and it was not started, because the listener had unlinked the probe file of the same name first.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from radtrace.preflight.directories import writable_directory

pytestmark = pytest.mark.unit


def test_checks_of_one_folder_at_once_all_pass_and_leave_no_probe(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    failed: list[str] = []
    start = threading.Barrier(4)

    def check_often() -> None:
        start.wait()
        for _ in range(300):
            check = writable_directory("spool", folder)
            if check.status != "ok":
                failed.append(check.detail)

    threads = [threading.Thread(target=check_often) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    assert list(folder.iterdir()) == []
