"""What a model family is to radtrace: prompt, image budget, label set, parser and version.

A profile is plain data plus one pure function, :meth:`Profile.parse`, which turns the model's text into a
:class:`ParsedText` and never raises: whatever goes wrong inside a parser becomes the ``unparsed`` flag with the
raw text kept, because a model's output is hostile input like any other.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from radtrace.model.reading import Finding, ReadingFlag, ReasoningStep, SourceImage

__all__ = ["ParsedText", "Profile"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParsedText:
    """What a parser made of one output: the parts of a :class:`radtrace.model.reading.Reading` it owns."""

    reasoning: tuple[ReasoningStep, ...] = ()
    findings: tuple[Finding, ...] = ()
    answer_labels: tuple[str, ...] = ()
    differential: tuple[str, ...] = ()
    impression: str | None = None
    flags: frozenset[ReadingFlag] = field(default_factory=frozenset)


class Profile(ABC):
    """A model family. Subclasses set the class attributes and implement :meth:`_parse`."""

    name: str
    version: str
    model_name: str
    default_repo_id: str
    prompt: str
    labels: tuple[str, ...]
    max_new_tokens: int
    min_pixels: int
    max_pixels: int
    takes_lateral: bool = False

    def messages(self, image_count: int) -> list[dict[str, Any]]:
        """The chat messages for one study: the images first, then the prompt, no system message."""
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(image_count)]
        content.append({"type": "text", "text": self.prompt})
        return [{"role": "user", "content": content}]

    def parse(self, text: str, *, images: Sequence[SourceImage], hit_token_limit: bool = False) -> ParsedText:
        """Parse one output; never raises. ``images`` are the pictures shown (boxes refer to the first);
        ``hit_token_limit`` says generation stopped at ``max_new_tokens`` rather than at an end token."""
        try:
            parsed = self._parse(text, images=images, hit_token_limit=hit_token_limit)
        except Exception:  # a parser bug must not lose the reading: keep the raw text, flag it
            logger.exception("the %s parser failed; the output is kept unparsed", self.name)
            flags = {ReadingFlag.UNPARSED}
            if hit_token_limit:
                flags.add(ReadingFlag.TRUNCATED)
            return ParsedText(flags=frozenset(flags))
        return parsed

    @abstractmethod
    def _parse(self, text: str, *, images: Sequence[SourceImage], hit_token_limit: bool) -> ParsedText:
        """The profile's parser proper; :meth:`parse` guards it."""

    def describe(self) -> dict[str, Any]:
        """The profile as plain data (for ``radtrace model info`` and the audit)."""
        return {
            "profile": self.name,
            "version": self.version,
            "model_name": self.model_name,
            "default_repo_id": self.default_repo_id,
            "prompt": self.prompt,
            "labels": list(self.labels),
            "max_new_tokens": self.max_new_tokens,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "takes_lateral": self.takes_lateral,
        }
