"""Which callers listener.plain_port admits: listener.plain_allowed_callers against allowed_callers and
accept_unknown_callers, what the refusal's log line tells the operator to change, and serve's line naming both ports."""

from __future__ import annotations

from typing import Any

import pytest

from radtrace.config import ListenerSettings, load_settings
from radtrace.dicom_listener.policy import AssociationRequest, check_association, how_to_allow

pytestmark = pytest.mark.unit

TLS = {"enabled": True, "certificate": "/etc/radtrace/tls/tls.crt", "private_key": "/etc/radtrace/tls/tls.key"}
CALLERS = [{"ae_title": "PACS"}, {"ae_title": "CR-WARD3", "host": "10.1.7.21"}]


def settings(**changes: Any) -> ListenerSettings:
    values: dict[str, Any] = {"port": 2762, "plain_port": 11112, "tls": TLS, "allowed_callers": CALLERS}
    return ListenerSettings(**(values | changes))


def request(calling_ae: str, *, plain: bool, host: str = "10.1.7.21") -> AssociationRequest:
    return AssociationRequest(
        calling_ae=calling_ae,
        called_ae="RADTRACE",
        peer_host=host,
        active_associations=1,
        free_bytes=10**12,
        plain_port=plain,
    )


def admitted(listener: ListenerSettings, calling_ae: str, *, plain: bool, host: str = "10.1.7.21") -> bool:
    return check_association(request(calling_ae, plain=plain, host=host), listener) is None


def test_unset_the_plain_port_admits_whom_the_tls_port_admits() -> None:
    listener = settings()
    for plain in (False, True):
        assert admitted(listener, "PACS", plain=plain)
        assert admitted(listener, "CR-WARD3", plain=plain)
        assert not admitted(listener, "CR-WARD3", plain=plain, host="10.1.7.22")
        assert not admitted(listener, "STRANGER", plain=plain)


def test_set_the_plain_port_admits_only_its_list_and_the_tls_port_is_unchanged() -> None:
    listener = settings(plain_allowed_callers=[{"ae_title": "CR-WARD3", "host": "10.1.7.21"}])
    assert admitted(listener, "PACS", plain=False)
    assert not admitted(listener, "PACS", plain=True)  # kept to TLS
    assert admitted(listener, "CR-WARD3", plain=True)
    assert not admitted(listener, "CR-WARD3", plain=True, host="10.9.9.9")
    rejection = check_association(request("PACS", plain=True), listener)
    assert rejection is not None
    assert (rejection.result, rejection.source, rejection.diagnostic) == (1, 1, 3)


def test_accept_unknown_callers_does_not_widen_a_plain_list_that_is_set() -> None:
    unknown = settings(accept_unknown_callers=True)
    assert admitted(unknown, "STRANGER", plain=False)
    assert admitted(unknown, "STRANGER", plain=True)  # unset: as on listener.port
    listed = settings(accept_unknown_callers=True, plain_allowed_callers=[{"ae_title": "CR-WARD3"}])
    assert admitted(listed, "STRANGER", plain=False)
    assert not admitted(listed, "STRANGER", plain=True)
    assert not admitted(listed, "PACS", plain=True)
    nobody = settings(accept_unknown_callers=True, plain_allowed_callers=[])
    assert not admitted(nobody, "CR-WARD3", plain=True)


def test_the_log_line_names_the_plain_list_and_says_the_caller_is_admitted_over_tls() -> None:
    listener = settings(plain_allowed_callers=[{"ae_title": "CR-WARD3", "host": "10.1.7.21"}])
    refused = request("PACS", plain=True, host="10.1.2.3")
    rejection = check_association(refused, listener)
    assert rejection is not None
    hint = how_to_allow(rejection, refused, listener)
    assert hint.startswith("it is admitted over TLS on listener.port 2762, not without TLS on this port; ")
    assert "listener.plain_allowed_callers, keeping the 1 rule(s) in force" in hint
    assert (
        """RADTRACE_LISTENER__PLAIN_ALLOWED_CALLERS='[{"ae_title":"CR-WARD3","host":"10.1.7.21"},"""
        """{"ae_title":"PACS","host":"10.1.2.3"}]'"""
    ) in hint
    on_tls = request("STRANGER", plain=False, host="10.1.2.3")
    rejection = check_association(on_tls, listener)
    assert rejection is not None
    assert "RADTRACE_LISTENER__ALLOWED_CALLERS=" in how_to_allow(rejection, on_tls, listener)


def test_serve_names_both_ports() -> None:
    from radtrace.supervisor import describe

    loaded = load_settings(listener={"port": 2762, "plain_port": 11112, "tls": TLS}, data_dir="/var/lib/radtrace")
    assert describe(loaded).startswith("DICOM listener RADTRACE on 0.0.0.0:2762 (TLS) and 0.0.0.0:11112 (without TLS);")
