"""The C-STORE SCU against a real Orthanc, and against SCPs that answer warning and failure statuses."""

from __future__ import annotations

import gc
import io
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset

from dicom_peer_support import AnsweringScp, answering_scp
from orthanc_support import Orthanc, running_orthanc
from radtrace.config import DicomDestination, ReportingSettings
from radtrace.errors import DispatchError, DispatchRejectedError, PeerUnavailableError
from radtrace.reporting.dispatch.cstore import AssociationRejectedError, store_instance
from radtrace.reporting.sr import build_sr, sr_bytes
from radtrace.testing.services import free_port
from reporting_support import sr_cases

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def _file(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("flavour", ["comprehensive-3d", "comprehensive"])
def test_sr_lands_in_the_source_study_on_orthanc(orthanc: Orthanc, flavour: str) -> None:
    reading, sources = sr_cases()["typical"]
    pacs = DicomDestination(ae_title=orthanc.ae_title, host="127.0.0.1", port=orthanc.dicom_port)
    for source in sources:
        assert store_instance(_file(source), pacs, calling_ae_title="RADTRACE").status == 0
    sr = build_sr(reading, sources, settings=ReportingSettings(sr_flavour=flavour), revision=1)

    result = store_instance(sr_bytes(sr), pacs, calling_ae_title="RADTRACE")

    assert (result.status, result.warning) == (0, None)
    [instance_id] = orthanc.find_instance(str(sr.SOPInstanceUID))
    study = orthanc.get(f"/instances/{instance_id}/study")
    assert isinstance(study, dict)
    assert study["MainDicomTags"]["StudyInstanceUID"] == sources[0].StudyInstanceUID
    assert study["PatientMainDicomTags"]["PatientID"] == sources[0].PatientID
    series = orthanc.get(f"/instances/{instance_id}/series")
    assert isinstance(series, dict)
    assert series["MainDicomTags"]["Modality"] == "SR"
    assert "AI DRAFT" in series["MainDicomTags"]["SeriesDescription"]
    tags = orthanc.get(f"/instances/{instance_id}/simplified-tags")
    assert isinstance(tags, dict)
    assert (tags["CompletionFlag"], tags["VerificationFlag"]) == ("COMPLETE", "UNVERIFIED")
    assert len(study["Series"]) == 3  # PA, lateral, and the SR's own series


def test_wrong_called_ae_is_not_a_delivery(orthanc: Orthanc) -> None:
    reading, sources = sr_cases()["normal"]
    sr = build_sr(reading, sources, settings=ReportingSettings(), revision=7)  # a revision never sent here
    wrong = DicomDestination(ae_title="NOT-ORTHANC", host="127.0.0.1", port=orthanc.dicom_port)
    with pytest.raises(
        AssociationRejectedError,  # permanent (PS3.8 9.3.4): not retried; the reason names the setting to change
        match=r"rejected the association \(A-ASSOCIATE-RJ 1/1/7: rejected permanent by the service user: called AE "
        r"title not recognised\): not retried; the PACS does not answer to AE title 'NOT-ORTHANC': set "
        r"dispatch.pacs' ae_title",
    ) as raised:
        store_instance(sr_bytes(sr), wrong, calling_ae_title="RADTRACE")
    assert not raised.value.retryable
    assert orthanc.find_instance(str(sr.SOPInstanceUID)) == []


@pytest.fixture
def fake_pacs() -> Iterator[AnsweringScp]:
    with answering_scp() as scp:
        yield scp


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [(0xA700, DispatchError, True), (0xA900, DispatchRejectedError, False), (0xC000, DispatchRejectedError, False)],
)
def test_failure_status_is_not_a_delivery(
    fake_pacs: AnsweringScp, status: int, error: type[Exception], retryable: bool
) -> None:
    fake_pacs.statuses.append(status)
    port = fake_pacs.port
    reading, sources = sr_cases()["normal"]
    payload = sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))
    pacs = DicomDestination(ae_title="FAKEPACS", host="127.0.0.1", port=port)
    with pytest.raises(error, match=f"0x{status:04X}") as raised:
        store_instance(payload, pacs, calling_ae_title="RADTRACE")
    assert getattr(raised.value, "retryable", None) is retryable
    assert fake_pacs.stored == []  # the PACS kept nothing (0xCxxx is a failure, PS3.7 Annex C)


def test_warning_status_is_stored_and_the_warning_kept(fake_pacs: AnsweringScp) -> None:
    fake_pacs.statuses.append(0xB000)
    port = fake_pacs.port
    reading, sources = sr_cases()["normal"]
    payload = sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))
    result = store_instance(
        payload, DicomDestination(ae_title="FAKEPACS", host="127.0.0.1", port=port), calling_ae_title="RADTRACE"
    )
    assert result.status == 0xB000
    assert result.warning is not None
    assert "0xB000" in result.warning


def test_pacs_that_refuses_3d_sr_is_a_permanent_failure(fake_pacs: AnsweringScp) -> None:
    port = fake_pacs.port
    reading, sources = sr_cases()["normal"]
    payload = sr_bytes(build_sr(reading, sources, settings=ReportingSettings(sr_flavour="comprehensive"), revision=1))
    pacs = DicomDestination(ae_title="FAKEPACS", host="127.0.0.1", port=port)
    with pytest.raises(DispatchRejectedError, match="does not accept SOP class"):
        store_instance(payload, pacs, calling_ae_title="RADTRACE")


# pynetdicom 3.0.4 shuts down but does not close its socket when the connection is refused; the
# ResourceWarning comes when the socket is collected, which this test forces inside its own scope.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning")
def test_nobody_listening_is_retryable() -> None:
    reading, sources = sr_cases()["normal"]
    payload = sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))
    pacs = DicomDestination(ae_title="NOBODY", host="127.0.0.1", port=free_port())
    with pytest.raises(PeerUnavailableError) as raised:
        store_instance(payload, pacs, calling_ae_title="RADTRACE", timeout_s=2)
    assert raised.value.retryable
    gc.collect()
