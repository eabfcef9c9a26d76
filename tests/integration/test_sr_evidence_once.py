"""A finding with several boxes carries its evidence once in the SR: in its first box's group, each later box's group
naming that group (RT-EVID-IN, its Tracking Identifier).

Found on a reading with four boxes of atelectasis: the six evidence sentences were written in each of the four TID 1410
groups (24 TEXT items for 6 sentences), and a viewer rendering the tree showed the same paragraph four times. The SR
stays valid (dciodvfy), every box's group still codes its finding and region, and highdicom's reader reads them all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
import pytest

from drafts_readback_support import read_back
from radtrace.config import ReportingSettings
from radtrace.model.evidence import finding_evidence
from radtrace.model.reading import BoundingBox, Finding, FindingStatus, ReasoningStep
from radtrace.reporting import codes
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.text import draft_text
from reporting_support import reading, source_study

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
STEPS = (
    ReasoningStep(section="lungs", text="Patchy atelectasis at the right base, with volume loss."),
    ReasoningStep(section="pleura", text="Plate-like atelectasis at the left base. No effusion."),
    ReasoningStep(section="summary", text="Bibasal atelectasis | see both bases."),
)


def _groups(sr: object) -> list[object]:
    """The SR's measurement groups (TID 1501 and 1410), as highdicom's reader gives them."""
    document = hd.sr.Comprehensive3DSR.from_dataset(sr, copy=True)  # type: ignore[arg-type]
    return [*document.content.get_planar_roi_measurement_groups(), *document.content.get_image_measurement_groups()]


def _texts(group: object, code: codes.Code) -> list[str]:
    """The TEXT items of concept ``code`` in a group read by highdicom."""
    items = group[0].ContentSequence  # type: ignore[index]
    return [str(item.TextValue) for item in items if item.name.value == code.value]


def test_a_finding_with_four_boxes_carries_its_evidence_once_and_each_box_names_the_group_that_holds_it(
    tmp_path: Path,
) -> None:
    sources = source_study()
    sop = str(sources[0].SOPInstanceUID)
    boxes = tuple(
        BoundingBox(sop_instance_uid=sop, x_min=5.0 + 15 * n, y_min=40.0, x_max=15.0 + 15 * n, y_max=70.0)
        for n in range(4)
    )
    findings = [
        Finding(label="Atelectasis", status=FindingStatus.PRESENT, confidence=0.8, boxes=boxes, evidence=STEPS[0].text),
        Finding(label="Pleural Effusion", status=FindingStatus.ABSENT, boxes=boxes[:2]),
        Finding(label="Pneumothorax", status=FindingStatus.ABSENT),
    ]
    read = reading(sources, reasoning=STEPS, findings=findings)
    evidence = [draft_text(sentence).text for sentence in finding_evidence(read, read.findings[0])]
    assert len(evidence) == 3
    files = build_drafts(read, sources, settings=ReportingSettings(), revision=1, created_at=WHEN)
    back = read_back(files, tmp_path)
    assert back.sr_errors == []

    groups = {group.tracking_identifier: group for group in _groups(back.sr)}  # type: ignore[attr-defined]
    atelectasis = [f"Atelectasis #{n}" for n in range(1, 5)]
    assert set(atelectasis) <= set(groups)
    # the evidence once, in the first box's group; each later box names it; every box keeps its finding and region
    assert _texts(groups["Atelectasis #1"], codes.EVIDENCE) == evidence
    assert _texts(groups["Atelectasis #1"], codes.EVIDENCE_IN) == []
    for name in atelectasis[1:]:
        assert _texts(groups[name], codes.EVIDENCE) == []
        assert _texts(groups[name], codes.EVIDENCE_IN) == ["Atelectasis #1"]
    for name in atelectasis:
        group = groups[name]
        assert group.finding_type.value == codes.finding_code("Atelectasis").code.value  # type: ignore[attr-defined]
        assert group.roi is not None  # type: ignore[attr-defined]
    assert len({group.tracking_uid for group in groups.values()}) == len(groups)  # type: ignore[attr-defined]

    # a finding with no evidence sentence: its boxes name nothing
    effusion = read.findings[1]
    assert finding_evidence(read, effusion) == ("No effusion.",)
    assert _texts(groups["Pleural Effusion #1"], codes.EVIDENCE) == ["No effusion."]
    assert _texts(groups["Pleural Effusion #2"], codes.EVIDENCE_IN) == ["Pleural Effusion #1"]
    assert _texts(groups["Pneumothorax"], codes.EVIDENCE_IN) == []

    # in the whole document each sentence once per finding that has it
    all_evidence = [text for group in groups.values() for text in _texts(group, codes.EVIDENCE)]
    assert sorted(all_evidence) == sorted([*evidence, "No effusion."])
