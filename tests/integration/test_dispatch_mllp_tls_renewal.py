"""The RIS's TLS files renewed on disk while the dispatcher runs are used from the next ORU, without a restart.

A hospital renews certificates at night and does not restart radtrace for it. Before, the production HL7 sender
loaded ``dispatch.ris``'s TLS context at the first ORU and kept it for the life of the process: a renewed client
certificate, or a CA bundle holding the RIS's new CA, went unused, and once the RIS presented its renewed certificate
(or refused the old client one) every ORU waited in the outbox until someone restarted the dispatcher. One sender is
used across the sends here, as the dispatcher does; real TLS receivers (python-hl7's MLLP server under asyncio's TLS),
certificates from :func:`radtrace.testing.atna.make_pki`, files replaced by rename (as certbot or an Ansible copy
does) and rewritten in place.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from certificate_support import renamed_over
from mllp_support import mllp_receiver, ris_tls
from radtrace.config import ReportingSettings, load_settings
from radtrace.errors import ConfigError
from radtrace.reporting.dispatch.kinds import KIND_HL7
from radtrace.reporting.dispatch.senders import Sender, default_senders
from radtrace.reporting.hl7 import build_oru
from radtrace.testing.atna import Pki, make_pki
from radtrace.testing.services import free_port
from reporting_support import sr_cases

pytestmark = pytest.mark.integration

SR_UID = "1.2.826.0.1.3680043.8.498.7"
SENDERS = "radtrace.reporting.dispatch.senders"


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("old-pki"))


@pytest.fixture(scope="module")
def new(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("new-pki"))  # the renewal: another CA, server and client certificate


def _files(folder: Path, pki: Pki) -> dict[str, Path]:
    """``dispatch.ris``'s files under ``folder``, as first installed (from ``pki``)."""
    folder.mkdir()
    files = {"ca_bundle": folder / "ca.pem", "certificate": folder / "client.pem", "private_key": folder / "client.key"}
    for setting, source in (("ca_bundle", pki.ca), ("certificate", pki.client_cert), ("private_key", pki.client_key)):
        shutil.copyfile(source, files[setting])
    return files


def _sender(tmp_path: Path, port: int, files: dict[str, Path]) -> Sender:
    settings = load_settings(
        data_dir=tmp_path / "var",
        dispatch={"ris": {"host": "127.0.0.1", "port": port, "timeout_s": 10, "tls": True, **files}},
    )
    return default_senders(settings.dispatch)[KIND_HL7]


def _oru() -> tuple[bytes, str]:
    reading, sources = sr_cases()["typical"]
    oru = build_oru(
        reading, sources[0], settings=ReportingSettings(), sr_sop_instance_uid="1.2.826.0.1.3680043.8.498.7"
    )
    return oru.encode(), oru.control_id


def test_a_renewed_ca_bundle_and_client_certificate_are_used_from_the_next_oru(
    tmp_path: Path, old: Pki, new: Pki
) -> None:
    payload, control_id = _oru()
    files = _files(tmp_path / "tls", old)
    port = free_port()
    send = _sender(tmp_path, port, files)
    with mllp_receiver(["AA"], port=port, tls=ris_tls(old, old)) as ris:
        assert send(f"127.0.0.1:{port}", payload) is None  # AA
        assert ris.control_ids == [control_id]
    # the night's renewal: the RIS presents a certificate of the new CA and takes client certificates of it only; our
    # CA bundle, certificate and key are renamed over on disk, radtrace is not restarted
    for setting, source in (("ca_bundle", new.ca), ("certificate", new.client_cert), ("private_key", new.client_key)):
        renamed_over(files[setting], source)
    with mllp_receiver(["AA"], port=port, tls=ris_tls(new, new)) as ris:
        assert send(f"127.0.0.1:{port}", payload) is None  # before: PeerUnavailableError, the RIS's certificate refused
        assert ris.control_ids == [control_id]


def test_a_renewal_caught_half_way_keeps_the_files_loaded_before_until_the_new_ones_load_together(
    tmp_path: Path, old: Pki, new: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """The client certificate rewritten in place, its key not yet (they do not load together): the ORUs still leave
    with the pair loaded before, said once in the log; once the key is there too, the new pair is used. The RIS's
    certificate stays of the old CA, which stays in our bundle."""
    payload, control_id = _oru()
    files = _files(tmp_path / "tls", old)
    port = free_port()
    send = _sender(tmp_path, port, files)
    with mllp_receiver(["AA"] * 3, port=port, tls=ris_tls(old, old)) as ris:
        assert send(f"127.0.0.1:{port}", payload) is None
        files["certificate"].write_bytes(new.client_cert.read_bytes())  # in place: the same file, its key not yet
        with caplog.at_level(logging.INFO, logger=SENDERS):
            assert send(f"127.0.0.1:{port}", payload) is None  # not a ConfigError: the ORU is not failed for good
            assert send(f"127.0.0.1:{port}", payload) is None
        assert ris.control_ids == [control_id] * 3
    [said] = [record.getMessage() for record in caplog.records if record.name == SENDERS]  # once, not at each send
    assert said.startswith(
        "dispatch.ris files changed on disk but cannot be loaded (cannot load dispatch.ris.certificate"
    )
    assert said.endswith("still using the ones loaded before, and trying again at each send")
    caplog.clear()
    files["private_key"].write_bytes(new.client_key.read_bytes())
    with mllp_receiver(["AA"], port=port, tls=ris_tls(old, new)) as ris, caplog.at_level(logging.INFO):
        assert send(f"127.0.0.1:{port}", payload) is None  # before: refused, the old client certificate still sent
        assert ris.control_ids == [control_id]
    assert "dispatch.ris files changed on disk: loaded again" in caplog.messages


def test_the_first_oru_with_files_that_do_not_load_is_refused_naming_the_setting(
    tmp_path: Path, old: Pki, new: Pki
) -> None:
    """Nothing loaded before to fall back on: the error, as when the context was loaded once."""
    files = _files(tmp_path / "tls", old)
    shutil.copyfile(new.client_key, files["private_key"])
    port = free_port()
    with pytest.raises(ConfigError, match=r"cannot load dispatch\.ris\.certificate .* with dispatch\.ris\.private_key"):
        _sender(tmp_path, port, files)(f"127.0.0.1:{port}", _oru()[0])
