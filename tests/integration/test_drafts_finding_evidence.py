"""Every draft carries each finding's evidence as the review console shows it: one function (radtrace.model.evidence).

Found on a real film's demo reading ("No Finding", the recorded normal film): the study page showed "Summary: Normal
chest radiograph without acute cardiopulmonary abnormality." as No Finding's evidence, while the SR, the ORU and the
FHIR Bundle carried no evidence for it (the SR and the ORU none for any finding; FHIR only the parser's sentence, which
No Finding never has).
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import dcmread

from console_support import console_settings
from drafts_readback_support import read_back
from radtrace.config import ReportingSettings
from radtrace.console.review import load_review
from radtrace.model.evidence import evidence_sentences
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Finding, FindingStatus, ReasoningStep
from radtrace.reporting.dispatch.kinds import ReportFiles
from radtrace.reporting.draft_store import DRAFT_FILES, drafts_root
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.hl7 import unescape
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Priority, Revision, Study
from radtrace.worker.pipeline import Result, StudyPipeline
from reporting_support import REAL_FILMS, reading, source_study
from tests_support import dicom_tool
from worker_support import spool_study

pytestmark = pytest.mark.integration

#: A real film whose demo reading (chosen by its SOP Instance UID) is the recorded normal film's.
FILM = "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm"
#: The concept of an evidence sentence (radtrace.reporting.codes.EVIDENCE): TEXT items in the SR, OBX-3 in the ORU.
EVIDENCE_CODE = "RT-EVID"
NORMAL = "Summary: Normal chest radiograph without acute cardiopulmonary abnormality."


def _sr_evidence(sr_path: Path) -> dict[str, list[str]]:
    """Each finding group's evidence TEXT items, by the group's tracking identifier."""
    found: dict[str, list[str]] = {}
    sr = dcmread(sr_path)
    for item in sr.ContentSequence:
        for group in item.get("ContentSequence", []):
            if group.ValueType != "CONTAINER":
                continue
            items = group.get("ContentSequence", [])
            label = next(
                (str(i.TextValue) for i in items if i.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"),
                None,
            )
            if label is not None:
                found[label] = [
                    str(i.TextValue)
                    for i in items
                    if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == EVIDENCE_CODE
                ]
    return found


def _oru_evidence(text: str) -> dict[str, list[str]]:
    """Each finding's evidence OBX (unescaped), by OBX-4, in order."""
    found: dict[str, list[str]] = {}
    for segment in text.split("\r"):
        parts = segment.split("|")
        if parts[0] == "OBX" and parts[3].split("^")[0] == EVIDENCE_CODE:
            found.setdefault(parts[4], []).append(unescape(parts[5]))
    return found


def _finding(resource: dict[str, Any]) -> bool:
    """A finding's Observation (imaging), not the patient's age (radtrace.reporting.draft_age)."""
    return resource["resourceType"] == "Observation" and "category" in resource


