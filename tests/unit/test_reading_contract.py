"""The Reading contract: validated, immutable, and exactly serialisable for storage and audit."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from radtrace.model.reading import (
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

pytestmark = pytest.mark.unit

SOP = "1.2.826.0.1.3680043.8.498.77"


def _reading(**changes: object) -> Reading:
    values: dict[str, object] = {
        "reasoning": (
            ReasoningStep(section="image quality", text="PA view, adequate inspiration."),
            ReasoningStep(section="pleura", text="Blunting of the right costophrenic angle — Erguss möglich."),
        ),
        "findings": (
            Finding(
                label="Pleural Effusion",
                status=FindingStatus.PRESENT,
                confidence=0.8,
                boxes=(BoundingBox(sop_instance_uid=SOP, x_min=100, y_min=700, x_max=380, y_max=900),),
                evidence="Blunting of the right costophrenic angle",
            ),
            Finding(label="Pneumothorax", status=FindingStatus.ABSENT),
        ),
        "answer_labels": ("Pleural Effusion",),
        "impression": "Small right pleural effusion.",
        "raw_text": "<think>…</think><answer>Pleural Effusion</answer>",
        "images": (
            SourceImage(
                sop_instance_uid=SOP,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                sha256="ab" * 32,
                view="PA",
                rows=2048,
                columns=1664,
                model_rows=476,
                model_columns=392,
                preparation=({"step": "voi", "center": 2048, "width": 4096},),
            ),
        ),
        "identity": ModelIdentity(
            profile="nv-reason-cxr",
            profile_version="1",
            backend="transformers",
            model_name="NV-Reason-CXR-3B",
            source="/models/nv",
            dtype="bfloat16",
            device="cuda:0",
            prompt="Find abnormalities and support devices.",
            generation={"max_new_tokens": 2048, "do_sample": False},
        ),
        "tokens": TokenCounts(prompt=320, image=289, generated=812),
        "timings": Timings(prepare_s=0.05, generate_s=3.2, parse_s=0.001),
    }
    values.update(changes)
    return Reading.model_validate(values)


def test_reading_round_trips_through_json_exactly() -> None:
    reading = _reading(flags=frozenset({ReadingFlag.TRUNCATED}))
    again = Reading.from_json(reading.to_json())
    assert again == reading
    assert again.finding("Pleural Effusion") is not None
    assert again.finding("Edema") is None
    assert "Erguss möglich" in again.reasoning_text


def test_reading_is_immutable_and_validated() -> None:
    reading = _reading()
    with pytest.raises(ValidationError):
        reading.impression = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="ordered"):
        BoundingBox(sop_instance_uid=SOP, x_min=10, y_min=0, x_max=5, y_max=1)
    with pytest.raises(ValidationError):
        Finding(label="Edema", status="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        _reading(images=())  # a reading always names the image it read
