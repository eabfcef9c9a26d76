"""A ``listener.sender_character_sets`` rule set after a study's worklist row was added, and the study page's
pictures of a film from a ruled sender.

A worklist row keeps the patient's name as read when it was added: a site that found CR_ROOM_3 writes Windows-1256
under an ISO_IR 127 declaration and set the rule had its drafts name ``اردو`` while the rows already on the list
kept ``اردن`` (the guesser's reading) until the projection was rebuilt by hand; now each row read under other
character-set settings is read again. And the console read the spooled files for its pictures without the calling
AE (console/images.py), so not with the rule the worker had read them by. The same real Fuji CR film as
test_sender_charset_console, sent by CR_ROOM_3 to the listener, read by the worker's pipeline (demo backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, sign_in, study_path
from listener_support import running
from radtrace.config import Settings
from radtrace.console import images, worklist
from radtrace.console.schema import ReviewItem
from radtrace.dicom_charset import SITE_RULE
from radtrace.dicom_listener.scu import send_files
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from reassigned_support import worklist_row
from sender_charset_support import GUESSED, NAME, cp1256_film, queued, rule_settings
from worker_support import wait_until

pytestmark = pytest.mark.integration


def _settings(tmp_path: Path, store: Store, port: int, *, rule: bool) -> Settings:
    return rule_settings(tmp_path, store, port, "CR_ROOM_3", rule=rule, console={"sync_interval_s": 0})


def _reported(tmp_path: Path, store: Store, settings: Settings, port: int, count: int) -> list[str]:
    """``count`` copies of the film sent by CR_ROOM_3 under new UIDs and read by the worker's pipeline."""
    studies = []
    with running(settings, store):
        for index in range(count):
            film = tmp_path / f"film{index}.dcm"
            studies.append(cp1256_film(film))
            [sent] = send_files([film], "127.0.0.1", port, calling_ae="CR_ROOM_3", called_ae="RADTRACE")
            assert sent.status == 0x0000, sent
        wait_until(lambda: all(queued(store, uid) for uid in studies))
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")
    for study_uid in studies:
        assert pipeline.process(study_uid, 1).result is Result.REPORTED
    return studies


def _rows(store: Store, settings: Settings, studies: list[str]) -> list[str]:
    with console_client(store, settings) as client:
        sign_in(client, "rad.one")
        page = client.get("/console/worklist?filter=all")
        assert page.status_code == 200
        return [worklist_row(page.text, study_path(store, study_uid)) for study_uid in studies]


def test_a_rule_set_after_the_rows_were_added_reaches_them_and_a_purged_study_keeps_its_name(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    before = _settings(tmp_path, store, listener_port, rule=False)
    add_user(store, "rad.one", "radiologist")
    studies = _reported(tmp_path, store, before, listener_port, 2)
    for row in _rows(store, before, studies):  # no rule yet: the guesser's reading, on the list as in the drafts
        assert GUESSED in row
        assert NAME not in row
    with store.session() as session:  # the second study's spooled film purged by the retention job
        [purged] = session.scalars(
            sa.select(Instance.path).join(Study, Instance.study_id == Study.id).where(Study.study_uid == studies[1])
        ).all()
        # and its row as the upgrade to migration 0020 leaves one added before it (read under unknown settings)
        session.execute(sa.update(ReviewItem).where(ReviewItem.study_uid == studies[1]).values(names_read_as=None))
    (before.spool_dir / purged).unlink()

    after = _settings(tmp_path, store, listener_port, rule=True)  # the site sets the rule; the console restarts
    ruled, kept = _rows(store, after, studies)
    assert NAME in ruled  # read again by the rule, as the drafts now name the patient
    assert GUESSED not in ruled
    assert GUESSED in kept  # its film is gone: the name read before is kept, never blanked
    with store.session() as session:  # every row now recorded as read under the settings in force
        assert set(session.scalars(sa.select(ReviewItem.names_read_as))) == {worklist.names_reading(after.listener)}


def test_the_study_page_s_pictures_read_a_ruled_sender_s_film_by_its_rule(
    tmp_path: Path, store: Store, listener_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, store, listener_port, rule=True)
    [study_uid] = _reported(tmp_path, store, settings, listener_port, 1)
    read: list[tuple[str | None, Any]] = []
    as_received = images.spooled_as_received

    def spy(path: Path, sha256: str, listener: Any, calling_ae: str | None = None) -> Any:
        image = as_received(path, sha256, listener, calling_ae)
        read.append((calling_ae, image.character_set))
        return image

    monkeypatch.setattr(images, "spooled_as_received", spy)
    with store.session() as session:
        sop = session.scalar(
            sa.select(Instance.sop_instance_uid).join(Study, Instance.study_id == Study.id)
            .where(Study.study_uid == study_uid)
        )  # fmt: skip
    assert sop is not None
    png = images.render_image(store, settings, study_uid, 1, sop, "original")
    assert png.startswith(b"\x89PNG")
    [(calling, choice)] = read
    assert calling == "CR_ROOM_3"  # the instance's row, as the worker's pipeline reads it
    assert choice is not None
    assert (choice.because, choice.read_as, choice.rule) == (SITE_RULE, "cp1256", "listener.sender_character_sets[0]")
