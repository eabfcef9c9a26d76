"""A sequence bomb in a film that is not deflated, sent by dcmtk's storescu to a running ``radtrace listen``.

Before, the listener read such a header with pydicom's dcmread(defer_size=...), which holds an undefined-length
sequence's items and nested values whole: the plain Explicit VR LE NIH film with 200,000 empty items cost it +138 MB
and 17 s per receive, and was accepted (the worker then paid +314 MB and 19 s). Now it is refused 0xC210 with a
comment naming the sequence and its tag path, quarantined and audited (under its study where the Study Instance UID
came before the bad sequence), and the next good film is accepted.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from sqlalchemy import text

from listener_support import audit_payloads, listener_env, rows, start_listener
from radtrace.dicom_deflated import MAX_DEPTH, MAX_ITEMS
from radtrace.dicom_listener.dcmtk import storescu
from radtrace.store.engine import Store
from radtrace.store.models import Instance
from radtrace.testing.decode_abuse import NIH, REAL_FILMS
from radtrace.testing.deflate_abuse import shape_film

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]


def _request_attributes_bomb(path: Path) -> tuple[Path, str]:
    """The NIH film (implicit VR) under new UIDs, its Request Attributes Sequence (after the Study Instance UID)
    holding ``4 * MAX_ITEMS`` empty items."""
    ds = pydicom.dcmread(REAL_FILMS / NIH)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (generate_uid() for _ in range(3))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.RequestAttributesSequence = Sequence([Dataset() for _ in range(4 * MAX_ITEMS)])
    ds.save_as(path, enforce_file_format=True)
    return path, str(ds.StudyInstanceUID)


def test_storescu_sending_plain_sequence_bombs_is_answered_c210_quarantined_audited_and_a_good_film_after_accepted(
    tmp_path: Path, store: Store, database_url: str, listener_port: int
) -> None:
    items = shape_film("items-undefined", 20 * MAX_ITEMS, tmp_path / "items.dcm", fresh_uids=True, syntax="explicit")
    deep = shape_film("deep", 5000, tmp_path / "deep.dcm", fresh_uids=True, syntax="implicit")
    request, study_uid = _request_attributes_bomb(tmp_path / "request.dcm")
    good = shape_film("deep", 3, tmp_path / "good.dcm", fresh_uids=True, syntax="explicit")
    listener = start_listener(listener_env(tmp_path, listener_port, database_url), listener_port)
    try:
        sent = [
            storescu([path], listener_port, options=["-d", proposed])
            for path, proposed in ((items, "-xe"), (deep, "-xi"), (request, "-xi"), (good, "-xe"))
        ]
    finally:
        listener.send_signal(signal.SIGTERM)
        output = listener.communicate(timeout=60)[0]
    assert listener.returncode == 0, output[-2000:]
    statuses = [[line for line in run.stderr.splitlines() if "DIMSE Status" in line] for run in sent]
    assert [s[-1:] for s in statuses] == [
        ["D: DIMSE Status                  : 0xc210: Error: Cannot understand"]
    ] * 3 + [["D: DIMSE Status                  : 0x0000: Success"]], statuses
    reasons = [json.loads(p)["reason"] for p in audit_payloads(store, "instance_quarantined")]
    assert reasons == [
        f"(0009,1012) private: more than {MAX_ITEMS} sequence items in the data set, in (0009,1012)",
        f"(0008,1140) Referenced Image Sequence: sequences nested more than {MAX_DEPTH} deep, in "
        "(0008,1140)>(0008,1140)>...>(0008,1140)>(0008,1140)",
        f"(0040,0275) Request Attributes Sequence: more than {MAX_ITEMS} sequence items in the data set, in "
        "(0040,0275)",
    ], reasons
    for run, reason in zip(sent, reasons, strict=False):  # the C-STORE comment says the same (an LO: 64 characters)
        assert f"LO [{reason[:64].rstrip()}]" in run.stderr, run.stderr[-3000:]
    quarantined = sorted(p.read_text().strip() for p in (tmp_path / "radtrace" / "quarantine").glob("*.reason.txt"))
    assert quarantined == sorted(reasons)
    syntaxes = sorted(  # as they travelled: not deflated, explicit VR (the first) and implicit VR
        str(pydicom.dcmread(p, stop_before_pixels=True, specific_tags=[]).file_meta.TransferSyntaxUID)
        for p in (tmp_path / "radtrace" / "quarantine").glob("*.dcm")
    )
    assert syntaxes == [ImplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRLittleEndian], syntaxes
    with store.engine.connect() as connection:
        studies = connection.execute(
            text("SELECT study_uid FROM audit_events WHERE event_type = 'instance_quarantined' ORDER BY seq")
        ).scalars()
        assert list(studies) == [None, None, study_uid]  # the third's Study Instance UID came before its bomb
    [stored] = rows(store, Instance)
    assert stored.sop_instance_uid == str(pydicom.dcmread(good, stop_before_pixels=True).SOPInstanceUID)
