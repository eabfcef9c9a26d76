"""The C-STORE SCU against dcmtk's storescp told to misbehave (--abort-during, --abort-after, --sleep-during,
--refuse): an independent PACS implementation, not ours. Each store ends within its timeout with the right kind of
error; a slow PACS within the timeout is a delivery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dicom_peer_support import storescp
from radtrace.config import DicomDestination, ReportingSettings
from radtrace.errors import DispatchError, DispatchRejectedError, PeerUnavailableError
from radtrace.reporting.dispatch.cstore import AssociationRejectedError, store_instance
from radtrace.reporting.sr import build_sr, sr_bytes
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

AE_TITLE = "DCMTKPACS"
# What a send that fails at once, or at a 1 s timeout, may take: a third of the 30 s the wrong behaviour costs here
# (waiting out a 30 s timeout, or storescp's 30 s sleep), not the timeout plus a margin a busy machine can eat.
AT_ONCE_S = 10.0


@contextmanager
def _storescp(*options: str) -> Iterator[DicomDestination]:
    with storescp("--ignore", "-aet", AE_TITLE, *options) as port:
        yield DicomDestination(ae_title=AE_TITLE, host="127.0.0.1", port=port)


def _store(destination: DicomDestination, timeout_s: float) -> tuple[int | Exception, float]:
    reading, sources = sr_cases()["normal"]
    payload = sr_bytes(build_sr(reading, sources, settings=ReportingSettings(), revision=1))
    started = time.monotonic()
    try:
        outcome: int | Exception = store_instance(
            payload, destination, calling_ae_title="RADTRACE", timeout_s=timeout_s
        ).status
    except (DispatchError, PeerUnavailableError, DispatchRejectedError) as exc:
        outcome = exc
    return outcome, time.monotonic() - started


@pytest.mark.parametrize("option", ["--abort-during", "--abort-after"])
def test_storescp_aborting_the_association_is_a_retryable_failure_at_once(option: str) -> None:
    with _storescp(option) as destination:
        outcome, elapsed = _store(destination, timeout_s=30)
    assert isinstance(outcome, DispatchError)
    assert outcome.retryable
    assert elapsed < AT_ONCE_S  # not the 30 s timeout waited out


def test_storescp_sleeping_during_the_store_ends_at_the_timeout() -> None:
    with _storescp("--sleep-during", "30") as destination:
        outcome, elapsed = _store(destination, timeout_s=1)
    assert isinstance(outcome, DispatchError)
    assert outcome.retryable
    assert "no C-STORE response" in outcome.reason
    assert elapsed < AT_ONCE_S  # not storescp's 30 s sleep


def test_storescp_slow_but_within_the_timeout_is_a_delivery() -> None:
    with _storescp("--sleep-during", "1") as destination:
        outcome, _ = _store(destination, timeout_s=10)
    assert outcome == 0x0000


def test_storescp_refusing_the_association_is_permanent_and_says_why() -> None:
    """storescp closes right after its A-ASSOCIATE-RJ; about one time in eight pynetdicom sees the close first and
    ends the association as aborted. The RJ's bytes were read all the same (scu.PeerAnswer), so every try names
    why (before: 5 of 40 said only 'no association (refused, aborted or timed out)'). Its 1/1/1 is a permanent
    rejection (PS3.8 9.3.4): not retried (test_followups_dispatch_permanent_rejection)."""
    with _storescp("--refuse") as destination:
        outcomes = [_store(destination, timeout_s=30) for _ in range(3)]
    assert all(isinstance(outcome, AssociationRejectedError) for outcome, _ in outcomes)
    assert all(elapsed < AT_ONCE_S for _, elapsed in outcomes)  # not the 30 s timeout waited out
    reasons = [str(outcome) for outcome, _ in outcomes]
    words = "rejected the association (A-ASSOCIATE-RJ 1/1/1: rejected permanent by the service user: no reason given)"
    assert all(words in r for r in reasons), reasons
