"""A refused caller's log line names the exact setting that would admit it (issue 15: the newcomer's
storescu was refused and the log did not say why or what to change)."""

from __future__ import annotations

import json

import pytest

from radtrace.config import ListenerSettings, load_settings
from radtrace.dicom_listener.policy import AssociationRequest, check_association, how_to_allow

pytestmark = pytest.mark.unit


def _request(calling: str = "MODALITY1", called: str = "RADTRACE") -> AssociationRequest:
    return AssociationRequest(calling, called, "10.1.2.3", active_associations=1, free_bytes=10**12)


def test_an_unknown_caller_is_told_the_setting_with_a_value_that_admits_it() -> None:
    settings = ListenerSettings()
    rejection = check_association(_request(), settings)
    assert rejection is not None
    hint = how_to_allow(rejection, _request(), settings)
    assert "listener.allowed_callers" in hint
    value = hint.split("RADTRACE_LISTENER__ALLOWED_CALLERS='", 1)[1].split("'", 1)[0]
    admitted = load_settings(listener={"allowed_callers": json.loads(value)}).listener
    assert check_association(_request(), admitted) is None  # the value given really lets it in


def test_a_caller_addressing_another_ae_title_is_told_ours() -> None:
    settings = ListenerSettings(allowed_callers=[{"ae_title": "MODALITY1"}])  # type: ignore[list-item]
    request = _request(called="PACS")
    rejection = check_association(request, settings)
    assert rejection is not None
    assert "'RADTRACE'" in how_to_allow(rejection, request, settings)
    assert "listener.check_called_ae" in how_to_allow(rejection, request, settings)
