"""Fixture readings and source studies for the reporting tests (not fixtures themselves: plain builders)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from radtrace.model.reading import (
    REASONING_SECTIONS,
    BoundingBox,
    Finding,
    FindingStatus,
    ModelIdentity,
    Reading,
    ReadingFlag,
    ReasoningStep,
    SourceImage,
    Timings,
    TokenCounts,
)
from radtrace.testing.studies import ImageSpec, StudySpec, make_study

if TYPE_CHECKING:
    from radtrace.config import DispatchSettings
    from radtrace.reporting.dispatch.outbox import Outbox, ReportFiles
    from radtrace.store.engine import Store

ROWS, COLUMNS = 96, 80
STUDY = StudySpec(seed=5)

IDENTITY = ModelIdentity(
    profile="nv-reason-cxr",
    profile_version="1",
    backend="transformers",
    model_name="NV-Reason-CXR-3B",
    source="nvidia/NV-Reason-CXR-3B",
    revision="abc123",
    weights_sha256="0" * 64,
    dtype="bfloat16",
    device="cuda:0",
    prompt="Find abnormalities and support devices.",
    generation={"max_new_tokens": 2048, "do_sample": False},
)

REASONING = (
    ReasoningStep(section="image quality", text="Frontal PA radiograph, adequate inspiration."),
    ReasoningStep(section="devices", text="An endotracheal tube terminates 4 cm above the carina. A right PICC line."),
    ReasoningStep(section="lungs", text="Patchy opacity at the right base, consistent with atelectasis."),
    ReasoningStep(section="pleura", text="Small right pleural effusion. No pneumothorax."),
    ReasoningStep(section="heart", text="Heart size is normal."),
    ReasoningStep(section="summary", text="Right basal atelectasis and small effusion; lines and tubes as described."),
)


def source_study(study: StudySpec = STUDY) -> list[Dataset]:
    """A small PA + lateral study (pixel data included, small images)."""
    return make_study(
        study, [ImageSpec(view="PA", rows=ROWS, columns=COLUMNS), ImageSpec(view="LL", rows=ROWS, columns=COLUMNS)]
    )


def shown(
    datasets: Sequence[Dataset], *, view: str = "PA", view_flags: tuple[str, ...] = ()
) -> tuple[SourceImage, ...]:
    """The first dataset as the image the model was shown."""
    ds = datasets[0]
    return (
        SourceImage(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            sha256="1" * 64,
            view=view,
            view_flags=view_flags,
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            model_rows=476,
            model_columns=392,
        ),
    )


def reading(
    datasets: Sequence[Dataset],
    *,
    findings: Sequence[Finding] | None = None,
    reasoning: Sequence[ReasoningStep] = REASONING,
    impression: str | None = "Right basal atelectasis and a small right pleural effusion.",
    flags: frozenset[ReadingFlag] = frozenset(),
    raw_text: str | None = None,
    identity: ModelIdentity = IDENTITY,
    images: tuple[SourceImage, ...] | None = None,
) -> Reading:
    """A reading of ``datasets`` (shown: the first image); the default is a typical abnormal one with a box."""
    sop = str(datasets[0].SOPInstanceUID)
    if findings is None:
        findings = (
            Finding(
                label="Atelectasis",
                status=FindingStatus.PRESENT,
                confidence=0.82,
                boxes=(BoundingBox(sop_instance_uid=sop, x_min=10.5, y_min=50.0, x_max=38.0, y_max=80.25),),
                evidence="Patchy opacity at the right base, consistent with atelectasis.",
            ),
            Finding(label="Pleural Effusion", status=FindingStatus.PRESENT, confidence=0.61),
            Finding(label="Pneumothorax", status=FindingStatus.ABSENT),
            Finding(label="Cardiomegaly", status=FindingStatus.UNCERTAIN, confidence=0.3),
            Finding(label="Support Devices", status=FindingStatus.PRESENT),
        )
    text = "\n\n".join(step.text for step in reasoning)
    return Reading(
        reasoning=tuple(reasoning),
        findings=tuple(findings),
        answer_labels=tuple(f.label for f in findings if f.status is FindingStatus.PRESENT),
        impression=impression,
        raw_text=raw_text if raw_text is not None else f"<think>{text}</think><answer>Atelectasis</answer>",
        flags=flags,
        images=images if images is not None else shown(datasets),
        identity=identity,
        tokens=TokenCounts(prompt=20, image=289, generated=400),
        timings=Timings(prepare_s=0.1, generate_s=2.0, parse_s=0.01),
    )


def long_reasoning(min_chars: int = 20_000) -> tuple[ReasoningStep, ...]:
    """A trace of at least ``min_chars`` characters over every section, with HL7 delimiters in it."""
    steps = []
    sentence = "Observation {n}: the costophrenic angle is sharp | no ^ effusion & no ~ thickening \\ noted. "
    per_section = min_chars // len(REASONING_SECTIONS) + 200
    for section in REASONING_SECTIONS:
        text, n = "", 0
        while len(text) < per_section:
            n += 1
            text += sentence.format(n=n)
        steps.append(ReasoningStep(section=section, text=text.strip()))  # type: ignore[arg-type]
    return tuple(steps)


NON_ASCII_IMPRESSION = "Épanchement pleural droit — 胸水 ≥ 2 cm; Ödem möglich."


def sr_cases() -> dict[str, tuple[Reading, list[Dataset]]]:
    """Every kind of reading an SR must carry: name → (reading, source datasets)."""
    from radtrace.reporting.codes import FINDING_CODES

    ds = source_study()
    pa, lateral = (str(d.SOPInstanceUID) for d in ds)
    latin1 = [copy.deepcopy(d) for d in ds]  # Dataset.copy() would share the elements with the other cases
    for d in latin1:
        d.SpecificCharacterSet = "ISO_IR 100"  # the source's charset must not leak into the SR (FINDINGS.md)
    many = [
        Finding(label=entry.label, status=list(FindingStatus)[n % 3], confidence=(n % 10) / 10 or None)
        for n, entry in enumerate(FINDING_CODES.values())
    ] + [Finding(label="Pneumoperitoneum (free air)", status=FindingStatus.UNCERTAIN)]
    boxes = (
        BoundingBox(sop_instance_uid=pa, x_min=0.0, y_min=0.0, x_max=20.0, y_max=30.0),
        BoundingBox(sop_instance_uid=pa, x_min=40.0, y_min=60.5, x_max=79.0, y_max=95.0),
        BoundingBox(sop_instance_uid=lateral, x_min=5.0, y_min=5.0, x_max=6.0, y_max=6.0),
    )
    return {
        "normal": (
            reading(
                ds,
                findings=[Finding(label="No Finding", status=FindingStatus.PRESENT, confidence=0.9)],
                impression="No acute cardiopulmonary abnormality.",
            ),
            ds,
        ),
        "typical": (reading(ds), ds),
        "many-findings": (reading(ds, findings=many), ds),
        "refused": (
            reading(
                ds,
                findings=[],
                reasoning=(),
                impression=None,
                flags=frozenset({ReadingFlag.REFUSED}),
                raw_text="Please provide a frontal chest X-ray image.",
            ),
            ds,
        ),
        "truncated": (
            reading(
                ds,
                findings=[Finding(label="Lung Opacity", status=FindingStatus.UNCERTAIN)],
                reasoning=REASONING[:3],
                impression=None,
                flags=frozenset({ReadingFlag.TRUNCATED}),
            ),
            ds,
        ),
        "boxes": (
            reading(ds, findings=[Finding(label="Lung Lesion", status=FindingStatus.PRESENT, boxes=boxes)]),
            ds,
        ),
        "non-ascii": (
            reading(
                latin1,
                reasoning=(ReasoningStep(section="pleura", text="Erguss rechts, Zwerchfell glatt — 右側胸水."),),
                impression=NON_ASCII_IMPRESSION,
            ),
            latin1,
        ),
        "long-trace": (reading(ds, reasoning=long_reasoning()), ds),
        "ap-portable": (reading(ds, images=shown(ds, view="AP", view_flags=("ap", "portable"))), ds),
    }


REAL_FILMS = Path(__file__).resolve().parent / "data" / "real-cxr"
REAL_FILM_SHA256 = {  # first 16 hex characters, as tests/data/real-cxr/README.md lists them
    "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm": "744d01372fdda4e2",
    "nema-rg1-cr-chest-pa-mono1-jpegls-near-lossless.dcm": "e04e2bdd3b433d7f",
    "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm": "2b2ee2ae9fdbcc13",
    "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm": "ee3da313f01d2b50",
    "canine-dx-thorax-lateral-mono1-small.dcm": "602dbefe9f5d17d8",
}


def real_film(name: str) -> Dataset:
    """One of the real films, header only (the fuji film has no File Meta: read with ``force``)."""
    return dcmread(REAL_FILMS / name, force=True, stop_before_pixels=True)


# Every control character (C0, DEL, C1), the HL7 delimiters, ESC, lone surrogates, the private-use stand-in the
# HL7 builder uses for hex escapes, an escape-looking sequence, and a few non-Latin characters.
SPECIAL_CHARACTERS = (
    [chr(code) for code in range(0x20)]
    + [chr(code) for code in range(0x7F, 0xA0)]
    + list("\\|^&~=")
    + ["\ud800", "\udbff", "\udc00", "\udfff", "\ue000", "\\X0D\\", "\\E\\", "Ü", "胸", "😀", " "]
)


def hostile_header_study() -> list[Dataset]:
    """The PA + lateral study with the header faults of issue 13 on the PA (the image the model is shown):
    two Patient IDs, two Patient Names, an ISO Study Date, a ``:`` Study Time, no Series Instance UID, Study ID
    or birth date, an over-long Accession Number, Issuer and Institution Name, a Frame of Reference UID with a
    leading-zero component, no Imager Pixel Spacing or Patient Orientation."""
    datasets = source_study()
    pa = datasets[0]
    with warnings.catch_warnings():  # pydicom warns about each invalid value it is given: that is the point
        warnings.simplefilter("ignore")
        pa.PatientID = MultiValue(str, ["ID-0001", "ID|0002^x"])
        pa.PatientName = MultiValue(PersonName, ["Doe^John", "Smith^Jane^^Dr"])
        pa.StudyDate = "2025-03-14"
        pa.StudyTime = "10:15:30"
        pa.AccessionNumber = "ACC" + "9" * 17
        pa.IssuerOfPatientID = "HOSPITAL-" + "X" * 30
        pa.InstitutionName = "An institution whose name runs well past the sixty-four characters LO allows"
        pa.FrameOfReferenceUID = "1.2.826.0.1.03"
        for keyword in ("SeriesInstanceUID", "StudyID", "PatientBirthDate", "ImagerPixelSpacing", "PatientOrientation"):
            if keyword in pa:
                delattr(pa, keyword)
    return datasets


def typical_report_files() -> ReportFiles:
    """The drafts of the ``typical`` case (SR, ORU, an empty FHIR document), as the outbox enqueues them."""
    import json

    from radtrace.config import ReportingSettings
    from radtrace.reporting.dispatch.outbox import ReportFiles
    from radtrace.reporting.hl7 import build_oru
    from radtrace.reporting.sr import build_sr, sr_bytes

    reading, sources = sr_cases()["typical"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=1)
    oru = build_oru(reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid=str(sr.SOPInstanceUID))
    return ReportFiles(str(sr.SOPInstanceUID), sr_bytes(sr), oru.encode(), json.dumps({}).encode())


def reported_revision(store: Store, study_key: str, accession: str) -> tuple[int, str]:
    """A reported revision 1 of the ``typical`` case's study in ``store``: (its id, the Study Instance UID)."""
    from radtrace.store.models import Revision, RevisionState, Study

    _, sources = sr_cases()["typical"]
    with store.session() as session:
        study = Study(study_uid=str(sources[0].StudyInstanceUID), study_key=study_key, accession=accession)
        revision = Revision(study=study, number=1, state=RevisionState.REPORTED)
        session.add_all([study, revision])
        session.flush()
        return revision.id, study.study_uid


