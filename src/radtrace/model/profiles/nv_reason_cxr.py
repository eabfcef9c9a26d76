"""NV-Reason-CXR-3B: ``<think> … </think><answer> Label, Label </answer>`` over the 14 CheXpert labels.

From the model card and demo: prompt "Find abnormalities and support devices." with the image first and no
system message; the reasoning walks image quality, devices, airways, lungs, pleura, mediastinum, hila, heart,
upper abdomen, bones and a summary; a missing ``</answer>`` means generation was cut off; a non-chest or
non-frontal image gets "Please provide a frontal chest X-ray image." Trained at 128² to 476² pixels,
400-1,800 output tokens, greedy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from radtrace.model.parsing import (
    CHEXPERT_LABELS,
    canonical_label,
    differential_from,
    findings_from,
    normalise_text,
    split_labels,
    split_sections,
)
from radtrace.model.profiles.base import ParsedText, Profile
from radtrace.model.reading import ReadingFlag, ReasoningStep, SourceImage

__all__ = ["REFUSAL_TEXT", "NvReasonCxr", "refused", "summary_of"]

REFUSAL_TEXT: Final = "Please provide a frontal chest X-ray image."
_REFUSAL: Final = re.compile(
    r"please provide a (?:frontal )?chest x-?ray|not a (?:frontal )?chest (?:x-?ray|radiograph)|"
    r"(?:cannot|can't|unable to) (?:interpret|analy[sz]e|read) (?:this|the) image",
    re.IGNORECASE,
)
_THINK: Final = re.compile(r"<think>(?P<body>.*?)(?:</think>|(?=<answer>)|$)", re.DOTALL | re.IGNORECASE)
_ANSWER: Final = re.compile(r"<answer>(?P<body>.*?)</answer>", re.DOTALL | re.IGNORECASE)
_TAG: Final = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)


def refused(text: str) -> bool:
    """Whether the model declined the image (its trained refusal, or a close paraphrase)."""
    return bool(_REFUSAL.search(re.sub(r"\s+", " ", text)))


def summary_of(reasoning: Sequence[ReasoningStep]) -> str | None:
    """The summary section's text without its heading, as the impression."""
    for step in reversed(reasoning):
        if step.section == "summary":
            body = re.sub(
                r"^\W*(?:summary|conclusion|impression|overall|final \w+|assessment)\W*:\W*", "", step.text, flags=re.I
            )
            return body.strip() or None
    return None


class NvReasonCxr(Profile):
    """The default profile (NVIDIA NV-Reason-CXR-3B, a Qwen2.5-VL-3B fine-tune; non-commercial weights)."""

    name = "nv-reason-cxr"
    version = "1"
    model_name = "NV-Reason-CXR-3B"
    default_repo_id = "nvidia/NV-Reason-CXR-3B"
    prompt = "Find abnormalities and support devices."
    labels = CHEXPERT_LABELS
    max_new_tokens = 2048
    min_pixels = 128 * 128
    max_pixels = 476 * 476
    takes_lateral = False

    def _parse(self, text: str, *, images: Sequence[SourceImage], hit_token_limit: bool) -> ParsedText:
        text = normalise_text(text)
        flags: set[ReadingFlag] = set()
        has_think = "<think>" in text.lower() or "</think>" in text.lower()
        answer_match = _ANSWER.search(text)
        if refused(_TAG.sub(" ", text)) and answer_match is None:
            return ParsedText(flags=frozenset({ReadingFlag.REFUSED}))

        think = self._think(text)
        if answer_match is None:
            if "<answer>" in text.lower() or has_think or hit_token_limit:
                flags.add(ReadingFlag.TRUNCATED)
            if not has_think:
                flags.add(ReadingFlag.UNPARSED)
                return ParsedText(flags=frozenset(flags))
            reasoning = split_sections(think)
            # no trustworthy answer: the trace can make findings uncertain or absent, never present
            return ParsedText(
                reasoning=reasoning,
                findings=findings_from((), think, labels=self.labels),
                differential=differential_from(think),
                impression=summary_of(reasoning),
                flags=frozenset(flags),
            )

        answer_labels = split_labels(answer_match["body"])
        canonical = tuple(dict.fromkeys(c for label in answer_labels if (c := canonical_label(label)) is not None))
        if not canonical:
            flags.add(ReadingFlag.UNPARSED)
            if refused(answer_match["body"]):
                flags = {ReadingFlag.REFUSED}
        reasoning = split_sections(think)
        return ParsedText(
            reasoning=reasoning,
            findings=findings_from(canonical, think, labels=self.labels) if canonical else (),
            answer_labels=answer_labels,
            differential=differential_from(think),
            impression=summary_of(reasoning),
            flags=frozenset(flags),
        )

    @staticmethod
    def _think(text: str) -> str:
        match = _THINK.search(text)
        if match is not None:
            return match["body"].strip()
        closing = text.lower().find("</think>")  # an opening tag lost to the chat template
        return text[:closing].strip() if closing != -1 else ""
