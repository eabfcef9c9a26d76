"""The per-source association limit as a pure decision, and its remedy in the log line."""

from __future__ import annotations

import pytest

from radtrace.config import ListenerSettings
from radtrace.dicom_listener.admission import Admission
from radtrace.dicom_listener.policy import AssociationRequest, check_association, how_to_allow

pytestmark = pytest.mark.unit


def _request(active: int, from_source: int) -> AssociationRequest:
    return AssociationRequest("PACS", "RADTRACE", "10.1.2.3", active, 10**12, active_from_source=from_source)


def test_the_per_source_limit_defaults_to_half_the_slots_and_can_be_set() -> None:
    assert ListenerSettings(max_associations=10).per_source_associations == 5
    assert ListenerSettings(max_associations=1).per_source_associations == 1
    assert ListenerSettings(max_associations=10, max_associations_per_source=10).per_source_associations == 10
    assert ListenerSettings(max_associations=4, max_associations_per_source=9).per_source_associations == 4


def test_a_source_past_its_share_is_refused_transient_local_limit_exceeded() -> None:
    settings = ListenerSettings(allowed_callers=[{"ae_title": "PACS"}], max_associations=10)  # type: ignore[list-item]
    assert check_association(_request(active=6, from_source=5), settings) is None
    rejection = check_association(_request(active=6, from_source=6), settings)
    assert rejection is not None
    assert (rejection.result, rejection.source, rejection.diagnostic) == (2, 3, 2)
    assert rejection.reason == "too many concurrent associations from this source"
    hint = how_to_allow(rejection, _request(active=6, from_source=6), settings)
    assert "listener.max_associations_per_source" in hint


def test_admission_counts_the_slots_a_source_holds() -> None:
    admission = Admission(ListenerSettings())
    first, second, other = (admission.open(host) for host in ("10.0.0.1", "10.0.0.1", "10.0.0.2"))
    assert not isinstance(first, str)
    assert not isinstance(second, str)
    assert not isinstance(other, str)
    admission.admit(first)
    admission.admit(other)
    assert admission.held_by("10.0.0.1") == 1  # the half-open one holds no slot
    admission.admit(second)
    assert admission.held_by("10.0.0.1") == 2
    admission.release(first)
    assert admission.held_by("10.0.0.1") == 1


def test_a_full_listener_says_so_before_naming_the_source_share() -> None:
    """With every slot taken the sender is told the listener is full (listener.max_associations), even when it
    also holds its whole share: that is what the admin must look at first."""
    settings = ListenerSettings(allowed_callers=[{"ae_title": "PACS"}], max_associations=2)  # type: ignore[list-item]
    rejection = check_association(_request(active=3, from_source=3), settings)
    assert rejection is not None
    assert rejection.reason == "too many concurrent associations"
    assert how_to_allow(rejection, _request(active=3, from_source=3), settings) == "listener.max_associations is 2"
