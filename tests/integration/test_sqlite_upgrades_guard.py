"""No radtrace transaction on SQLite reads and then writes without the write lock, along a short representative flow.

On SQLite (WAL) a ``BEGIN DEFERRED`` transaction that has read cannot take the write lock once another connection has
committed since: SQLite answers "database is locked" at once (no busy wait), so under load each such transaction is a
random 503, retry or failure. tests/sqlite_upgrade_support.py records every one; this guard runs the database's
migration, a study read by the worker's pipeline (demo backend) and a radiologist signing in and opening it, and
fails naming the radtrace line of each such write (take the lock up front with ``store.session(..., immediate=True)``
or split the reads from a conditional write). The whole suite can be watched too: ``SQLITE_UPGRADE_REPORT=<file>``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from console_support import PASSWORD, add_user, console_client, console_settings, csrf_of, reported_study, study_path
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from sqlite_upgrade_support import watching

pytestmark = pytest.mark.integration


def test_migrating_reading_a_study_and_opening_it_never_reads_before_taking_the_write_lock(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    try:
        with watching() as offenders:
            upgrade(store)
            settings = console_settings(tmp_path, store)
            study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=7)
            add_user(store, "dr.guard", "radiologist")
            client = console_client(store, settings)
            form = client.get("/console/login")
            signed_in = client.post(
                "/console/login",
                data={"username": "dr.guard", "password": PASSWORD, "csrf_token": csrf_of(form.text)},
                follow_redirects=False,
            )
            assert signed_in.status_code == 303, signed_in.text[-500:]
            page = client.get(study_path(store, study_uid))
            assert page.status_code == 200, page.text[-500:]
            assert client.get(study_path(store, study_uid)).status_code == 200  # the session resumed
    finally:
        store.dispose()

    ours = [f"{o.write_at} ({o.doing}): {o.statement[:60]}" for o in offenders if o.write_at.startswith("radtrace/")]
    assert ours == []
