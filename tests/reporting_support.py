"""Fixture readings and source studies for the reporting tests (not fixtures themselves: plain builders)."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

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


def shown(datasets: Sequence[Dataset]) -> tuple[SourceImage, ...]:
    """The first dataset as the image the model was shown."""
    ds = datasets[0]
    return (
        SourceImage(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            sha256="1" * 64,
            view="PA",
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
        images=shown(datasets),
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
    latin1 = [d.copy() for d in ds]
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
    }
