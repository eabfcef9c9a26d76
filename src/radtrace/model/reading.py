"""The model's result contract: what one reading of one study is, independent of the model family.

Everything downstream (reporting, audit, the worker) builds against these types, never against a
backend or a parser. They are immutable, validated and serialise to JSON exactly (``to_json`` /
``from_json``) so a reading can be stored, audited and re-reported without running the model again.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BoundingBox",
    "Finding",
    "FindingStatus",
    "ModelIdentity",
    "Reading",
    "ReadingFlag",
    "ReasoningStep",
    "SourceImage",
    "Timings",
    "TokenCounts",
]

REASONING_SECTIONS = (
    "image quality",
    "devices",
    "airways",
    "lungs",
    "pleura",
    "mediastinum",
    "hila",
    "heart",
    "abdomen",
    "bones",
    "summary",
    "other",
)
ReasoningSection = Literal[
    "image quality", "devices", "airways", "lungs", "pleura", "mediastinum", "hila", "heart", "abdomen", "bones",
    "summary", "other",
]  # fmt: skip


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FindingStatus(enum.StrEnum):
    """What the reading says about one label."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"


class ReadingFlag(enum.StrEnum):
    """Something about the model's output a radiologist or QA must know."""

    TRUNCATED = "truncated"  # generation hit max_new_tokens before the answer closed
    REFUSED = "refused"  # the model declined (e.g. "Please provide a frontal chest X-ray image.")
    UNPARSED = "unparsed"  # the text did not follow the profile's format; raw text kept


class SourceImage(_Frozen):
    """One DICOM image the model was shown, and how it was prepared (recorded for the audit)."""

    sop_instance_uid: str
    sop_class_uid: str
    sha256: str = Field(description="of the spooled file's bytes")
    view: str | None = Field(default=None, description="PA, AP, LL, RL … as selected")
    rows: int = Field(gt=0)
    columns: int = Field(gt=0)
    model_rows: int = Field(gt=0, description="height of the picture given to the model")
    model_columns: int = Field(gt=0, description="width of the picture given to the model")
    preparation: tuple[dict[str, Any], ...] = Field(
        default=(), description="ordered steps and their parameters (modality LUT, VOI, inversion, resize …)"
    )
    role: Literal["frontal", "lateral"] | None = Field(default=None, description="why the model was shown it")
    view_flags: tuple[str, ...] = Field(
        default=(), description="'ap' (heart and mediastinum overstated), 'portable', 'view-from-description'"
    )


class BoundingBox(_Frozen):
    """A region on a source image, in that image's pixel coordinates (column = x, row = y)."""

    sop_instance_uid: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @model_validator(mode="after")
    def _ordered(self) -> BoundingBox:
        if self.x_min > self.x_max or self.y_min > self.y_max:
            raise ValueError("box corners must be ordered (x_min <= x_max, y_min <= y_max)")
        return self


class Finding(_Frozen):
    """One label's status in this reading, with the reasoning text that supports it where found."""

    label: str = Field(min_length=1)
    status: FindingStatus
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    boxes: tuple[BoundingBox, ...] = ()
    evidence: str | None = Field(default=None, description="the sentence of the reasoning that supports it")


class ReasoningStep(_Frozen):
    """One section of the model's reasoning, in the order the model wrote it."""

    section: ReasoningSection
    text: str


class ModelIdentity(_Frozen):
    """Exactly which model produced a reading: enough to reproduce or recall it."""

    profile: str = Field(description="e.g. nv-reason-cxr")
    profile_version: str
    backend: Literal["transformers", "vllm", "onnxruntime", "demo"]
    model_name: str = Field(description="e.g. NV-Reason-CXR-3B")
    source: str = Field(description="local path or repository id the weights came from")
    revision: str | None = None
    weights_sha256: str | None = Field(default=None, description="over the weight files, in name order")
    dtype: str
    device: str
    prompt: str
    generation: dict[str, Any] = Field(default_factory=dict, description="max_new_tokens, do_sample …")


class TokenCounts(_Frozen):
    """Token usage of one reading."""

    prompt: int = Field(ge=0)
    image: int = Field(ge=0)
    generated: int = Field(ge=0)


class Timings(_Frozen):
    """Seconds spent per stage of one reading."""

    prepare_s: float = Field(ge=0.0)
    generate_s: float = Field(ge=0.0)
    parse_s: float = Field(ge=0.0)
    batch_size: int = Field(default=1, ge=1, description="studies in the generate call this reading was part of")


class Reading(_Frozen):
    """One model reading of one study: reasoning, findings, conclusions, raw text and provenance.

    A reading is a *draft*: nothing here is verified. ``raw_text`` is the model's complete output and
    is always kept, whatever the parser made of it; ``flags`` say when it was truncated, refused or
    not parseable, in which case ``findings`` may be empty.
    """

    reasoning: tuple[ReasoningStep, ...] = ()
    findings: tuple[Finding, ...] = ()
    answer_labels: tuple[str, ...] = Field(default=(), description="the labels of the model's final answer, as given")
    differential: tuple[str, ...] = ()
    impression: str | None = None
    raw_text: str
    flags: frozenset[ReadingFlag] = frozenset()
    images: tuple[SourceImage, ...] = Field(min_length=1)
    identity: ModelIdentity
    tokens: TokenCounts
    timings: Timings

    @property
    def reasoning_text(self) -> str:
        """The whole reasoning as one text, sections in order."""
        return "\n\n".join(step.text for step in self.reasoning)

    def finding(self, label: str) -> Finding | None:
        """The finding for ``label``, if the reading has one."""
        return next((finding for finding in self.findings if finding.label == label), None)

    def to_json(self) -> str:
        """Serialise exactly (for storage and audit payloads)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Reading:
        """Read back what :meth:`to_json` wrote."""
        return cls.model_validate_json(text)