def oru_backlog(
    store: Store, outbox: Outbox, settings: DispatchSettings, count: int, study_key: str, accession: str
) -> list[int]:
    """``count`` reported revisions of one study (:func:`reported_revision`, then numbers 2 to ``count``), each with
    the ``typical`` report enqueued for the destinations ``settings`` plans: the outbox ids of their ORUs to the
    RIS, by revision."""
    import sqlalchemy as sa

    from radtrace.reporting.dispatch.outbox import KIND_HL7, planned_deliveries
    from radtrace.store.models import OutboxMessage, Revision, RevisionState

    first, _ = reported_revision(store, study_key, accession)
    with store.session() as session:
        study_id = session.get(Revision, first).study_id  # type: ignore[union-attr]
        later = [Revision(study_id=study_id, number=n, state=RevisionState.REPORTED) for n in range(2, count + 1)]
        session.add_all(later)
        session.flush()
        revisions = [first, *(revision.id for revision in later)]
    orus: list[int] = []
    for revision_id in revisions:
        ids = outbox.enqueue(revision_id, planned_deliveries(settings, typical_report_files()))
        with store.session() as session:
            orus += session.scalars(
                sa.select(OutboxMessage.id).where(OutboxMessage.id.in_(ids), OutboxMessage.kind == KIND_HL7)
            ).all()
    return orus
