"""The assessment SR: each whole-draft decision leaves a DICOM SR in the study that references the AI SR and each
assessed finding's Tracking UID, validates with dciodvfy, is kept, named in the audit event, and downloadable."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom import config as pydicom_config

from console_support import add_user, console_client, console_settings, csrf_of, reported_study, sign_in, study_path
from radtrace.audit.schema import AuditEventRow
from radtrace.console.assessment import LOCAL_SCHEME, tracking_uids
from radtrace.model.reader import StudyReader
from radtrace.reporting.draft_store import drafts_root, list_drafts
from radtrace.store.engine import Store
from tests_support import dciodvfy_errors

pytestmark = pytest.mark.integration


def _items(dataset: pydicom.Dataset) -> list[pydicom.Dataset]:
    found = []
    for item in dataset.get("ContentSequence", []):
        found.append(item)
        found.extend(_items(item))
    return found


def _name(item: pydicom.Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning)


def test_a_draft_decision_leaves_a_valid_assessment_sr_referencing_the_ai_sr_and_its_findings(
    store: Store, tmp_path: Path
) -> None:
    settings = console_settings(tmp_path, store, profile="deepmedix-r1")
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=41)
    ai_sr = pydicom.dcmread(list_drafts(drafts_root(settings), study_uid)[0].files["sr"])
    ai_tracking = tracking_uids(ai_sr)
    add_user(store, "dr.sr", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.sr")
        page = client.get(study_path(store, study_uid)).text
        labels = re.findall(r'name="label" value="([^"]+)"', page)
        token = csrf_of(page)
        base = study_path(store, study_uid)
        client.post(f"{base}/findings", data={"csrf_token": token, "label": labels[2], "decision": "accept"})
        modified = {"label": labels[3], "decision": "modify", "status": "absent", "comment": "not there"}
        client.post(f"{base}/findings", data={"csrf_token": token, **modified})
        for verdict, reason in (("accept", "RT-A2"), ("reject", "RT-R2")):
            decision = {"csrf_token": token, "decision": verdict, "reason": reason, "comment": "é"}
            answer = client.post(f"{base}/draft", follow_redirects=False, data=decision)
            assert answer.status_code == 303
        with store.session() as session:
            payloads = [json.loads(p) for p in session.scalars(
                sa.select(AuditEventRow.payload).where(AuditEventRow.event_type == "draft_assessed")
                .order_by(AuditEventRow.seq))]  # fmt: skip
        kept = [p["assessment_sr"] for p in payloads]
        assert len({k["sop_instance_uid"] for k in kept}) == 2  # a changed mind is a new SR, never an edit
        page = client.get(base).text
        link = re.search(r'id="assessment-sr" href="([^"]+)"', page)
        assert link is not None
        assert kept[1]["sop_instance_uid"] not in link.group(1)  # the decision's audit seq names it, not a UID
        download = client.get(link.group(1))
        assert download.status_code == 200
    path = settings.data_dir / "assessments" / kept[1]["path"]
    assert download.content == path.read_bytes()
    assert dciodvfy_errors(path) == []
    with pydicom_config.strict_reading():
        sr = pydicom.dcmread(io.BytesIO(path.read_bytes()))
    assert (sr.StudyInstanceUID, sr.PatientID, sr.AccessionNumber) == (
        ai_sr.StudyInstanceUID, ai_sr.PatientID, ai_sr.AccessionNumber,
    )  # fmt: skip
    assert sr.SOPInstanceUID == kept[1]["sop_instance_uid"]
    assert sr.SeriesInstanceUID != ai_sr.SeriesInstanceUID
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == ai_sr.SOPInstanceUID
    items = _items(sr)
    composite = [i for i in items if i.ValueType == "COMPOSITE"]
    assert composite[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ai_sr.SOPInstanceUID
    assert [str(i.PersonName) for i in items if i.ValueType == "PNAME"] == ["dr.sr^"]
    codes = {(_name(i), i.ConceptCodeSequence[0].CodeMeaning) for i in items if i.ValueType == "CODE"}
    assert ("Assessment of the AI result set", "Rejected") in codes
    assert ("Reason for assessment", "Finding reported that is not there") in codes
    assert ("Corrected presence", "Absent") in codes
    findings = [i for i in items if i.ValueType == "CONTAINER" and _name(i) == "AI finding assessment"]
    assessed = {}
    for finding in findings:
        children = list(finding.ContentSequence)
        label = next(str(c.TextValue) for c in children if _name(c) == "Tracking Identifier")
        assessed[label] = [str(c.UID) for c in children if c.ValueType == "UIDREF"]
    assert assessed == {labels[2]: ai_tracking[labels[2]], labels[3]: ai_tracking[labels[3]]}
    assert all(assessed.values())
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == LOCAL_SCHEME
    with store.session() as session:
        exported = session.scalars(
            sa.select(AuditEventRow.actor_user).where(AuditEventRow.event_type == "draft_exported")
        ).all()
    assert exported == ["dr.sr"]