def test_a_real_films_demo_no_finding_carries_the_consoles_sentence_in_every_draft(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(tmp_path, store)
    film = dcmread(REAL_FILMS / FILM)
    study_uid, number = spool_study(settings, store, [film])
    with store.session("setting a study's priority", immediate=True) as session:
        revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == study_uid))
        assert revision is not None
        revision.priority = Priority.ROUTINE
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    result = StudyPipeline(settings, store, reader, worker="evidence-test").process(study_uid, number)
    assert result.result is Result.REPORTED, result

    review = load_review(store, study_uid, 1)
    assert review is not None
    shown = {finding.label: list(finding.evidence) for finding in review.findings}
    order = [finding.label for finding in review.findings]
    assert shown["No Finding"] == [NORMAL]  # the console's sentence (df4a565's rule)
    assert len(shown) == 10  # the recorded normal film's reading: No Finding present, nine findings absent
    store.dispose()

    kept = drafts_root(settings) / study_uid / "1"
    # SR: each group's TEXT items (No Finding's the normal film's sentence), dciodvfy clean, and dsr2html (what a
    # viewer shows) renders it
    assert _sr_evidence(kept / DRAFT_FILES["sr"]) == shown
    files = ReportFiles(
        sr_sop_instance_uid="",
        sr=(kept / DRAFT_FILES["sr"]).read_bytes(),
        hl7=(kept / DRAFT_FILES["hl7"]).read_bytes(),
        fhir=(kept / DRAFT_FILES["fhir"]).read_bytes(),
    )
    back = read_back(files, tmp_path)  # dciodvfy; hl7apy STRICT
    assert back.sr_errors == []
    rendered = subprocess.run([dicom_tool("dsr2html"), str(tmp_path / "sr.dcm")], capture_output=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    page = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", rendered.stdout.decode("utf-8"))))
    assert f"Model evidence: {NORMAL}" in page or f"Model evidence = {NORMAL}" in page, page[-3000:]
    # ORU: RT-EVID OBX under each finding's sub-ID, beside its coded finding
    oru = _oru_evidence(back.hl7)
    assert {label: oru.get(str(index), []) for index, label in enumerate(order, 1)} == shown
    no_finding = str(order.index("No Finding") + 1)
    [coded] = [s for s in back.segments if s[0] == "OBX" and s[4] == no_finding and s[2] == "CWE"]
    assert coded[3].startswith("111286^")  # DCM "No abnormality"
    # FHIR: each Observation's notes
    bundle = json.loads(files.fhir or b"{}")
    observations = [e["resource"] for e in bundle["entry"] if _finding(e["resource"])]
    assert [[note["text"] for note in o.get("note", [])] for o in observations] == [shown[label] for label in order]


def test_each_findings_evidence_is_the_same_in_the_sr_the_oru_and_fhir_as_the_console_gives(tmp_path: Path) -> None:
    datasets = source_study()
    steps = (
        ReasoningStep(section="lungs", text="Patchy opacity at the right base, consistent with atelectasis."),
        ReasoningStep(section="pleura", text="Small right pleural effusion. No pneumothorax."),
        ReasoningStep(section="heart", text="Heart size is at the upper limits of normal."),
        ReasoningStep(section="summary", text="Right basal atelectasis with a small effusion | see \\E\\ above."),
    )
    read = reading(datasets, reasoning=steps)
    read = read.model_copy(
        update={"findings": (*read.findings, Finding(label="No Finding", status=FindingStatus.ABSENT))}
    )
    files = build_drafts(read, datasets, settings=ReportingSettings(), revision=1, created_at=None)
    back = read_back(files, tmp_path)
    assert back.sr_errors == []
    reasoning = [(str(step.section), step.text) for step in read.reasoning]  # as the console has them, recorded
    expected = {
        f.label: list(evidence_sentences(f.label, reasoning, f.evidence, f.status.value)) for f in read.findings
    }
    assert expected["Atelectasis"] == [
        steps[0].text,
        "Right basal atelectasis with a small effusion | see \\E\\ above.",
    ]
    assert expected["Pleural Effusion"] == ["Small right pleural effusion.", expected["Atelectasis"][1]]
    assert expected["No Finding"] == []  # absent: no normal film's sentence
    sr = _sr_evidence(tmp_path / "sr.dcm")
    assert {label.split(" #")[0]: texts for label, texts in sr.items()} == {
        label: texts for label, texts in expected.items()
    }
    oru = _oru_evidence(back.hl7)
    assert {f.label: oru.get(str(i), []) for i, f in enumerate(read.findings, 1)} == expected
    parse_message(back.hl7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    bundle = json.loads(files.fhir or b"{}")
    observations = [e["resource"] for e in bundle["entry"] if _finding(e["resource"])]
    assert [[n["text"] for n in o.get("note", [])] for o in observations] == list(expected.values())
