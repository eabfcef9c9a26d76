"""A DOS-era modality that writes DOS code page 866 (Cyrillic) and declares ISO_IR 100, named by the site
(``listener.sender_character_sets``): its films' names reach the listener's audit, the drafts and the console's
worklist as written.

DOS pages (cp866, cp720, cp737, cp862) could not be named in a rule: the setting was refused at start (``not
'cp866'``), so such a site's names were guessed: ``ПЕТРОВ^ИВАН`` in cp866 is C1 controls in Latin-1, read as declared
and flagged doubtful. Film: the Fuji CR chest film of tests/data/real-cxr (no (0008,0005)) with ISO_IR 100 declared
and PatientName's bytes in cp866, sent under new UIDs to a running listener by the calling AE the rule names and by
another; the worker's pipeline (demo backend) reads each study to drafts, dropped as files and read back (SR by
pydicom, ORU as text), then the worklist through the console's ASGI app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid

from console_support import add_user, console_client, sign_in, study_path
from listener_support import running
from radtrace.audit.schema import AuditEventRow
from radtrace.config import Settings, load_settings
from radtrace.dicom_charset import CHARACTER_SET_ASSUMED, CHARACTER_SET_DOUBTFUL, SITE_RULE
from radtrace.dicom_listener.scu import send_files
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from reassigned_support import worklist_row
from sender_charset_support import FUJI, queued
from tests_support import as_part10
from worker_support import wait_until

pytestmark = pytest.mark.integration

NAME = "ПЕТРОВ^ИВАН"
RULE = {"ae_title": "DOS_CR", "declared": "ISO_IR 100", "actual": "cp866"}
RECORD = {"declared": "ISO_IR 100", "read_as": "cp866", "because": SITE_RULE}
RECORD |= {"rule": "listener.sender_character_sets[0]"}


def _film(target: Path) -> str:
    """The Fuji film under new UIDs, ISO_IR 100 declared and PatientName's bytes in cp866; its Study Instance UID."""
    ds = pydicom.dcmread(FUJI, force=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.add(DataElement(0x00080005, "CS", "ISO_IR 100"))
    ds.add(DataElement(0x00100010, "PN", NAME.encode("cp866")))
    as_part10(ds, syntax=None).save_as(target, enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def _settings(tmp_path: Path, store: Store, port: int) -> Settings:
    (tmp_path / "drop").mkdir()
    return load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "device": "cpu"},
        listener={"host": "127.0.0.1", "port": port, "settle_seconds": 0.5, "min_free_bytes": 0,
                  "allowed_callers": [{"ae_title": "DOS_CR"}, {"ae_title": "PACS"}],
                  "sender_character_sets": [RULE]},
        dispatch={"file_drop_dir": tmp_path / "drop"},
        console={"sync_interval_s": 0},
    )  # fmt: skip


def _drafts(pipeline: StudyPipeline, store: Store, study_uid: str, drop: Path) -> tuple[pydicom.Dataset, str]:
    """The study read to drafts and dispatched: its SR and ORU as dropped."""
    result = pipeline.process(study_uid, 1)
    assert result.result is Result.REPORTED, result
    for outbox_id in result.outbox_ids:
        pipeline.dispatch(outbox_id)
    with store.session() as session:
        sr_uid = session.scalar(sa.select(Revision.sr_sop_instance_uid).join(Study).where(Study.study_uid == study_uid))
    return pydicom.dcmread(drop / f"{sr_uid}.dcm"), (drop / f"{sr_uid}.hl7").read_text(encoding="utf-8")


def _received(store: Store) -> dict[str, dict[str, Any]]:
    """The payload of each study's instance_received audit event."""
    with store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.study_uid, AuditEventRow.payload).where(
                AuditEventRow.event_type == "instance_received"
            )
        )
        return {study_uid: json.loads(payload) for study_uid, payload in rows}


def test_a_rule_naming_dos_866_for_one_ae_gives_its_audit_drafts_and_worklist_the_written_name(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings = _settings(tmp_path, store, listener_port)
    add_user(store, "rad.one", "radiologist")
    studies = {}
    with running(settings, store):
        for calling in ("DOS_CR", "PACS"):
            film = tmp_path / f"{calling}.dcm"
            studies[calling] = _film(film)
            [sent] = send_files([film], "127.0.0.1", listener_port, calling_ae=calling, called_ae="RADTRACE")
            assert sent.status == 0x0000, sent
        wait_until(lambda: all(queued(store, uid) for uid in studies.values()))
    received = _received(store)
    assert received[studies["DOS_CR"]]["character_set"] == RECORD
    assert "ПЕТРОВ" not in json.dumps(received[studies["DOS_CR"]], ensure_ascii=False)  # the rule, never the text
    assert received[studies["PACS"]]["character_set"]["because"] != SITE_RULE

    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")
    sr, oru = _drafts(pipeline, store, studies["DOS_CR"], tmp_path / "drop")
    assert (sr.PatientName.family_name, sr.PatientName.given_name) == ("ПЕТРОВ", "ИВАН")
    assert "ПЕТРОВ" in oru
    assert CHARACTER_SET_ASSUMED not in oru
    assert CHARACTER_SET_DOUBTFUL not in oru
    sr, oru = _drafts(pipeline, store, studies["PACS"], tmp_path / "drop")
    assert sr.PatientName.family_name != "ПЕТРОВ"  # no rule for PACS: the guess, Latin-1 controls, flagged
    assert CHARACTER_SET_DOUBTFUL in oru

    with console_client(store, settings) as client:
        sign_in(client, "rad.one")
        page = client.get("/console/worklist?filter=all")
        assert page.status_code == 200
        ruled = worklist_row(page.text, study_path(store, studies["DOS_CR"]))
        other = worklist_row(page.text, study_path(store, studies["PACS"]))
    assert "ПЕТРОВ" in ruled
    assert CHARACTER_SET_ASSUMED not in ruled
    assert CHARACTER_SET_DOUBTFUL not in ruled
    assert "ПЕТРОВ" not in other
