"""`radtrace listen` and `radtrace send` as processes; kill -9 of the listener during a burst."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom import dcmread

from listener_support import listener_env, start_listener
from radtrace.dicom_listener.scu import SendResult, send_files
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Instance, Revision, RevisionState
from radtrace.testing.studies import ImageSpec, StudySpec, make_image, write_study
from tests_support import free_port_pair, radtrace

pytestmark = pytest.mark.integration


def test_kill_9_during_a_burst_loses_nothing_acknowledged(
    tmp_path: Path, database_url: str, listener_port: int
) -> None:
    env = listener_env(tmp_path, listener_port, database_url)
    migrated = Store.from_url(database_url)
    upgrade(migrated)  # in-process: quicker than 'radtrace db upgrade' (that command has its own tests)
    migrated.dispose()
    spec = StudySpec(study_uid="1.2.826.0.1.3680043.8.498.99")
    files = write_study([make_image(spec, ImageSpec(), 1, n) for n in range(1, 25)], tmp_path / "in")
    listener = start_listener(env, listener_port)
    acknowledged: list[SendResult] = []

    def burst() -> None:
        send_files(
            files,
            "127.0.0.1",
            listener_port,
            calling_ae="PACS",
            called_ae="RADTRACE",
            timeout_s=3,
            progress=lambda r: acknowledged.append(r) if r.status == 0 else None,
        )

    sender = threading.Thread(target=burst)
    sender.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    listener.send_signal(signal.SIGKILL)
    listener.communicate()
    sender.join(30)
    assert 6 <= len(acknowledged) < len(files)

    store = Store.from_url(database_url)
    spool = tmp_path / "radtrace" / "spool"
    with store.session() as session:
        stored = {i.sop_instance_uid: i for i in session.scalars(sa.select(Instance))}
    for result in acknowledged:  # every 0x0000 is in the database and the spool
        assert dcmread(result.path, stop_before_pixels=True).SOPInstanceUID in stored
    for instance in stored.values():  # and every row's file is whole
        assert hashlib.sha256((spool / instance.path).read_bytes()).hexdigest() == instance.sha256

    restarted = start_listener(env, listener_port)
    try:
        assert not list((spool / ".incoming").iterdir())
        sent = radtrace("send", "--port", str(listener_port), "--calling-ae", "PACS", str(tmp_path / "in"), env=env)
        assert sent.returncode == 0, sent.stderr
        assert "0x0000" in sent.stdout
        # The study left receiving by the kill completed after the restart (revision 1); the rest,
        # sent after it had been queued, opened revision 2.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with store.session() as session:
                states = [r.state for r in session.scalars(sa.select(Revision).order_by(Revision.number))]
            if states == [RevisionState.QUEUED, RevisionState.QUEUED]:
                break
            time.sleep(0.2)
        assert states == [RevisionState.QUEUED, RevisionState.QUEUED]
    finally:
        restarted.send_signal(signal.SIGTERM)
        output = restarted.communicate(timeout=30)[0]
    assert restarted.returncode == 0, output
    with store.session() as session:
        first_revision = session.scalars(sa.select(Instance).where(Instance.revision_id == 1)).all()
        assert {i.sop_instance_uid for i in first_revision} == set(stored)
        assert len(session.scalars(sa.select(Instance)).all()) == len(files)
        events = session.execute(sa.text("SELECT event_type FROM audit_events")).scalars().all()
    store.dispose()
    assert "application_stopped" in events


def _metrics_page(url: str, seconds: float = 20) -> str:
    """The page at ``url``, waiting for its server: each listener process starts its metrics port on its own, and
    on a loaded machine the second may not answer yet when the first has stored its share (Connection refused)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as page:  # noqa: S310 - an http://127.0.0.1 URL of ours
                return str(page.read().decode())
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_several_processes_share_the_port_and_each_serves_its_metrics(tmp_path: Path, listener_port: int) -> None:
    from radtrace.dicom_listener.dcmtk import storescu

    metrics_port = free_port_pair()  # process N serves metrics on metrics_port + N
    env = listener_env(tmp_path, listener_port, f"sqlite:///{tmp_path / 'radtrace.db'}") | {
        "RADTRACE_LISTENER__PROCESSES": "2",
        "RADTRACE_LISTENER__METRICS_PORT": str(metrics_port),
    }
    files = write_study([make_image(StudySpec(), ImageSpec(), 1, n) for n in range(1, 9)], tmp_path / "in")
    listener = start_listener(env, listener_port)
    try:
        results: list[int] = []
        senders = [
            threading.Thread(target=lambda part=part: results.append(storescu(part, listener_port).returncode))
            for part in (files[:4], files[4:])
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert results == [0, 0]
        received = 0.0
        for index in range(2):
            text = _metrics_page(f"http://127.0.0.1:{metrics_port + index}/metrics")
            received += sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith(f'radtrace_listener_instances_total{{outcome="received",port="{listener_port}"')
            )
        assert received == len(files)
        _one_source_holds_its_share_across_the_processes(listener, listener_port)
    finally:
        listener.send_signal(signal.SIGTERM)
        output = listener.communicate(timeout=30)[0]
    assert listener.returncode == 0, output


def _one_source_holds_its_share_across_the_processes(listener: subprocess.Popen[str], port: int) -> None:
    """listener.max_associations_per_source (5 of the default 10) bounds a source over both processes: before, each
    process counted its own, and one source held up to 5 in each. A process killed -9 no longer counts."""
    from pynetdicom import AE
    from pynetdicom.association import Association

    def hold() -> Association:
        peer = AE(ae_title="PACS")
        peer.add_requested_context("1.2.840.10008.1.1")
        peer.acse_timeout = peer.network_timeout = 10
        return peer.associate("127.0.0.1", port, ae_title="RADTRACE", bind_address=("127.0.0.2", 0))

    held = [hold() for _ in range(12)]
    try:
        assert sum(a.is_established for a in held) == 5
        children = Path(f"/proc/{listener.pid}/task/{listener.pid}/children").read_text().split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        time.sleep(1.0)  # its associations end (the peers see the connection close); the parent clears its counts
        still = sum(a.is_established for a in held)
        held += [hold() for _ in range(6)]  # all to the process left
        assert sum(a.is_established for a in held) == 5, still
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.abort()
