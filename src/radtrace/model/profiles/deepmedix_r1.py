"""DeepMedix-R1 (Qwen2.5-VL-7B class, Apache-2.0): grounded reasoning with boxes and a ``\\boxed{…}`` answer.

The reasoning (inside ``<think>`` where present) places boxes as ``[x_min, y_min, x_max, y_max]`` in pixels of
the picture the model was shown (at most ~512 px a side); the answer is ``The answer is: \\boxed{A|B}`` with
``|``-separated labels. Boxes are attached to the finding named in the same sentence (else the nearest one
named before it, else the only finding) and mapped back to source-image pixels through the recorded resize.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

from radtrace.model.image import to_source_pixels
from radtrace.model.parsing import (
    CHEXPERT_LABELS,
    canonical_label,
    differential_from,
    findings_from,
    mention_positions,
    normalise_text,
    split_labels,
    split_sections,
)
from radtrace.model.profiles.base import ParsedText, Profile
from radtrace.model.profiles.nv_reason_cxr import refused, summary_of
from radtrace.model.reading import BoundingBox, Finding, FindingStatus, ReadingFlag, SourceImage

__all__ = ["DeepMedixR1", "boxed_answer", "boxes_in"]

_NUMBER: Final = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX: Final = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")
_THINK: Final = re.compile(r"<think>(?P<body>.*?)(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_MAX_BOXES: Final = 64


def boxed_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{…}``, braces balanced; ``None`` if there is none or it is unclosed."""
    start = text.rfind("\\boxed{")
    if start == -1:
        return None
    depth, position = 1, start + len("\\boxed{")
    for index in range(position, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[position:index]
    return None


def boxes_in(text: str) -> list[tuple[int, int, tuple[float, float, float, float]]]:
    """Every ``[x1, y1, x2, y2]`` in the text with its span; non-finite or zero-area boxes are skipped."""
    found: list[tuple[int, int, tuple[float, float, float, float]]] = []
    for match in _BOX.finditer(text):
        try:
            x0, y0, x1, y1 = (float(match.group(i)) for i in range(1, 5))
        except ValueError:
            continue
        if not all(math.isfinite(v) and abs(v) < 1e6 for v in (x0, y0, x1, y1)) or x0 == x1 or y0 == y1:
            continue
        found.append((match.start(), match.end(), (x0, y0, x1, y1)))
        if len(found) >= _MAX_BOXES:
            break
    return found


class DeepMedixR1(Profile):
    """DeepMedix-R1: boxes in the reasoning, ``\\boxed{A|B}`` answers."""

    name = "deepmedix-r1"
    version = "1"
    model_name = "DeepMedix-R1"
    default_repo_id = "DeepMedix/DeepMedix-R1"
    prompt = (
        "Analyze this chest X-ray step by step. Give the bounding box [x_min, y_min, x_max, y_max] of each "
        "abnormality you find, then the final answer as \\boxed{} with the findings separated by |."
    )
    labels = CHEXPERT_LABELS
    max_new_tokens = 2048
    min_pixels = 128 * 128
    max_pixels = 504 * 504
    takes_lateral = False

    def _parse(self, text: str, *, images: Sequence[SourceImage], hit_token_limit: bool) -> ParsedText:
        text = normalise_text(text)
        answer = boxed_answer(text)
        match = _THINK.search(text)
        if match is not None:
            think = match["body"].strip()
        else:
            cut = text.find("\\boxed{")
            think = text[: cut if cut != -1 else len(text)]
            think = re.sub(r"(?:the )?(?:final )?answer is\s*:?\s*$", "", think.strip(), flags=re.IGNORECASE).strip()
        if answer is None:
            if refused(text):
                return ParsedText(flags=frozenset({ReadingFlag.REFUSED}))
            flags = {ReadingFlag.TRUNCATED} if hit_token_limit or "<think>" in text.lower() else set()
            if not think or not flags:
                flags.add(ReadingFlag.UNPARSED)
            reasoning = split_sections(think)
            return ParsedText(
                reasoning=reasoning,
                findings=findings_from((), think, labels=self.labels) if flags == {ReadingFlag.TRUNCATED} else (),
                impression=summary_of(reasoning),
                flags=frozenset(flags),
            )

        given = split_labels(answer, separators=r"[|;\n]")
        canonical = [canonical_label(label) for label in given]
        chexpert = tuple(dict.fromkeys(c for c in canonical if c is not None))
        findings = list(findings_from(chexpert, think, labels=self.labels))
        # DeepMedix may answer with labels outside CheXpert: keep them as present findings under their own name.
        for label, mapped in zip(given, canonical, strict=True):
            if mapped is None:
                findings.append(Finding(label=label, status=FindingStatus.PRESENT))
        flags = set() if findings else {ReadingFlag.UNPARSED}
        if images and findings:
            findings = self._attach_boxes(think, findings, images[0])
        reasoning = split_sections(think)
        return ParsedText(
            reasoning=reasoning,
            findings=tuple(findings),
            answer_labels=given,
            differential=differential_from(think),
            impression=summary_of(reasoning),
            flags=frozenset(flags),
        )

    @staticmethod
    def _attach_boxes(think: str, findings: list[Finding], image: SourceImage) -> list[Finding]:
        present = [finding.label for finding in findings if finding.status == FindingStatus.PRESENT]
        named = sorted((position, label) for label in present for position in mention_positions(think, label))
        boxes: dict[str, list[BoundingBox]] = {}
        for position, end, box in boxes_in(think):
            label = _nearest_label(think, named, position, end, present)
            if label is None:
                continue
            x0, y0, x1, y1 = to_source_pixels(
                box, model_size=(image.model_rows, image.model_columns), source_size=(image.rows, image.columns)
            )
            boxes.setdefault(label, []).append(
                BoundingBox(sop_instance_uid=image.sop_instance_uid, x_min=x0, y_min=y0, x_max=x1, y_max=y1)
            )
        return [
            finding.model_copy(update={"boxes": (*finding.boxes, *boxes[finding.label])})
            if finding.label in boxes
            else finding
            for finding in findings
        ]


def _nearest_label(think: str, named: list[tuple[int, str]], start: int, end: int, present: list[str]) -> str | None:
    """The present label named closest to a box in its sentence, else the last one named before it, else the
    only present label."""
    sentence_start = max(think.rfind(mark, 0, start) for mark in (". ", "\n")) + 1
    ends = [i for i in (think.find(mark, end) for mark in (". ", "\n")) if i != -1]
    sentence_end = min(ends) if ends else len(think)
    in_sentence = [
        (start - position if position < start else position - end, label)
        for position, label in named
        if sentence_start <= position < sentence_end
    ]
    if in_sentence:
        return min(in_sentence)[1]
    before = [label for position, label in named if position < start]
    if before:
        return before[-1]
    return present[0] if len(present) == 1 else None
