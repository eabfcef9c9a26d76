"""A PACS that answers our C-STORE with some other DIMSE response: never counted as stored.

Before: pynetdicom hands ``send_c_store`` the first DIMSE message that arrives, whatever it is: a PACS (or a proxy
in front of it) answering with a C-ECHO-RSP of status 0000, or with a C-STORE-RSP for another message or another
instance, had the SR counted as delivered though nothing said it was stored. The MLLP side was found so against a
fake RIS answering ``ADT^A01``; this is the same hole on the DICOM side, shown with a hand-made upper-layer peer. Now
the answer must be a C-STORE-RSP to our message (Message ID Being Responded To) about our instance (Affected SOP
Instance UID, where the PACS gives one); anything else is a retryable error that says what came back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dicom_peer_support import store_answering_peer
from radtrace.config import DicomDestination, ReportingSettings
from radtrace.errors import DispatchError
from radtrace.reporting.dispatch.cstore import StoreResult, store_instance
from radtrace.reporting.sr import build_sr, sr_bytes
from reporting_support import sr_cases

pytestmark = pytest.mark.integration


def _payload() -> bytes:
    reading, sources = sr_cases()["normal"]
    return sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))


@contextmanager
def _pacs(answer: str) -> Iterator[DicomDestination]:
    with store_answering_peer(answer) as port:
        yield DicomDestination(ae_title="RAWPACS", host="127.0.0.1", port=port)


@pytest.mark.parametrize("answer", ["echo", "other-message", "other-instance"])
def test_a_response_that_is_not_our_c_store_rsp_is_not_a_delivery(answer: str) -> None:
    with _pacs(answer) as destination, pytest.raises(DispatchError) as caught:
        store_instance(_payload(), destination, calling_ae_title="RADTRACE", timeout_s=5)
    assert caught.value.retryable
    assert "not counted as stored" in caught.value.reason
    assert len(caught.value.reason) < 300


@pytest.mark.parametrize("answer", ["right", "right-without-instance"])
def test_our_c_store_rsp_is_a_delivery_with_or_without_the_instance_uid(answer: str) -> None:
    with _pacs(answer) as destination:
        result = store_instance(_payload(), destination, calling_ae_title="RADTRACE", timeout_s=5)
    assert result == StoreResult(0x0000)
