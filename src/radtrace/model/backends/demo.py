"""The demo backend: recorded model texts replayed, for sites that have no weights yet.

A new site wants to see what a draft looks like and to test its PACS, RIS and file interfaces before
it has the model. This backend returns one of a few realistic outputs of the profile's model family
(copies of the parser test fixtures, shipped in ``demo_texts/``), chosen by the study so that a study
always gets the same one. It is refused unless ``model.demo = true`` (and ``model.backend = "demo"``),
and every reading it produces says so where a reader cannot miss it:

* the impression and the first reasoning step start with :data:`DEMO_MARK`, so the SR's TEXT items, the
  HL7 OBX segments and the FHIR conclusion carry it;
* the model name starts with the mark, which the SR's observer and algorithm, the HL7
  NTE and the FHIR Bundle name, and the audit's ``inference_completed`` records as ``model_name``;
* the raw output recorded in the audit starts with the mark on a line of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Final

from radtrace.errors import ModelLoadError
from radtrace.model.backends.base import Backend, Generation
from radtrace.model.profiles.base import Profile
from radtrace.model.reading import ModelIdentity, Reading, ReasoningStep
from radtrace.model.study import StudyInput

__all__ = ["DEMO_MARK", "DemoBackend", "demo_texts"]

DEMO_MARK: Final = "DEMO \u2013 NOT A MODEL READING"  # the en dash as the issue wrote it
_TEXTS: Final = {
    "nv-reason-cxr": ("nv_normal", "nv_multiple_findings", "nv_support_devices", "nv_hedged"),
    "deepmedix-r1": ("deepmedix_boxes",),
}


def demo_texts(profile: str) -> list[str]:
    """The recorded outputs replayed for ``profile``, in a fixed order."""
    names = _TEXTS.get(profile)
    if names is None:
        raise ModelLoadError(f"the demo backend has no recorded texts for profile {profile!r}")
    folder = resources.files("radtrace.model.backends") / "demo_texts"
    return [(folder / f"{name}.txt").read_text(encoding="utf-8") for name in names]


class DemoBackend(Backend):
    """Replays recorded texts (see the module docstring); needs no weights, no GPU and no network."""

    name = "demo"

    def __init__(self, *, enabled: bool) -> None:
        if not enabled:
            raise ModelLoadError(
                "the demo backend replays recorded texts, not a model: it needs model.demo = true "
                "(RADTRACE_MODEL__DEMO=true), and is for trying radtrace out, never for patients"
            )

    def identity(self, profile: Profile) -> ModelIdentity:
        """See :meth:`Backend.identity`: no weights, marked as a demo in the model name."""
        return ModelIdentity(
            profile=profile.name,
            profile_version=profile.version,
            backend="demo",
            model_name=DEMO_MARK,
            source=f"recorded {profile.model_name} texts shipped with radtrace",
            revision="demo",
            weights_sha256=None,
            dtype="none",
            device="none",
            prompt=profile.prompt,
            generation={"replay": True},
        )

    def generate(self, studies: Sequence[StudyInput], profile: Profile) -> list[Generation]:
        """One recorded text per study, chosen by its first image's SOP Instance UID."""
        texts = demo_texts(profile.name)
        generations = []
        for study in studies:
            key = study.sources[0].sop_instance_uid.encode() if study.sources else b""
            text = texts[int.from_bytes(hashlib.sha256(key).digest()[:4], "big") % len(texts)]
            generations.append(
                Generation(
                    text=text,
                    prompt_tokens=0,
                    image_tokens=0,
                    generated_tokens=len(text.split()),
                    hit_token_limit=False,
                    generate_s=0.0,
                )
            )
        return generations

    def read_batch(self, studies: Sequence[StudyInput], profile: Profile) -> list[Reading]:
        """Read as any backend does, then mark every reading as a demo (see the module docstring)."""
        return [_marked(reading) for reading in super().read_batch(studies, profile)]


def _marked(reading: Reading) -> Reading:
    impression = f"{DEMO_MARK}. {reading.impression}" if reading.impression else f"{DEMO_MARK}."
    reasoning = list(reading.reasoning)
    if reasoning:
        first = reasoning[0]
        reasoning[0] = ReasoningStep(section=first.section, text=f"{DEMO_MARK}. {first.text}")
    return reading.model_copy(
        update={
            "impression": impression,
            "reasoning": tuple(reasoning),
            "raw_text": f"{DEMO_MARK}\n{reading.raw_text}",
        }
    )
