"""The ORU's room for text is shared fairly: the findings' evidence has an allowance of its own, so the reasoning keeps
its lines however many findings a reading has, the message holds every finding's whole evidence, and where it cuts
the reasoning it says in which section and after how many characters.

Found after the evidence lines (RT-EVID) moved before the reasoning: they drew from the one allowance of 2,500 lines,
so a reading with many findings lost that many lines of its reasoning, and the one note ("N characters of text left
out") did not say where the reasoning stopped. Measured (bench-like script in the commit): a 292 kB reasoning with 13
findings kept 2,412 reasoning lines before, 2,499 now (2,500 less the impression and flags lines).
"""

from __future__ import annotations

import re

import pytest

from radtrace.config import ReportingSettings
from radtrace.model.evidence import finding_evidence
from radtrace.model.reading import Finding, FindingStatus, Reading, ReasoningStep
from radtrace.reporting import hl7
from radtrace.reporting.codes import FINDING_CODES, reasoning_code
from radtrace.reporting.text import draft_text
from reporting_support import reading, source_study

pytestmark = pytest.mark.unit

SOURCES = source_study()
SR_UID = "1.2.826.0.1.3680043.8.498.7"
LABELS = [entry.label for entry in FINDING_CODES.values() if entry.label != "No Finding"]
#: A cut note: the section, the characters kept and written, and the sections after it left out whole.
_CUT = re.compile(
    r"Reasoning cut in (R\d+) \([a-z ]+\) after (\d+) of (\d+) characters"
    r"(?:; (\d+) more left out whole \((R\d+) \([a-z ]+\)(?: to (R\d+) \([a-z ]+\))?\))?\."
)


def _long_reading(findings: int) -> Reading:
    """A reasoning of every section, each some 2,400 characters with a sentence naming each of the first
    ``findings`` labels (so each has six evidence sentences of about 130 characters), and those findings present."""
    labels = LABELS[:findings]
    steps = []
    for number, section in enumerate(("lungs", "pleura", "heart", "mediastinum", "bones", "summary", "other"), 1):
        named = " ".join(
            f"In the {section} view {number}, {label} is considered once more and weighed against the lateral film, "
            "with the same result."
            for label in labels
        )
        filler = " ".join(
            f"Step {number}.{k}: the costophrenic angles and the diaphragm are traced." for k in range(30)
        )
        steps.append(ReasoningStep(section=section, text=f"{named} {filler}"))  # type: ignore[arg-type]
    found = [Finding(label=label, status=FindingStatus.PRESENT, confidence=0.7) for label in labels]
    return reading(SOURCES, reasoning=tuple(steps), findings=found)


def _tx(er7: str) -> list[list[str]]:
    segments = [segment.split("|") for segment in er7.split("\r") if segment.startswith("OBX|")]
    return [fields for fields in segments if fields[2] == "TX"]


def _joined(lines: list[list[str]], code: str, sub_id: str) -> str:
    return "".join(hl7.unescape(f[5]) for f in lines if f[3].split("^")[0] == code and f[4] == sub_id)


@pytest.fixture
def small_allowances(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Allowances a tenth of the real ones, so that a reasoning of 17 kB overflows in a second of hl7apy (the real
    ones take 25 s a message; the heavy megabyte test in test_reporting_hl7_limits runs at that size)."""
    monkeypatch.setattr(hl7, "MAX_TEXT_LINES", 150)
    monkeypatch.setattr(hl7, "MAX_EVIDENCE_LINES", 120, raising=False)
    return 150, 120


def test_many_findings_keep_their_whole_evidence_and_the_reasoning_its_share_and_the_cut_is_placed(
    small_allowances: tuple[int, int],
) -> None:
    text_lines, _evidence_lines = small_allowances
    read = _long_reading(findings=8)
    er7 = hl7.build_oru(read, SOURCES[0], settings=ReportingSettings(), sr_sop_instance_uid=SR_UID).text
    lines = _tx(er7)

    # every finding's whole evidence, as the console shows it
    for index, finding in enumerate(read.findings, 1):
        sentences = finding_evidence(read, finding)
        assert len(sentences) == 6
        assert _joined(lines, "RT-EVID", str(index)) == "".join(draft_text(s).text for s in sentences)

    # the reasoning has every line the evidence did not take from it: the allowance less the impression and flags
    reasoning = [f for f in lines if f[4].startswith("R")]
    note_lines = _cut_note_lines(lines)
    preamble = [f for f in lines[:-note_lines] if f not in reasoning and not f[3].startswith("RT-EVID")]
    assert preamble
    assert len(reasoning) == text_lines - len(preamble)

    # the note says where the reasoning stops: the section, its characters kept, and the sections left out after it
    note = "".join(hl7.unescape(f[5]) for f in lines[-note_lines:])
    match = _CUT.search(note)
    assert match is not None, note
    section, kept, total = match[1], int(match[2]), int(match[3])
    index = int(section[1:])
    step = read.reasoning[index - 1]
    assert _joined(lines, reasoning_code(step.section).value, section) == draft_text(step.text).text[:kept]
    assert total == len(draft_text(step.text).text) > kept
    after = [f"R{n}" for n in range(index + 1, len(read.reasoning) + 1)]
    assert not [f for f in reasoning if f[4] in after]  # nothing after the cut
    assert (int(match[4] or 0), match[5], match[6] or match[5]) == (
        (len(after), after[0], after[-1]) if after else (0, None, None)
    )
    written = sum(len(draft_text(s.text).text) for s in read.reasoning)
    assert int(note.split()[0]) == written - sum(len(hl7.unescape(f[5])) for f in reasoning)


def _cut_note_lines(lines: list[list[str]]) -> int:
    """How many TX lines at the end are the cut note (RT-FLAGS lines after the last reasoning line)."""
    count = 0
    for fields in reversed(lines):
        if not fields[3].startswith("RT-FLAGS"):
            break
        count += 1
    return count


def test_the_reasoning_keeps_as_many_lines_with_one_finding_as_with_eight(
    small_allowances: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hl7, "MAX_TEXT_LINES", 60)  # two messages: smaller still
    settings = ReportingSettings()
    kept = []
    for findings in (1, 8):
        lines = _tx(
            hl7.build_oru(_long_reading(findings), SOURCES[0], settings=settings, sr_sop_instance_uid=SR_UID).text
        )
        kept.append(len([f for f in lines if f[4].startswith("R")]))
    assert kept[0] == kept[1] > 0
