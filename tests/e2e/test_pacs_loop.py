"""Orthanc in the loop, as a hospital runs radtrace: the PACS routes a study in and gets the SR back.

dcmtk's storescu sends a study to Orthanc; Orthanc's Lua auto-routing forwards the stable study to radtrace
(``radtrace serve`` on PostgreSQL and Redis, the tiny model on the CPU); radtrace stores its SR back in
Orthanc, where the REST API shows it in the same study, and sends the HL7 draft to an MLLP receiver.
"""

from __future__ import annotations

import json
from pathlib import Path

import hl7
import pytest

from mllp_support import mllp_receiver
from orthanc_support import STABLE_STUDY_LINE, running_orthanc
from pipeline_invariants import check_invariants
from pipeline_support import running_service, service_env
from radtrace.dicom_listener.dcmtk import storescu
from radtrace.store.models import RevisionState
from radtrace.testing.services import RedisNamespace, free_port
from radtrace.testing.studies import make_study, write_study
from serve_support import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STAGES = ["instance_received", "study_queued", "inference_started", "inference_completed", "report_created",
          "dispatch_delivered"]  # fmt: skip


def _in_order(events: list[str], wanted: list[str]) -> bool:
    remaining = iter(events)
    return all(any(event == step for event in remaining) for step in wanted)


def test_orthanc_routes_a_study_to_radtrace_and_holds_its_sr_in_the_same_study(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    study = make_study()
    study_uid = str(study[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "study")
    listener_port = free_port()
    with (
        mllp_receiver() as ris,
        running_orthanc(tmp_path / "orthanc", forward_to_port=listener_port) as pacs,
    ):
        env = service_env(
            tmp_path / "radtrace",
            store_url=postgres_url,
            broker_url=redis_namespace.url,
            key_prefix=redis_namespace.prefix,
            model_dir=tiny_model_dir,
            listener_port=listener_port,
            pacs_port=pacs.dicom_port,
            ris_port=ris.port,
        )
        with running_service(env, tmp_path / "serve.log") as service:
            sent = storescu(files, pacs.dicom_port, calling="MODALITY", called=pacs.ae_title)
            assert sent.returncode == 0, sent.stderr

            wait_until(lambda: bool(pacs.study_instances(study_uid, "SR")) and bool(ris.received), 90,
                       "the SR at Orthanc and the HL7 at the RIS", service.log_file)  # fmt: skip
            [revision] = service.wait_settled(study_uid)
            assert revision.state is RevisionState.DISPATCHED, revision.reason
            assert sorted(revision.instances) == sorted(str(ds.SOPInstanceUID) for ds in study)

            # Orthanc's study now holds the images, radtrace's SR and its companion: two series more than it was sent
            [sr] = pacs.srs(study_uid)
            assert sr.SOPInstanceUID == revision.sr_sop_instance_uid
            assert (sr.StudyInstanceUID, sr.PatientID) == (study_uid, study[0].PatientID)
            assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
            assert "AI DRAFT" in sr.SeriesDescription
            evidence = {
                str(item.ReferencedSOPInstanceUID)
                for ref in sr.CurrentRequestedProcedureEvidenceSequence
                for series in ref.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence
            }
            assert evidence <= {str(ds.SOPInstanceUID) for ds in study}
            assert evidence
            [sr_id] = pacs.find_instance(str(sr.SOPInstanceUID))
            orthanc_study = pacs.get(f"/instances/{sr_id}/study")
            assert isinstance(orthanc_study, dict)
            # the SR's series and the companion document's (a Basic Text SR every viewer shows, naming the SR)
            assert len(orthanc_study["Series"]) == len({ds.SeriesInstanceUID for ds in study}) + 2
            [companion] = pacs.companions(study_uid)
            assert companion.VerificationFlag == "UNVERIFIED"
            [reference] = [item for item in companion.ContentSequence if item.ValueType == "COMPOSITE"]
            assert reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sr.SOPInstanceUID

            # the HL7 draft reached the RIS, preliminary, naming the study and the SR
            [message] = ris.received
            assert isinstance(message, hl7.Message)
            assert str(message.segment("OBR")[25]) == "P"
            text = str(message)
            assert study_uid in text
            assert str(sr.SOPInstanceUID) in text

            # radtrace's SR and companion arriving at Orthanc made the study stable again: once Orthanc's script has
            # run on it with both in it (it forwards synchronously), nothing may have come back to radtrace
            stable_again = STABLE_STUDY_LINE.format(study=orthanc_study["ID"], reports=2)
            orthanc_log = tmp_path / "orthanc" / "orthanc.log"
            wait_until(lambda: stable_again in orthanc_log.read_text(errors="replace"), 60,
                       "Orthanc's script run on the study with the SR and the companion", service.log_file)  # fmt: skip
            observed = check_invariants(service.store_url, pacs, service.env, accepted=revision.instances, ris=ris)
            assert len(observed.of(study_uid)) == 1

            timeline = json.loads(service.cli("audit", "timeline", study_uid, "--format", "json"))
            events = [entry["event"]["event_type"] for entry in timeline["entries"]]
            assert _in_order(events, STAGES), events
            assert "instance_duplicate" not in events  # Orthanc forwarded each image once
            received = [entry["event"] for entry in timeline["entries"] if entry["event"]["event_type"] == STAGES[0]]
            assert len(received) == len(study)
