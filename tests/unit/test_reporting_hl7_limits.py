"""The ORU stays a valid, bounded message whatever length of text a model wrote: at most MAX_TEXT_LINES TX lines of
text and MAX_EVIDENCE_LINES of evidence (OBX-1 is an SI of 4 digits: 10,000 OBX cannot be numbered; hl7apy STRICT
builds a few hundred a second), and a note saying how much was left out and where the reasoning was cut."""

from __future__ import annotations

import os
import re

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from radtrace.config import ReportingSettings
from radtrace.model.reading import ReasoningStep
from radtrace.reporting.hl7 import MAX_EVIDENCE_LINES, MAX_TEXT_LINES, build_oru
from reporting_support import reading, source_study

pytestmark = pytest.mark.unit

SOURCES = source_study()
#: The megabyte of words and the 3,000 steps take about 9 s each under hl7apy STRICT; the one megabyte token covers
#: the same limit in CI. ``RADTRACE_FULL_LIMITS=1`` runs all three.
FULL = os.environ.get("RADTRACE_FULL_LIMITS") == "1"
_FULL_ONLY = pytest.mark.skipif(not FULL, reason="set RADTRACE_FULL_LIMITS=1")
SR_UID = "1.2.826.0.1.3680043.8.498.7"


def _obx(er7: str) -> list[list[str]]:
    return [segment.split("|") for segment in er7.split("\r") if segment.startswith("OBX|")]


@pytest.mark.parametrize(
    "reasoning",
    [
        pytest.param((ReasoningStep(section="lungs", text="w" * (1024 * 1024)),), id="one-token"),
        pytest.param(
            (ReasoningStep(section="lungs", text="clear lungs. " * 80_000),), id="words", marks=_FULL_ONLY
        ),  # a megabyte of words
        pytest.param(
            tuple(ReasoningStep(section=("lungs", "heart")[i % 2], text=f"step {i} " * 30) for i in range(3000)),
            id="many-steps",
            marks=_FULL_ONLY,
        ),
    ],
)
def test_a_megabyte_of_model_text_gives_a_valid_oru_with_a_note_of_what_was_left_out(
    reasoning: tuple[ReasoningStep, ...],
) -> None:
    read = reading(SOURCES, reasoning=reasoning)
    oru = build_oru(read, SOURCES[0], settings=ReportingSettings(), sr_sop_instance_uid=SR_UID)
    er7 = oru.text
    message = parse_message(er7, validation_level=VALIDATION_LEVEL.STRICT)
    assert message.msh.msh_10.value == oru.control_id
    obx = _obx(er7)
    assert [int(fields[1]) for fields in obx] == list(range(1, len(obx) + 1))
    text_lines = [fields for fields in obx if fields[2] == "TX"]
    note_lines = next(n for n, fields in enumerate(reversed(text_lines)) if not fields[3].startswith("RT-FLAGS"))
    assert 1 <= note_lines <= 3
    assert len(text_lines) <= MAX_TEXT_LINES + MAX_EVIDENCE_LINES + note_lines
    left_out = sum(len(step.text) for step in reasoning) - sum(
        len(fields[5]) for fields in text_lines if fields[4].startswith("R")
    )
    notes = [fields[5] for fields in text_lines if "characters of text left out" in fields[5]]
    assert len(notes) == 1
    assert int(notes[0].split()[0]) == left_out  # the note counts what is missing
    note = "".join(fields[5] for fields in text_lines[-note_lines:])
    assert re.search(r"Reasoning cut in R\d+ \(\w+\) after \d+ of \d+ characters", note)  # and says where
    assert obx[-1][5] == SR_UID  # the references after the text are all there


def test_a_reading_within_the_limit_has_no_note() -> None:
    read = reading(SOURCES, reasoning=(ReasoningStep(section="lungs", text="clear lungs. " * 500),))
    oru = build_oru(read, SOURCES[0], settings=ReportingSettings(), sr_sop_instance_uid=SR_UID)
    assert "left out" not in oru.text
    joined = "".join(fields[5] for fields in _obx(oru.text) if fields[4] == "R1")
    assert joined == "clear lungs. " * 500
