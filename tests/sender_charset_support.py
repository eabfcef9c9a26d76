"""What the tests of a site's rule for a calling AE's character set (``listener.sender_character_sets``) share:
the real Fuji CR film of tests/data/real-cxr as CR_ROOM_3 writes it (ISO_IR 127 declared, PatientName's bytes in
Windows-1256), the rule, the settings of a demo-model site with an in-process listener, and whether a study is queued.
Used by tests/integration/test_sender_charset.py, test_sender_charset_console.py and
test_console_sender_charset_rows.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import sqlalchemy as sa
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid

from radtrace.config import Settings, load_settings
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from tests_support import as_part10

FUJI = Path(__file__).resolve().parent / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"
NAME = "اردو"  # Windows-1256 bytes that ISO 8859-6 reads as the other word below
GUESSED = "اردن"
RULE = {"ae_title": "CR_ROOM_3", "declared": "ISO_IR 127", "actual": "cp1256"}


def cp1256_film(target: Path) -> str:
    """The Fuji film under new UIDs, ISO_IR 127 declared and PatientName's bytes in Windows-1256, saved as
    ``target``; its Study Instance UID."""
    ds = pydicom.dcmread(FUJI, force=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.add(DataElement(0x00080005, "CS", "ISO_IR 127"))
    ds.add(DataElement(0x00100010, "PN", NAME.encode("cp1256")))
    as_part10(ds, syntax=None).save_as(target, enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def rule_settings(
    tmp_path: Path, store: Store, port: int, *callers: str, rule: bool = True, **sections: dict[str, Any]
) -> Settings:
    """A demo-model site on ``store`` whose listener on 127.0.0.1:``port`` admits ``callers``, with ``RULE`` as its
    one ``listener.sender_character_sets`` entry (none where not ``rule``); ``sections`` added."""
    return load_settings(
        data_dir=tmp_path / "radtrace",
        store={"url": store.engine.url.render_as_string(hide_password=False)},
        model={"backend": "demo", "demo": True, "device": "cpu"},
        listener={"host": "127.0.0.1", "port": port, "settle_seconds": 0.5, "min_free_bytes": 0,
                  "allowed_callers": [{"ae_title": calling} for calling in callers],
                  "sender_character_sets": [RULE] if rule else []},
        **sections,
    )  # fmt: skip


def queued(store: Store, study_uid: str) -> bool:
    """Whether the study's revision is queued."""
    with store.session() as session:
        state = session.scalar(sa.select(Revision.state).join(Study).where(Study.study_uid == study_uid))
    return state is RevisionState.QUEUED
