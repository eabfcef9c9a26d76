"""A modality that declares ISO_IR 127 and writes Windows-1256, named by the site (``listener.sender_character_sets``):
its films' names reach the drafts as written, not as the guesser's other real word.

``اردو`` in Windows-1256 reads as ``اردن`` in ISO 8859-6: both are words, so the guesser reads it as declared,
unflagged, and the drafts carried the wrong name. Film: the Fuji CR chest film of tests/data/real-cxr (no (0008,0005))
with ISO_IR 127 declared and PatientName's bytes in Windows-1256, sent under new UIDs to a running listener by the
calling AE the rule names and by another; the worker's pipeline (demo backend) reads each study to drafts, dropped as
files and read back (SR by pydicom, ORU and FHIR as text). The rule's study: the right name, no flag, the rule named
in the inference_completed audit record; the other AE's: what it read before.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa

from listener_support import running
from radtrace.config import Settings
from radtrace.dicom_charset import CHARACTER_SET_ASSUMED, CHARACTER_SET_DOUBTFUL, SITE_RULE
from radtrace.dicom_listener.scu import send_files
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from sender_charset_support import FUJI, GUESSED, NAME, cp1256_film, queued, rule_settings
from worker_support import audit_events, wait_until

pytestmark = pytest.mark.integration


def _film(target: Path) -> str:
    assert "SpecificCharacterSet" not in pydicom.dcmread(FUJI, force=True)
    study_uid = cp1256_film(target)
    assert NAME.encode("cp1256") in target.read_bytes()
    return study_uid


def _settings(tmp_path: Path, store: Store, port: int) -> Settings:
    (tmp_path / "drop").mkdir()
    return rule_settings(tmp_path, store, port, "CR_ROOM_3", "PACS", dispatch={"file_drop_dir": tmp_path / "drop"})


def _drafts(pipeline: StudyPipeline, store: Store, study_uid: str, drop: Path) -> tuple[pydicom.Dataset, str, str]:
    """The study read to drafts and dispatched: its SR, ORU and FHIR Bundle as dropped."""
    result = pipeline.process(study_uid, 1)
    assert result.result is Result.REPORTED, result
    for outbox_id in result.outbox_ids:
        pipeline.dispatch(outbox_id)
    with store.session() as session:
        sr_uid = session.scalar(sa.select(Revision.sr_sop_instance_uid).join(Study).where(Study.study_uid == study_uid))
    return (
        pydicom.dcmread(drop / f"{sr_uid}.dcm"),
        (drop / f"{sr_uid}.hl7").read_text(encoding="utf-8"),
        json.dumps(json.loads((drop / f"{sr_uid}.fhir.json").read_text(encoding="utf-8")), ensure_ascii=False),
    )


def _header_record(store: Store, nth: int) -> dict[str, object]:
    """The header step of the frontal image's preparation in the ``nth`` inference_completed audit event."""
    completed = [payload for kind, _, payload in audit_events(store) if kind == "inference_completed"][nth]
    steps = completed["reading"]["images"][0]["preparation"]
    return next((step for step in steps if step.get("step") == "header"), {})


def test_the_site_s_rule_for_a_calling_ae_gives_drafts_the_written_name_and_another_ae_reads_as_before(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = _settings(tmp_path, store, listener_port)
    ruled, other = tmp_path / "ruled.dcm", tmp_path / "other.dcm"
    studies = {"CR_ROOM_3": _film(ruled), "PACS": _film(other)}
    with running(settings, store):
        for calling, film in (("CR_ROOM_3", ruled), ("PACS", other)):
            [sent] = send_files([film], "127.0.0.1", listener_port, calling_ae=calling, called_ae="RADTRACE")
            assert sent.status == 0x0000, sent
        wait_until(lambda: all(queued(store, uid) for uid in studies.values()))
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")

    sr, oru, fhir = _drafts(pipeline, store, studies["CR_ROOM_3"], tmp_path / "drop")
    assert sr.PatientName.family_name == NAME
    assert NAME in oru
    assert GUESSED not in oru
    assert NAME in fhir
    assert GUESSED not in fhir
    assert CHARACTER_SET_ASSUMED not in oru + fhir
    assert CHARACTER_SET_DOUBTFUL not in oru + fhir
    assert _header_record(store, 0)["character_set"] == {
        "declared": "ISO_IR 127",
        "read_as": "cp1256",
        "because": SITE_RULE,
        "rule": "listener.sender_character_sets[0]",
    }

    sr, oru, fhir = _drafts(pipeline, store, studies["PACS"], tmp_path / "drop")
    assert sr.PatientName.family_name == GUESSED  # the guesser's reading, as before the setting
    assert GUESSED in oru
    assert NAME not in oru
    assert GUESSED in fhir
    assert "character_set" not in _header_record(store, 1)
