"""``radtrace status`` in an 80-column terminal prints the whole command that queues a skipped or failed study again.

Found by the first-hour walk (the README's quick start, the five real films sent): the canine lateral film was skipped
("no frontal chest image") and its line read ``again: .venv/bin/radtrace study retry 1.2.826.0.1.3680043.8.498.5``,
the 64-character Study UID cut at the terminal's edge (rich crops what it prints to the console width): pasted, it
named no such study.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision, RevisionState, Study
from tests_support import radtrace

pytestmark = pytest.mark.unit

LONG_UID = "1.2.826.0.1.3680043.8.498.54401662452014863547255413372440461885"  # 64 characters, as pydicom makes them


def test_the_retry_command_of_a_skipped_study_is_whole_in_80_columns(tmp_path: Path) -> None:
    store = Store.from_url(load_settings(data_dir=tmp_path).store_url)
    upgrade(store)
    with store.session() as session:
        study = Study(study_uid=LONG_UID, study_key="narrowterminal01", accession="16387a")
        session.add_all([study, Revision(study=study, number=1, state=RevisionState.SKIPPED, attempts=1,
                                         reason="no frontal chest image", finished_at=utc_now())])  # fmt: skip
    store.dispose()
    shown = radtrace("status", "--no-broker", env={"RADTRACE_DATA_DIR": str(tmp_path), "COLUMNS": "80"})
    assert shown.returncode == 0, shown.stderr
    again = [line.strip() for line in shown.stdout.splitlines() if line.strip().startswith("again:")]
    assert again == [f"again: radtrace study retry {LONG_UID}"], shown.stdout
