"""The listener's audit names a non-ASCII Patient ID and accession as the modality wrote them, so QA's
`radtrace audit query --patient-id` finds the instance: the listener read them with pydicom's default (Latin-1),
so a UTF-8 'MRN-Ø42' sent with no Specific Character Set was audited as 'MRN-Ã\\x9842' (instance_received and a
refusal's instance_quarantined alike), which nobody would type, while the worker and the drafts said 'MRN-Ø42'.

Films: copies of the NIH real film (no (0008,0005)) under new UIDs, the ID's and accession's bytes written raw,
sent with dcmtk's storescu to a real listener; the events read back through the audit query QA runs.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.uid import generate_uid

from listener_support import listener_settings, running
from radtrace.audit.events import Actor
from radtrace.audit.queries import AuditQuery, run_query
from radtrace.dicom_listener.dcmtk import storescu
from radtrace.store.engine import Store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]

NIH = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
QA = Actor(user="qa", host="test")


def _film(target: Path, charset: str | None, patient_id: bytes, accession: bytes, *, truncated: bool = False) -> Path:
    """The NIH film under new UIDs with Patient ID and Accession Number's bytes as given and (0008,0005)
    ``charset`` (None: none); ``truncated``: a third of its Pixel Data, which the listener refuses (0xC000)."""
    ds = pydicom.dcmread(NIH)
    assert "SpecificCharacterSet" not in ds
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if charset is not None:
        ds.add(DataElement(0x00080005, "CS", charset))
    ds.add(DataElement(0x00100020, "LO", patient_id))
    ds.add(DataElement(0x00080050, "SH", accession))
    if truncated:
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's, about a raw value it would not write itself
        ds.save_as(target, enforce_file_format=True)
    assert patient_id in target.read_bytes()
    return target


def _found(store: Store, **where: str) -> list[tuple[str, str | None, str | None]]:
    """What `radtrace audit query` finds with these filters (its own audit_queried rows left out)."""
    page = run_query(store, AuditQuery.model_validate(where), QA)
    return [(e.event_type, e.patient_id, e.accession) for e in page.events if e.event_type != "audit_queried"]


CASES = [
    # (case, (0008,0005), Patient ID's bytes, accession's bytes, the site's assumed set, the ID and accession meant)
    ("utf-8, none declared", None, "MRN-Ø42".encode(), "ACC-Ü1".encode(), None, ("MRN-Ø42", "ACC-Ü1")),
    ("utf-8 under ISO_IR 100", "ISO_IR 100", "MRN-Ø43".encode(), "ACC-Ü2".encode(), None, ("MRN-Ø43", "ACC-Ü2")),
    (
        "cyrillic, none declared, an ISO_IR 144 site",
        None,
        "ЖЛЦ-44".encode("iso8859_5"),
        "ДЯФ-3".encode("iso8859_5"),
        "ISO_IR 144",
        ("ЖЛЦ-44", "ДЯФ-3"),
    ),
]


@pytest.mark.parametrize(
    ("case", "charset", "patient_id", "accession", "assumed", "meant"), CASES, ids=[c[0] for c in CASES]
)
def test_the_audit_names_a_received_and_a_refused_instance_by_the_id_the_modality_wrote(
    case: str,
    charset: str | None,
    patient_id: bytes,
    accession: bytes,
    assumed: str | None,
    meant: tuple[str, str],
    tmp_path: Path,
    store: Store,
    listener_port: int,
) -> None:
    stored = _film(tmp_path / "stored.dcm", charset, patient_id, accession)
    refused = _film(tmp_path / "refused.dcm", charset, patient_id, accession, truncated=True)
    options = {"assumed_character_set": assumed} if assumed else {}
    with running(listener_settings(tmp_path, listener_port, **options), store):
        sent = [storescu([path], listener_port, options=["-v"]) for path in (stored, refused)]
    assert "Received Store Response (Success)" in sent[0].stderr, sent[0].stderr
    assert "Received Store Response (Error: CannotUnderstand)" in sent[1].stderr, sent[1].stderr

    assert _found(store, patient_id=meant[0]) == [
        ("instance_received", *meant),
        ("instance_quarantined", *meant),
    ]
    assert _found(store, accession=meant[1]) == _found(store, patient_id=meant[0])


SENT = [
    # (case, (0008,0005), Patient ID's bytes, the site's assumed set, the event's character_set, its label)
    ("utf-8, none declared", None, "MRN-Ø51".encode(), None, ("", "ISO_IR 192", "utf-8"), "character-set-assumed"),
    (
        "utf-8 under ISO_IR 144",
        "ISO_IR 144",
        "ЖЛЦ-52".encode(),
        None,
        ("ISO_IR 144", "ISO_IR 192", "declared-overridden"),
        "character-set-assumed",
    ),
    (
        "latin-2 that is valid utf-8",
        "ISO_IR 101",
        "KRÍŽ-53".encode("iso8859_2"),
        None,
        ("ISO_IR 101", "ISO_IR 101", "declared-doubtful"),
        "character-set-doubtful",
    ),
    (
        "cyrillic, none declared, an ISO_IR 144 site",
        None,
        "ЖЛЦ-54".encode("iso8859_5"),
        "ISO_IR 144",
        ("", "ISO_IR 144", "assumed"),
        "character-set-assumed",
    ),
    ("declared and in the set", "ISO_IR 144", "ЖЛЦ-55".encode("iso8859_5"), None, None, None),
]
RECEIVED = [
    *SENT,
    (  # a Windows RIS bridge: Ś (8C) is a C1 control in Latin-2; read in Windows-1250 (the refusals read as SENT)
        "windows-1250 under ISO_IR 101",
        "ISO_IR 101",
        "ŚLĄSK-56".encode("cp1250"),
        None,
        ("ISO_IR 101", "cp1250", "windows-code-page"),
        "character-set-assumed",
    ),
]


@pytest.mark.parametrize(
    ("case", "charset", "patient_id", "assumed", "decided", "label"), RECEIVED, ids=[c[0] for c in RECEIVED]
)
def test_the_received_event_records_how_the_text_was_read_and_qa_finds_it_by_its_flag(
    case: str,
    charset: str | None,
    patient_id: bytes,
    assumed: str | None,
    decided: tuple[str, str, str] | None,
    label: str | None,
    tmp_path: Path,
    store: Store,
    listener_port: int,
) -> None:
    """Before, instance_received said nothing of the character set: QA could not find the instances whose text was
    guessed. Now its payload has the terms and the rule (no text of the header's), its label the drafts' flag."""
    film = _film(tmp_path / "film.dcm", charset, patient_id, b"ACC-1")
    options = {"assumed_character_set": assumed} if assumed else {}
    with running(listener_settings(tmp_path, listener_port, **options), store):
        sent = storescu([film], listener_port, options=["-v"])
    assert "Received Store Response (Success)" in sent.stderr, sent.stderr

    page = run_query(store, AuditQuery.model_validate({"event_type": "instance_received"}), QA)
    [received] = page.events
    if decided is None:
        assert "character_set" not in received.payload
        assert received.labels == ()
        return
    assert received.payload["character_set"] == dict(zip(("declared", "read_as", "because"), decided, strict=True))
    assert received.labels == (label,)
    flagged = run_query(store, AuditQuery.model_validate({"event_type": "instance_received", "label": label}), QA)
    assert [event.seq for event in flagged.events] == [received.seq]
    assert patient_id.decode("utf-8", "replace") not in json.dumps(received.payload, ensure_ascii=False)


#: how an instance is refused: after its header was read whole (the 1024 x 1024 film over listener.max_image_pixels,
#: 0xC212), or inside the header read (a third of its Pixel Data, 0xC210), where the refusal's identity is read again
REFUSALS = [("over max_image_pixels", "exceeds listener.max_image_pixels"), ("pixel data cut short", "Pixel Data")]


@pytest.mark.parametrize(("refusal", "reason"), REFUSALS, ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize(
    ("case", "charset", "patient_id", "assumed", "decided", "label"), SENT, ids=[c[0] for c in SENT]
)
def test_a_refused_instance_s_event_records_how_its_header_s_text_was_read(
    case: str,
    charset: str | None,
    patient_id: bytes,
    assumed: str | None,
    decided: tuple[str, str, str] | None,
    label: str | None,
    refusal: str,
    reason: str,
    tmp_path: Path,
    store: Store,
    listener_port: int,
) -> None:
    """Before, instance_quarantined said nothing of the character set its patient ID and accession were read in,
    though the header read had decided it (905dc40 for a refusal after the header read; a refusal inside it, which
    names its instance through headers.refused_identity, still said nothing). Now it records it as instance_received
    does; QA finds the refusal by that flag."""
    truncated = refusal == "pixel data cut short"
    film = _film(tmp_path / "refused.dcm", charset, patient_id, b"ACC-2", truncated=truncated)
    options: dict[str, object] = {} if truncated else {"max_image_pixels": 1_000_000}
    if assumed:
        options["assumed_character_set"] = assumed
    with running(listener_settings(tmp_path, listener_port, **options), store):
        sent = storescu([film], listener_port, options=["-v"])
    assert "Received Store Response (Error" in sent.stderr, sent.stderr

    page = run_query(store, AuditQuery.model_validate({"event_type": "instance_quarantined"}), QA)
    [refused] = page.events
    assert reason in refused.payload["reason"], refused.payload
    if decided is None:
        assert "character_set" not in refused.payload
        assert refused.labels == ()
        return
    assert refused.payload["character_set"] == dict(zip(("declared", "read_as", "because"), decided, strict=True))
    assert refused.labels == (label,)
    flagged = run_query(store, AuditQuery.model_validate({"event_type": "instance_quarantined", "label": label}), QA)
    assert [event.seq for event in flagged.events] == [refused.seq]
    assert patient_id.decode("utf-8", "replace") not in json.dumps(refused.payload, ensure_ascii=False)
