"""`radtrace study show` and `radtrace status` print an accession number a peer sent as text: rich markup in it is
not rendered ('[/bold]' crashed study show with MarkupError; '[link=...]' became a terminal hyperlink) and its
control characters are shown escaped as in the log (ESC and newline reached the terminal raw).
Belongs in tests/integration/ beside test_study_cli.py; fails until cli/studies.py escapes the accession."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from radtrace.config import Settings, load_settings
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision, RevisionState
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from tests_support import radtrace
from worker_support import spool_study

pytestmark = pytest.mark.integration

HOSTILE = ["[/bold]", "[link=http://evil.example]x[/link]", "A1\n2026 INFO forged\x1b[31m"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.data_dir.mkdir(parents=True)
    store = Store.from_url(settings.store_url)
    upgrade(store)
    yield store
    store.dispose()


@pytest.mark.parametrize("accession", HOSTILE)
def test_study_show_and_status_print_a_hostile_accession_as_text(
    settings: Settings, store: Store, accession: str
) -> None:
    [image] = make_study(StudySpec(seed=5), [ImageSpec()])
    with warnings.catch_warnings():  # longer than SH allows, on purpose: as a peer may send it
        warnings.simplefilter("ignore")
        image.AccessionNumber = accession
    study_uid, _ = spool_study(settings, store, [image])
    with store.session() as session:  # a skipped study is listed by radtrace status with its accession
        revision = session.scalar(sa.select(Revision).where(Revision.study.has(study_uid=study_uid)))
        assert revision is not None
        revision.state, revision.reason = RevisionState.SKIPPED, "no frontal chest image"
    env = {"RADTRACE_DATA_DIR": str(settings.data_dir)}
    for command in (("study", "show", study_uid), ("status",)):
        run = radtrace(*command, env=env)
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
        assert "\x1b" not in run.stdout  # no escape sequence from the peer reaches the terminal
        assert "\x1b]8;" not in run.stdout  # no hyperlink made of the accession
        shown = accession.replace("\n", "\\x0a").replace("\x1b", "\\x1b")
        assert shown in run.stdout.replace("\n", "") or shown in run.stdout, (command, run.stdout)
