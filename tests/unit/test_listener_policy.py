"""Association policy and the low-disk rule, as pure decisions."""

from __future__ import annotations

from typing import Any

import pytest

from radtrace.config import ListenerSettings
from radtrace.dicom_listener.policy import AssociationRequest, caller_allowed, check_association

pytestmark = pytest.mark.unit

SETTINGS = ListenerSettings(
    allowed_callers=[{"ae_title": "PACS"}, {"ae_title": "MODALITY", "host": "192.168.10.0/24"}],  # type: ignore[list-item]
    max_associations=2,
    min_free_bytes=1000,
)


def request(**changes: Any) -> AssociationRequest:
    values: dict[str, Any] = {
        "calling_ae": "PACS",
        "called_ae": "RADTRACE",
        "peer_host": "10.1.2.3",
        "active_associations": 1,
        "free_bytes": 10_000,
    }
    return AssociationRequest(**(values | changes))


def test_an_allowed_caller_addressing_us_is_admitted() -> None:
    assert check_association(request(), SETTINGS) is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"calling_ae": "STRANGER"}, (1, 1, 3)),
        ({"calling_ae": "MODALITY", "peer_host": "192.168.11.5"}, (1, 1, 3)),
        ({"called_ae": "OTHER"}, (1, 1, 7)),
        ({"active_associations": 3}, (2, 3, 2)),
        ({"free_bytes": 999}, (2, 3, 1)),
    ],
)
def test_each_refusal_carries_its_ps38_result_source_and_reason(
    changes: dict[str, Any], expected: tuple[int, int, int]
) -> None:
    rejection = check_association(request(**changes), SETTINGS)
    assert rejection is not None
    assert (rejection.result, rejection.source, rejection.diagnostic) == expected
    assert rejection.reason


def test_source_network_pins_a_caller_and_titles_are_compared_without_padding() -> None:
    assert caller_allowed("MODALITY", "192.168.10.77", SETTINGS.allowed_callers)
    assert caller_allowed("PACS  ", "::1", SETTINGS.allowed_callers)
    assert not caller_allowed("MODALITY", "not-an-address", SETTINGS.allowed_callers)


def test_accept_unknown_callers_and_an_unchecked_called_title() -> None:
    relaxed = SETTINGS.model_copy(update={"accept_unknown_callers": True, "check_called_ae": False})
    assert check_association(request(calling_ae="ANYONE", called_ae="WHATEVER"), relaxed) is None
