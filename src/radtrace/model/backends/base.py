"""One interface for every inference backend: ``read(study, profile) -> Reading`` and a batched form.

A backend only *generates*: it turns prepared pictures and a profile's prompt into text and token counts
(:meth:`Backend.generate`). Parsing and assembling the :class:`Reading` are shared here, so every backend
(transformers in-process, a vLLM server, and later ONNX Runtime) produces readings the same way.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from radtrace.model.profiles.base import Profile
from radtrace.model.reading import ModelIdentity, Reading, Timings, TokenCounts
from radtrace.model.study import StudyInput

__all__ = ["Backend", "BackendName", "Generation"]

BackendName = Literal["transformers", "vllm", "onnxruntime", "demo"]


@dataclass(frozen=True)
class Generation:
    """One study's generated text and what it cost."""

    text: str
    prompt_tokens: int
    image_tokens: int
    generated_tokens: int
    hit_token_limit: bool
    generate_s: float
    """Seconds of the generate call; a batched call's time is shared equally among its studies."""
    batch_size: int = 1
    """Studies in the generate call (greedy output may differ in the last bits between batch sizes)."""


class Backend(ABC):
    """Runs a model. Subclasses implement :meth:`generate` and :meth:`identity`."""

    name: BackendName

    @abstractmethod
    def identity(self, profile: Profile) -> ModelIdentity:
        """Which model, weights and settings this backend reads with under ``profile``."""

    @abstractmethod
    def generate(self, studies: Sequence[StudyInput], profile: Profile) -> list[Generation]:
        """Generate one output per study, in order.

        Raises:
            ModelError: a transient failure (out of memory, server overloaded or unreachable).
            RadtraceError: a permanent one.
        """

    def unavailable(self) -> str | None:
        """Why the model's server does not answer a cheap health check now, or None when it does or the backend has
        no server (in-process models): what the worker's circuit breaker probes (:mod:`radtrace.worker.breaker`)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release connections or other resources (the model itself stays loaded for the process)."""

    def read(self, study: StudyInput, profile: Profile) -> Reading:
        """Read one study."""
        return self.read_batch([study], profile)[0]

    def read_batch(self, studies: Sequence[StudyInput], profile: Profile) -> list[Reading]:
        """Read several studies in one generate call (where the backend batches), readings in order."""
        if not studies:
            return []
        generations = self.generate(studies, profile)
        identity = self.identity(profile)
        return [
            assemble(study, generation, profile, identity)
            for study, generation in zip(studies, generations, strict=True)
        ]


def assemble(study: StudyInput, generation: Generation, profile: Profile, identity: ModelIdentity) -> Reading:
    """Parse a generation with ``profile`` and build the :class:`Reading` (parse time included)."""
    started = time.perf_counter()
    parsed = profile.parse(generation.text, images=study.sources, hit_token_limit=generation.hit_token_limit)
    parse_s = time.perf_counter() - started
    return Reading(
        reasoning=parsed.reasoning,
        findings=parsed.findings,
        answer_labels=parsed.answer_labels,
        differential=parsed.differential,
        impression=parsed.impression,
        raw_text=generation.text,
        flags=parsed.flags,
        images=study.sources,
        identity=identity,
        tokens=TokenCounts(
            prompt=generation.prompt_tokens, image=generation.image_tokens, generated=generation.generated_tokens
        ),
        timings=Timings(
            prepare_s=study.prepare_s,
            generate_s=generation.generate_s,
            parse_s=parse_s,
            batch_size=generation.batch_size,
        ),
    )
