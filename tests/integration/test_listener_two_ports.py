"""One listener, two ports: DICOM over TLS on ``listener.port`` and without TLS on a second port (modalities that cannot
do TLS), counted together.

Before, a site needing both ran two ``radtrace listen`` processes with two data directories, each with its own
association counts and negotiation budgets: a source got the per-source share on each (report-dedupe.md: with
``max_associations_per_source = 1`` the same host held one association on each port). Here both ports are served by
the same handlers and admission: one share, one ``max_associations``, one budget per source.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pynetdicom import AE

from certificate_support import listener_pki
from listener_support import audit_payloads, listener_env, listener_settings, rows, running
from radtrace.config import Settings
from radtrace.dicom_listener.ae import Listener
from radtrace.dicom_listener.dcmtk import echoscu, storescu
from radtrace.errors import ConfigError
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision, RevisionState
from radtrace.testing.services import free_port
from radtrace.testing.studies import ImageSpec, StudySpec, make_image, write_study
from tests_support import radtrace

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("echoscu") is None or shutil.which("openssl") is None, reason="needs dcmtk, openssl"
    ),
]


def _settings(tmp_path: Path, port: int, **listener: object) -> tuple[Settings, dict[str, Path]]:
    pki = listener_pki(tmp_path / "pki")
    tls = {"enabled": True, "certificate": str(pki["server.pem"]), "private_key": str(pki["server.key"])}
    return listener_settings(tmp_path, port, tls=tls, **listener), pki


def _tls_echo(port: int, pki: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    return echoscu(port, options=["+tla", "+cf", str(pki["ca.pem"])])


def test_one_listener_serves_tls_on_its_port_and_plain_dicom_on_the_other(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    settings, pki = _settings(tmp_path, listener_port)
    plain_port = free_port()
    with running(settings, store, plain_port=plain_port) as listener:
        assert listener.ports == [listener_port, plain_port]
        tls_on_tls = _tls_echo(listener_port, pki)
        plain_on_plain = echoscu(plain_port)
        plain_on_tls = echoscu(listener_port, timeout=60)
        tls_on_plain = _tls_echo(plain_port, pki)
    assert tls_on_tls.returncode == 0, tls_on_tls.stderr
    assert plain_on_plain.returncode == 0, plain_on_plain.stderr
    assert plain_on_tls.returncode != 0  # the TLS port takes TLS only, as before
    assert tls_on_plain.returncode != 0
    [started] = [json.loads(p) for p in audit_payloads(store, "application_started")]
    assert (started["port"], started["plain_port"]) == (listener_port, plain_port)


def test_a_source_holds_its_share_over_both_ports_not_on_each(tmp_path: Path, store: Store, listener_port: int) -> None:
    settings, pki = _settings(tmp_path, listener_port, max_associations_per_source=1)
    plain_port = free_port()
    client = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    peer = AE(ae_title="PACS")
    peer.add_requested_context("1.2.840.10008.1.1")
    with running(settings, store, plain_port=plain_port):
        held = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE", tls_args=(client, "localhost"))
        assert held.is_established  # the source's one association, over TLS
        try:
            refused = echoscu(plain_port)  # the same source on the plain port: past its share
        finally:
            held.release()
        after = echoscu(plain_port)
    assert refused.returncode != 0
    rejected = audit_payloads(store, "association_rejected")
    assert any("too many concurrent associations from this source" in p for p in rejected), rejected
    assert after.returncode == 0, after.stderr  # its share is free again once the TLS association ended


def test_a_plain_port_needs_tls_on_the_listener_port(tmp_path: Path, store: Store, listener_port: int) -> None:
    plain = listener_settings(tmp_path, listener_port)
    with pytest.raises(ConfigError, match="plain port"):
        Listener(plain, store, plain_port=free_port())
    settings, _ = _settings(tmp_path, listener_port)
    with pytest.raises(ConfigError, match="another port"):
        Listener(settings, store, plain_port=listener_port)


# --- the real `radtrace listen`: listener.plain_port and listener.plain_allowed_callers -----------------------------


def _two_port_env(
    tmp_path: Path, port: int, plain_port: int, database_url: str
) -> tuple[dict[str, str], dict[str, Path]]:
    """A listener with TLS on ``port`` for PACS and MODALITY, and MODALITY alone (from 127.0.0.1) on ``plain_port``."""
    pki = listener_pki(tmp_path / "pki")
    env = listener_env(tmp_path, port, database_url) | {
        "RADTRACE_LISTENER__ALLOWED_CALLERS": '[{"ae_title": "PACS"}, {"ae_title": "MODALITY"}]',
        "RADTRACE_LISTENER__TLS__ENABLED": "true",
        "RADTRACE_LISTENER__TLS__CERTIFICATE": str(pki["server.pem"]),
        "RADTRACE_LISTENER__TLS__PRIVATE_KEY": str(pki["server.key"]),
        "RADTRACE_LISTENER__PLAIN_PORT": str(plain_port),
        "RADTRACE_LISTENER__PLAIN_ALLOWED_CALLERS": '[{"ae_title": "MODALITY", "host": "127.0.0.1"}]',
        "RADTRACE_LISTENER__MAX_ASSOCIATIONS_PER_SOURCE": "1",
    }
    return env, pki


def _start(env: dict[str, str], plain_port: int) -> subprocess.Popen[str]:
    """``radtrace listen`` with ``env``; returns once MODALITY's plain echo gets through."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
    process = subprocess.Popen(
        [sys.executable, "-m", "radtrace", "listen"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while echoscu(plain_port, calling="MODALITY").returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"listener did not start: {process.communicate()[0][-2000:]}")
        time.sleep(0.2)
    return process


def _stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    process.send_signal(sig)
    return process.communicate(timeout=60)[0]


def test_radtrace_listen_serves_tls_and_plain_with_the_plain_callers_rules_and_one_share(
    tmp_path: Path, database_url: str, listener_port: int
) -> None:
    plain_port = free_port()
    env, pki = _two_port_env(tmp_path, listener_port, plain_port, database_url)
    store = Store.from_url(database_url)
    upgrade(store)
    spec = StudySpec(study_uid="1.2.826.0.1.3680043.8.498.7731")
    film, second = write_study([make_image(spec, ImageSpec(), 1, n) for n in (1, 2)], tmp_path / "in")
    env["RADTRACE_LISTENER__SETTLE_SECONDS"] = "5.0"  # both instances within one settle, on a loaded machine too
    env["RADTRACE_LISTENER__PROCESSES"] = "2"  # both ports in each process (SO_REUSEPORT), one share over all
    listener = _start(env, plain_port)
    try:
        # PACS is admitted over TLS only: refused on the plain port as a calling AE not recognised (1/1/3).
        pacs_plain = echoscu(plain_port, calling="PACS")
        pacs_tls = _tls_echo(listener_port, pki)
        # MODALITY, admitted on the plain port, stores a film there; PACS the study's second over TLS.
        stored = storescu([film], plain_port, calling="MODALITY")
        stored_tls = storescu([second], listener_port, options=["+tla", "+cf", str(pki["ca.pem"])])
        # One share over both ports and both processes (max_associations_per_source = 1): a TLS association held
        # by 127.0.0.1 leaves it none on the plain port, whichever process the kernel hands that connection to.
        client = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        peer = AE(ae_title="PACS")
        peer.add_requested_context("1.2.840.10008.1.1")
        held = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE", tls_args=(client, "localhost"))
        assert held.is_established
        try:
            over_share = echoscu(plain_port, calling="MODALITY")
        finally:
            held.release()
        after = echoscu(plain_port, calling="MODALITY")
        deadline = time.monotonic() + 30
        while not audit_payloads(store, "study_queued") and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        log = _stop(listener)
    assert pacs_plain.returncode != 0
    assert "Rejected Permanent" in pacs_plain.stderr, pacs_plain.stderr
    assert "Calling AE Title Not Recognized" in pacs_plain.stderr, pacs_plain.stderr
    assert pacs_tls.returncode == 0, pacs_tls.stderr
    assert stored.returncode == 0, stored.stderr
    assert stored_tls.returncode == 0, stored_tls.stderr
    assert over_share.returncode != 0
    assert "Rejected Transient" in over_share.stderr, over_share.stderr
    assert "Local Limit Exceeded" in over_share.stderr, over_share.stderr
    assert after.returncode == 0, after.stderr

    rejected = [json.loads(p) for p in audit_payloads(store, "association_rejected")]
    by_reason = {p["reason"]: p for p in rejected}
    not_allowed = by_reason["calling AE title not allowed"]
    assert (not_allowed["diagnostic"], not_allowed["port"], not_allowed["tls"]) == (3, plain_port, False)
    share = by_reason["too many concurrent associations from this source"]
    assert (share["diagnostic"], share["port"], share["tls"]) == (2, plain_port, False)
    assert "admitted over TLS on listener.port" in log, log
    assert "RADTRACE_LISTENER__PLAIN_ALLOWED_CALLERS" in log, log
    assert f"(TLS) and 127.0.0.1:{plain_port} (without TLS)" in log, log

    doors = [(p["port"], p["tls"]) for p in map(json.loads, audit_payloads(store, "instance_received"))]
    assert sorted(doors) == sorted([(plain_port, False), (listener_port, True)])  # one study, one revision
    assert len(audit_payloads(store, "study_queued")) == 1
    revisions = rows(store, Revision)
    assert [(r.number, r.state) for r in revisions] == [(1, RevisionState.QUEUED)]
    both = [{"port": listener_port, "tls": True}, {"port": plain_port, "tls": False}]
    for event in ("application_started", "application_stopped"):
        assert [json.loads(p)["ports"] for p in audit_payloads(store, event)] == [both, both]
    store.dispose()


def test_radtrace_listen_after_kill_9_takes_both_ports_again_and_locks_both(
    tmp_path: Path, database_url: str, listener_port: int
) -> None:
    plain_port = free_port()
    env, pki = _two_port_env(tmp_path, listener_port, plain_port, database_url)
    store = Store.from_url(database_url)
    upgrade(store)
    first = _start(env, plain_port)
    _stop(first, signal.SIGKILL)
    gone = echoscu(plain_port, calling="MODALITY", timeout=10), _tls_echo(listener_port, pki)
    # Started again at once: the locks of both ports died with the process; both ports are served.
    again = _start(env, plain_port)
    try:
        tls = _tls_echo(listener_port, pki)
        # A second listener whose listener.port is this one's plain port is refused while this one runs.
        other = tmp_path / "other"
        clash = radtrace(
            "listen",
            env=listener_env(other, plain_port, f"sqlite:///{other / 'radtrace.db'}"),
            timeout=120,
        )
    finally:
        _stop(again)
    assert [process.returncode != 0 for process in gone] == [True, True]
    assert tls.returncode == 0, tls.stderr
    started = [json.loads(p)["ports"] for p in audit_payloads(store, "application_started")]
    assert started == [[{"port": listener_port, "tls": True}, {"port": plain_port, "tls": False}]] * 2
    store.dispose()
    assert clash.returncode == 2, clash.stderr
    assert f"already listens on port {plain_port}" in clash.stderr, clash.stderr
    assert f"plain_port {plain_port}" in clash.stderr, clash.stderr


def test_radtrace_listen_processes_end_with_their_parent_killed_and_a_restart_takes_both_ports(
    tmp_path: Path, listener_port: int
) -> None:
    """kill -9 of the parent of listener.processes: its children held both ports and the locks (inherited), so a
    restart was refused as 'another radtrace listener (pid <dead parent>)' while the orphans went on serving."""
    plain_port = free_port()
    database_url = f"sqlite:///{tmp_path / 'radtrace.db'}"
    env, pki = _two_port_env(tmp_path, listener_port, plain_port, database_url)
    env["RADTRACE_LISTENER__PROCESSES"] = "2"
    store = Store.from_url(database_url)
    upgrade(store)
    store.dispose()
    first = _start(env, plain_port)
    first.kill()  # SIGKILL: the parent only
    deadline = time.monotonic() + 30
    while echoscu(plain_port, calling="MODALITY", timeout=10).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    first.communicate(timeout=30)  # the children held its output open: they are gone too
    again = _start(env, plain_port)
    try:
        tls = _tls_echo(listener_port, pki)
    finally:
        log = _stop(again)
    assert tls.returncode == 0, tls.stderr
    assert "another radtrace listener" not in log, log


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"RADTRACE_LISTENER__TLS__ENABLED": "false"}, "listener.plain_port: Value error, needs listener.tls.enabled"),
        ({"RADTRACE_LISTENER__PLAIN_PORT": "{port}"}, "must be another port than listener.port"),
        ({"RADTRACE_LISTENER__METRICS_PORT": "{plain_port}"}, "is one of the listener's metrics ports"),
        ({"RADTRACE_LISTENER__PLAIN_PORT": ""}, "listener.plain_allowed_callers: Value error, only with"),
        ({"busy": "plain"}, "(listener.plain_port, RADTRACE_LISTENER__PLAIN_PORT)"),
    ],
    ids=["without-tls", "same-port", "metrics-port", "callers-without-port", "plain-port-busy"],
)
def test_radtrace_listen_refuses_a_wrong_plain_port_at_start(
    tmp_path: Path, listener_port: int, change: dict[str, str], named: str
) -> None:
    plain_port = free_port()
    env, _ = _two_port_env(tmp_path, listener_port, plain_port, f"sqlite:///{tmp_path / 'radtrace.db'}")
    values = {"port": str(listener_port), "plain_port": str(plain_port)}
    env |= {k: v.format(**values) for k, v in change.items() if k != "busy"}
    if env["RADTRACE_LISTENER__PLAIN_PORT"] == "":
        del env["RADTRACE_LISTENER__PLAIN_PORT"]
    with socket.socket() as busy:
        if "busy" in change:  # another program listens on the plain port
            busy.bind(("127.0.0.1", plain_port))
            busy.listen()
        refused = radtrace("listen", env=env, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert named in refused.stderr, refused.stderr


def test_refusals_are_audited_per_port_a_scan_of_the_plain_port_apart_from_the_tls_one(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """The same source refused on both ports: one group each (first event and aggregated count, port and tls named),
    and a protocol violation on the plain port (garbage after a socket connect) says the plain port too."""
    settings, pki = _settings(tmp_path, listener_port)
    plain_port = free_port()
    with running(settings, store, plain_port=plain_port):
        for _ in range(3):
            assert _tls_echo_as(listener_port, pki, "SCANNER").returncode != 0
        for _ in range(2):
            assert echoscu(plain_port, calling="SCANNER").returncode != 0
        with socket.create_connection(("127.0.0.1", plain_port), timeout=10) as raw:
            raw.sendall(b"\x09\x00\x00\x00\x00\x04GET ")  # no PDU type 9: aborted as a protocol violation
            raw.settimeout(10)
            with contextlib.suppress(OSError):
                while raw.recv(4096):
                    pass
    # the listener's stop writes the intervals' counts
    rejected = [json.loads(p) for p in audit_payloads(store, "association_rejected")]
    by_door = {
        (p["reason"], p.get("port"), p.get("tls"), p["aggregated"]): p["count"]
        for p in rejected
        if p["reason"] != "association aborted: protocol violation"
    }
    refused = "calling AE title not allowed"
    assert {k: v for k, v in by_door.items() if k[0] == refused} == {
        (refused, listener_port, True, False): 1,
        (refused, listener_port, True, True): 2,
        (refused, plain_port, False, False): 1,
        (refused, plain_port, False, True): 1,
    }, rejected
    [violation] = [p for p in rejected if p["reason"] == "association aborted: protocol violation"]
    assert (violation["port"], violation["tls"]) == (plain_port, False), violation


def _tls_echo_as(port: int, pki: dict[str, Path], calling: str) -> subprocess.CompletedProcess[str]:
    return echoscu(port, calling=calling, options=["+tla", "+cf", str(pki["ca.pem"])])


def test_metrics_say_which_port_refuses_and_which_is_busy(tmp_path: Path, store: Store, listener_port: int) -> None:
    """Every listener series carries port and tls (two values at most): a caller refused on the plain port and one
    held on the TLS port are told apart, and radtrace_listener_associations_active shows the held one by port."""
    settings, pki = _settings(tmp_path, listener_port)
    plain_port = free_port()
    tls_door = {"port": str(listener_port), "tls": "true"}
    plain_door = {"port": str(plain_port), "tls": "false"}
    client = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    peer = AE(ae_title="PACS")
    peer.add_requested_context("1.2.840.10008.1.1")
    with running(settings, store, plain_port=plain_port) as listener:
        metric = listener.metrics.registry.get_sample_value
        for _ in range(3):
            assert echoscu(plain_port, calling="SCANNER").returncode != 0
        assert _tls_echo(listener_port, pki).returncode == 0
        held = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE", tls_args=(client, "localhost"))
        assert held.is_established
        try:
            active = (metric("radtrace_listener_associations_active", tls_door),
                      metric("radtrace_listener_associations_active", plain_door))  # fmt: skip
        finally:
            held.release()
        refused = "calling AE title not allowed"
        assert metric("radtrace_listener_rejections_total", {"reason": refused, **plain_door}) == 3
        assert metric("radtrace_listener_rejections_total", {"reason": refused, **tls_door}) is None
        assert metric("radtrace_listener_associations_total", {"result": "rejected", **plain_door}) == 3
        assert metric("radtrace_listener_associations_total", {"result": "accepted", **tls_door}) == 2
        assert metric("radtrace_listener_echoes_total", tls_door) == 1
    assert active == (1, 0)
    families = {family.name: family for family in listener.metrics.registry.collect()}
    for name in ("radtrace_listener_associations", "radtrace_listener_rejections", "radtrace_listener_echoes"):
        doors = {(s.labels["port"], s.labels["tls"]) for s in families[name].samples}
        assert doors <= {(str(listener_port), "true"), (str(plain_port), "false")}, (name, doors)
