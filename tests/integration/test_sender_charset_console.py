"""The site's rule for a calling AE's character set (``listener.sender_character_sets``) where a person sees the name
before the drafts: the review console's worklist, and the listener's own audit events (``instance_received``,
``instance_quarantined``).

The drafts of a study from CR_ROOM_3 (the rule: ISO_IR 127 declared, Windows-1256 written) name ``اردو``
(tests/integration/test_sender_charset.py); the worklist read the spooled header with the guesser only and showed
``اردن``, the other real word ISO 8859-6 makes of the same bytes, so the radiologist saw one name on the list and
another in the draft, and the listener's audit said nothing of the rule. The same Fuji CR film, sent by CR_ROOM_3 and
by PACS (no rule), read by the worker's pipeline (demo backend), then the worklist through the console's ASGI app.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, sign_in, study_path
from listener_support import running
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings
from radtrace.dicom_charset import CHARACTER_SET_ASSUMED, CHARACTER_SET_DOUBTFUL, SITE_RULE
from radtrace.dicom_listener.scu import send_files
from radtrace.model.reader import StudyReader
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from reassigned_support import worklist_row
from sender_charset_support import GUESSED, NAME, cp1256_film, queued, rule_settings
from worker_support import wait_until

pytestmark = pytest.mark.integration


def _settings(tmp_path: Path, store: Store, port: int) -> Settings:
    return rule_settings(tmp_path, store, port, "CR_ROOM_3", "PACS", console={"sync_interval_s": 0})


def _sent(tmp_path: Path, store: Store, port: int) -> dict[str, str]:
    """The film sent by CR_ROOM_3 and by PACS under new UIDs, each queued: ``{calling AE: study UID}``."""
    studies = {}
    for calling in ("CR_ROOM_3", "PACS"):
        film = tmp_path / f"{calling}.dcm"
        studies[calling] = cp1256_film(film)
        [sent] = send_files([film], "127.0.0.1", port, calling_ae=calling, called_ae="RADTRACE")
        assert sent.status == 0x0000, sent
    wait_until(lambda: all(queued(store, uid) for uid in studies.values()))
    return studies


def test_the_worklist_shows_the_name_the_site_s_rule_reads_for_its_ae_and_the_old_reading_for_another(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = _settings(tmp_path, store, listener_port)
    add_user(store, "rad.one", "radiologist")
    with running(settings, store):
        studies = _sent(tmp_path, store, listener_port)
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")
    for study_uid in studies.values():
        assert pipeline.process(study_uid, 1).result is Result.REPORTED

    with console_client(store, settings) as client:
        sign_in(client, "rad.one")
        page = client.get("/console/worklist?filter=all")
        assert page.status_code == 200
        ruled = worklist_row(page.text, study_path(store, studies["CR_ROOM_3"]))
        other = worklist_row(page.text, study_path(store, studies["PACS"]))
    assert NAME in ruled  # as the drafts name the patient
    assert GUESSED not in ruled
    assert CHARACTER_SET_ASSUMED not in ruled
    assert CHARACTER_SET_DOUBTFUL not in ruled
    assert GUESSED in other  # no rule for PACS: the guesser's reading, as before
    assert NAME not in other


def test_the_listener_s_instance_received_event_names_the_rule_it_read_the_header_by(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = _settings(tmp_path, store, listener_port)
    with running(settings, store):
        studies = _sent(tmp_path, store, listener_port)
    with store.session() as session:
        events = {
            study_uid: (json.loads(payload), labels)
            for study_uid, payload, labels in session.execute(
                sa.select(AuditEventRow.study_uid, AuditEventRow.payload, AuditEventRow.labels).where(
                    AuditEventRow.event_type == "instance_received"
                )
            )
        }
    payload, labels = events[studies["CR_ROOM_3"]]
    assert payload["character_set"] == {
        "declared": "ISO_IR 127",
        "read_as": "cp1256",
        "because": SITE_RULE,
        "rule": "listener.sender_character_sets[0]",
    }
    assert NAME not in json.dumps(payload, ensure_ascii=False)  # the rule, never the text
    assert not labels  # nothing was guessed: no character-set label for QA's filter
    payload, labels = events[studies["PACS"]]
    assert "character_set" not in payload  # read as declared, unflagged, as before
    assert not labels


def test_a_refused_instance_s_quarantine_event_names_the_rule_too(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = _settings(tmp_path, store, listener_port)
    film = tmp_path / "cut.dcm"
    study_uid = cp1256_film(film)
    ds = pydicom.dcmread(film)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # refused at receive: Pixel Data too short
    ds.save_as(film, enforce_file_format=True)
    assert NAME.encode("cp1256") in film.read_bytes()
    with running(settings, store):
        [sent] = send_files([film], "127.0.0.1", listener_port, calling_ae="CR_ROOM_3", called_ae="RADTRACE")
    assert sent.status & 0xF000 == 0xC000, sent  # refused: the quarantine event is what QA finds
    assert str(sent.note).startswith("(7FE0,0010) Pixel Data"), sent
    with store.session() as session:
        [(payload, labels)] = session.execute(
            sa.select(AuditEventRow.payload, AuditEventRow.labels).where(
                AuditEventRow.event_type == "instance_quarantined", AuditEventRow.study_uid == study_uid
            )
        ).all()
    assert json.loads(payload)["character_set"]["rule"] == "listener.sender_character_sets[0]"
    assert json.loads(payload)["character_set"]["because"] == SITE_RULE
    assert not labels


def test_the_failed_list_names_the_patient_by_the_rule_too(tmp_path: Path, store: Store, listener_port: int) -> None:
    settings = _settings(tmp_path, store, listener_port)
    add_user(store, "rad.one", "radiologist")
    with running(settings, store):
        studies = _sent(tmp_path, store, listener_port)
    finished = {"CR_ROOM_3": utc_now(), "PACS": utc_now() - timedelta(minutes=1)}  # newest failure listed first
    with store.session() as session:
        for calling, study_uid in studies.items():
            revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == study_uid))
            assert revision is not None
            revision.state, revision.reason = RevisionState.FAILED, "model unavailable"
            revision.finished_at = finished[calling]
    with console_client(store, settings) as client:
        sign_in(client, "rad.one")
        page = client.get("/console/worklist?filter=failed")
    assert page.status_code == 200
    ruled, other = re.findall(r'<tr class="row failed".*?</tr>', page.text, re.S)
    assert NAME in ruled
    assert GUESSED not in ruled
    assert GUESSED in other  # no rule for PACS: as before
    assert NAME not in other
