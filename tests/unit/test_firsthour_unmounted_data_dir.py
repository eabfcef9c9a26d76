"""A data directory made together with folders above it is said at start: that is what a shared file system that is
not mounted looks like (``RADTRACE_DATA_DIR=/mnt/nas/radtrace`` with the NFS mount missing).

Found by the first-hour walk: run as root (the usual container user) the start-up checks made the missing folders
and said "data directory ok"; the host then spooled its studies onto its local disk, which the workers on the other
hosts never see.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.preflight import run_preflight

pytestmark = pytest.mark.unit


def test_a_data_directory_made_with_its_parent_folders_asks_whether_a_mount_is_missing(tmp_path: Path) -> None:
    nas = tmp_path / "mnt" / "nas"
    settings = load_settings(data_dir=nas / "radtrace")
    first = {check.name: check for check in run_preflight(settings, service="api")}["data directory"]
    assert first.status == "warning"
    assert first.detail.startswith(f"{nas / 'radtrace'} was made, and {tmp_path / 'mnt'} above it, on the file system "
                                   "mounted at /")  # fmt: skip
    assert (
        "if a file system (NFS, a volume) should be mounted there, it is not; mount it and start again" in first.detail
    )
    again = {check.name: check for check in run_preflight(settings, service="api")}["data directory"]
    assert (again.status, again.detail) == ("ok", str(nas / "radtrace"))


def test_a_new_data_directory_in_a_folder_that_is_there_is_no_news(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var")  # make run's ./var; the units' /var/lib/radtrace
    checks = {check.name: check for check in run_preflight(settings, service="api")}
    assert (checks["data directory"].status, checks["data directory"].detail) == ("ok", str(tmp_path / "var"))
