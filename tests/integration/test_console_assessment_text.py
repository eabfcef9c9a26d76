"""What a radiologist types (a comment, the user name as observer) and the configured institution name reach the
assessment SR the way reporting writes text into its own SRs, and the SR passes dciodvfy with any of them.

A comment of only spaces (the console passed the whole-draft comment as typed) gave a TEXT item with an empty
TextValue (dciodvfy: "Empty attribute (no value) Type 1C ... TextValue"); the observer's name was cut at 63
characters, not 64 bytes, so a non-ASCII name failed as an over-long PN; an institution name with a backslash was
two values of a VM 1 attribute.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radtrace.config import ReportingSettings
from radtrace.console.assessment import FindingAssessment, build_assessment_oru, build_assessment_sr, tracking_uids
from radtrace.console.decisions import check_draft_decision
from radtrace.console.review import MAX_COMMENT, DecisionError
from radtrace.reporting.sr import build_sr
from reporting_support import reading, source_study
from tests_support import sr_dciodvfy

pytestmark = pytest.mark.integration

AI_SR = build_sr(reading(source_study()), source_study(), settings=ReportingSettings(), revision=1)
LABEL = next(iter(tracking_uids(AI_SR)))
WHEN = datetime(2026, 12, 4, 23, 0, tzinfo=UTC)


def _assessment(*, observer: str = "dr.one", comment: str | None = None, finding_comment: str | None = None,
                institution: str = "radtrace") -> Dataset:  # fmt: skip
    finding = FindingAssessment(LABEL, "present", "modify", "absent", finding_comment)
    return build_assessment_sr(AI_SR, observer=observer, verdict="reject", reason=("RT-R2", "x"), comment=comment,
                               findings=[finding], sop_instance_uid=generate_uid(), when=WHEN,
                               institution=institution)  # fmt: skip


def _comments(items: Any) -> Iterator[str]:
    for item in items:
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeMeaning == "Comment":
            yield str(item.TextValue)
        yield from _comments(item.get("ContentSequence", []))


def _observer(sr: Dataset) -> str:
    names = [str(i.PersonName) for i in sr.ContentSequence if i.ValueType == "PNAME"]
    assert len(names) == 1
    return names[0]


@pytest.mark.parametrize("blank", ["   ", " \t \n ", "\u3000 \u2028"])
def test_a_blank_comment_is_no_comment_in_the_assessment_sr(blank: str, tmp_path: Path) -> None:
    sr = _assessment(comment=blank, finding_comment=blank)
    assert list(_comments(sr.ContentSequence)) == []
    assert sr_dciodvfy(sr, tmp_path / "a.dcm")[0] == []
    oru = build_assessment_oru(AI_SR, observer="dr.one", verdict="reject", reason=("RT-R2", "x"), comment=blank,
                               findings=[FindingAssessment(LABEL, "present", "accept", None, blank)],
                               sop_instance_uid=generate_uid(), settings=ReportingSettings(), when=WHEN)  # fmt: skip
    assert "Comment" not in oru.encode().decode("utf-8")


def test_a_comment_is_written_as_reporting_writes_text(tmp_path: Path) -> None:
    sr = _assessment(comment="  not there\t \n", finding_comment="\x00 small\x1b ")
    # As the audit records it (stripped), with the characters UT cannot hold replaced as reporting does.
    assert list(_comments(sr.ContentSequence)) == ["not there", "\ufffd small\ufffd"]
    assert sr_dciodvfy(sr, tmp_path / "a.dcm")[0] == []


@pytest.mark.parametrize(
    "observer",
    [
        "é" * 40,  # 40 characters, 80 bytes
        "\x00" * 30,  # each a U+FFFD: 90 bytes
        "山田" * 15 + "x",
        "dr=one=two" + "ü" * 30,
        "dr^one",
    ],
)
def test_the_observer_name_is_at_most_64_bytes_and_one_family_name(observer: str, tmp_path: Path) -> None:
    sr = _assessment(observer=observer)
    name = _observer(sr)
    assert len(name.encode("utf-8")) <= 64
    assert name.endswith("^")
    assert name.count("^") == 1
    assert "=" not in name
    assert sr_dciodvfy(sr, tmp_path / "a.dcm")[0] == []


def test_an_institution_name_with_a_backslash_is_one_lo_value(tmp_path: Path) -> None:
    sr = _assessment(institution="Hôpital A\\B" + "é" * 40)
    assert sr_dciodvfy(sr, tmp_path / "a.dcm")[0] == []


def test_the_assessment_sr_takes_a_comment_only_as_the_console_checks_it() -> None:
    """One check for a comment (console.review.checked_comment): the SR and ORU builders refused nothing before, so a
    caller passing an unchecked comment (web.py passed the form's text as typed) wrote any length into the SR."""
    too_long = "x" * (MAX_COMMENT + 1)
    with pytest.raises(DecisionError, match=f"at most {MAX_COMMENT} characters"):
        _assessment(comment=too_long)
    with pytest.raises(DecisionError, match=f"at most {MAX_COMMENT} characters"):
        _assessment(finding_comment=too_long)
    with pytest.raises(DecisionError, match=f"at most {MAX_COMMENT} characters"):
        build_assessment_oru(AI_SR, observer="dr.one", verdict="reject", reason=("RT-R2", "x"), comment=too_long,
                             findings=[], sop_instance_uid=generate_uid(), settings=ReportingSettings(),
                             when=WHEN)  # fmt: skip
    # what the console records is what the SR carries: stripped, at most MAX_COMMENT characters
    fits = "  " + "y" * MAX_COMMENT + "\n"
    assert check_draft_decision("reject", "RT-R2", fits) == "y" * MAX_COMMENT
    assert list(_comments(_assessment(comment=fits).ContentSequence)) == ["y" * MAX_COMMENT]
