"""``dispatch.pacs[i]``'s TLS settings (``ca_bundle``, ``server_name``, ``certificate``, ``private_key``) in the
configuration and the start-up ``PACS TLS`` check, as ``dispatch.ris``'s are. Before, ``dispatch.pacs`` had ``tls``
only (a client certificate could not be given) and the check looked at this machine's CA store alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certificate_support import Authority
from radtrace.config import load_settings
from radtrace.errors import ConfigError
from radtrace.preflight.tls import pacs_tls_check


def _pacs(port: int, **tls: object) -> dict[str, object]:
    return {"ae_title": f"PACS{port}", "host": "pacs.example", "port": port, **tls}


def test_a_client_certificate_without_tls_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="certificate set but tls is off"):
        load_settings(data_dir=tmp_path, dispatch={"pacs": [_pacs(104, certificate="c.pem", private_key="c.key")]})
    with pytest.raises(ConfigError, match="certificate and private_key go together"):
        load_settings(data_dir=tmp_path, dispatch={"pacs": [_pacs(104, tls=True, certificate="c.pem")]})


def test_the_pacs_tls_check_names_a_missing_client_key_by_its_setting_and_variable(tmp_path: Path) -> None:
    ca = Authority.root(tmp_path / "ca", "hospital CA")
    client = ca.issue("client", "RADTRACE", server=False)
    settings = load_settings(data_dir=tmp_path, dispatch={"pacs": [
        _pacs(104),
        _pacs(2762, tls=True, ca_bundle=str(ca.certificate), certificate=str(client.certificate),
              private_key=str(tmp_path / "gone.key")),
    ]})  # fmt: skip
    check = pacs_tls_check(settings)
    assert check is not None
    assert (check.name, check.status, check.config_error) == ("PACS TLS", "failed", True)
    assert check.detail.startswith(
        f"dispatch.pacs[1].private_key (in RADTRACE_DISPATCH__PACS) {tmp_path / 'gone.key'} does not exist"
    )


def test_the_pacs_tls_check_says_a_client_certificate_ending_soon(tmp_path: Path) -> None:
    ca = Authority.root(tmp_path / "ca", "hospital CA")
    client = ca.issue("client", "RADTRACE", server=False, end=timedelta(days=3))
    pacs = _pacs(2762, tls=True, ca_bundle=str(ca.certificate), certificate=str(client.certificate),
                 private_key=str(client.key))  # fmt: skip
    settings = load_settings(data_dir=tmp_path, dispatch={"pacs": [pacs]})
    check = pacs_tls_check(settings, now=datetime.now(UTC))
    assert check is not None
    assert check.status == "warning"
    assert check.detail.startswith(f"dispatch.pacs[0].certificate (in RADTRACE_DISPATCH__PACS) {client.certificate}")
    assert "in 2 day(s): renew it before then" in check.detail
