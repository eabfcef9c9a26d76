"""``radtrace status`` and ``radtrace study show`` tell hospital IT what a wait has behind it, and give commands that
can be pasted (seen from outside, report-firsthour.md):

* a study ``receiving`` for 38 s against a 10 s settle time with no listener running was shown as progress;
* after kill -9 of the dispatcher mid-send, a delivery sat ``pending`` for ~6 minutes with no reason;
* the ``again:`` command left out the ``--config`` the service's settings were in, so pasting it failed;
* with the broker unreachable ``radtrace status`` exited 0 and ``--json`` carried no error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import load_settings
from radtrace.reporting.dispatch import claims
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import OutboxMessage, OutboxState, Revision, RevisionState, Study
from radtrace.testing.services import free_port
from tests_support import radtrace

pytestmark = pytest.mark.integration

UID = "1.2.826.0.1.3680043.8.498.99101"


@dataclass
class Site:
    data_dir: Path
    config: Path
    store: Store

    def status(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return radtrace("--config", str(self.config), *args, env=env)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "site settings.toml"  # a space: the printed command must quote it
    config.write_text(f'data_dir = "{data_dir}"\n[listener]\nsettle_seconds = 10\n', encoding="utf-8")
    store = Store.from_url(load_settings(data_dir=data_dir).store_url)
    upgrade(store)
    yield Site(data_dir, config, store)
    store.dispose()


def _study(site: Site, state: RevisionState, *, opened_s_ago: float = 0, **values: object) -> int:
    with site.store.session() as session:
        study = Study(study_uid=UID, study_key="livenessstudy001", accession="ACC-LIVE-1")
        revision = Revision(study=study, number=1, state=state, opened_at=utc_now() - timedelta(seconds=opened_s_ago),
                            **values)  # fmt: skip
        session.add_all([study, revision])
        session.flush()
        return revision.id


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_again_command_printed_by_status_runs_as_pasted_with_the_same_config(site: Site) -> None:
    _study(site, RevisionState.FAILED, reason="model error after 3 attempts", attempts=3, finished_at=utc_now())

    shown = site.status("status", "--no-broker")

    assert shown.returncode == 0, shown.stderr
    [again] = [line.strip() for line in shown.stdout.splitlines() if line.strip().startswith("again:")]
    command = again.removeprefix("again: ")
    assert command == f"radtrace --config {shlex.quote(str(site.config))} study retry {UID}"
    data = json.loads(site.status("status", "--no-broker", "--json").stdout)
    assert data["failed"][0]["again"] == [command]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    pasted = subprocess.run(  # noqa: S602  # as a shell reads it (radtrace: this interpreter's module)
        command.replace("radtrace", f"{shlex.quote(sys.executable)} -m radtrace", 1), shell=True,
        capture_output=True, text=True, env=environment, cwd=site.data_dir.parent.parent, check=False, timeout=120,
    )  # fmt: skip
    assert pasted.returncode == 0, pasted.stderr
    assert f"revision 1 of study {UID} was failed; queued again" in pasted.stdout


def test_status_exits_1_naming_the_broker_when_it_does_not_answer(site: Site) -> None:
    port = free_port()
    env = {"RADTRACE_BROKER__URL": f"redis://127.0.0.1:{port}/0"}

    shown = site.status("status", env=env)

    assert shown.returncode == 1, shown.stdout
    assert f"broker: the broker at redis://127.0.0.1:{port}/0 did not answer (" in shown.stdout
    assert "(broker.url)" in shown.stdout
    assert "queue depths unavailable" not in shown.stderr, shown.stderr  # said once, in the broker row (a trial)
    as_json = site.status("status", "--json", env=env)
    assert as_json.returncode == 1
    error = json.loads(as_json.stdout)["broker_error"]
    assert error.startswith(f"the broker at redis://127.0.0.1:{port}/0 did not answer")
    assert site.status("status", "--no-broker", env=env).returncode == 0  # not asked: not an error


def test_status_says_no_listener_is_running_when_a_study_receives_past_its_settle_time(site: Site) -> None:
    _study(site, RevisionState.RECEIVING, opened_s_ago=38)
    lock = site.data_dir / "listener.lock"
    lock.write_text('{"pid": 1}', encoding="utf-8")  # left by a listener killed with -9: not held

    shown = site.status("status", "--no-broker")

    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert re.search(r"reason: receiving for \d+ s \(settles after 10 s\): no listener holds ", text), text
    assert "listener.lock: is radtrace serve or radtrace listen running? It settles once one starts" in text
    assert json.loads(site.status("status", "--no-broker", "--json").stdout)["oldest_waiting"]["reason"]

    with lock.open("a") as held:  # a listener running: the wait is the settle time's
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        again = site.status("status", "--no-broker")
    assert "no listener holds" not in again.stdout
    assert "receiving for" in again.stdout


def test_a_delivery_claimed_by_a_dispatcher_that_died_says_so_and_when_it_is_taken_over(site: Site) -> None:
    revision_id = _study(site, RevisionState.REPORTED)
    claimed_at = utc_now()
    with site.store.session() as session:
        row = OutboxMessage(revision_id=revision_id, kind="hl7", destination="127.0.0.1:60123", payload_path="x",
                            payload_sha256="0" * 64, state=OutboxState.PENDING, attempts=1,
                            next_attempt_at=claimed_at + timedelta(seconds=300))  # fmt: skip
        session.add(row)
        session.flush()
        outbox_id = row.id
    dead = f"radtrace@{socket.gethostname()}:{_dead_pid()}"
    AuditRecorder(site.store).record(
        AuditEvent(EventType.DISPATCH_ATTEMPTED, Actor(process=dead), study_uid=UID,
                   payload={"outbox_id": outbox_id, "kind": "hl7", "destination": "127.0.0.1:60123", "attempt": 1})
    )  # fmt: skip
    until = f"{claimed_at + timedelta(seconds=300):%H:%M:%S}"

    shown = radtrace("--config", str(site.config), "study", "show", UID, env={"COLUMNS": "400"})

    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    expected = f"({dead}, not running: its claim expires at {until} UTC, then the next dispatcher pass sends it again)"
    assert expected in text.replace("│ ", ""), text
    status = site.status("status", "--no-broker")
    assert "outbox: 1 pending deliveries claimed by a process that is not running" in status.stdout
    assert f"outbox row {outbox_id}: in flight since" in status.stdout

    with contextlib.suppress(Exception):  # the dispatcher recorded its attempt: no longer in flight
        AuditRecorder(site.store).record(AuditEvent(EventType.DISPATCH_RETRY_SCHEDULED, Actor(process=dead),
                                                    study_uid=UID, payload={"outbox_id": outbox_id}))  # fmt: skip
    assert "not running" not in site.status("status", "--no-broker").stdout


def test_a_delivery_sent_by_a_dispatcher_in_another_pid_namespace_is_not_said_to_be_dead(site: Site) -> None:
    """Its claim names its PID namespace (migration 0014): its pid, which nobody has here, says nothing of it."""
    revision_id = _study(site, RevisionState.REPORTED)
    unseen = f"radtrace@{socket.gethostname()}:{_dead_pid()}"
    with site.store.session() as session:
        row = OutboxMessage(revision_id=revision_id, kind="hl7", destination="127.0.0.1:60123", payload_path="x",
                            payload_sha256="0" * 64, state=OutboxState.PENDING, attempts=1,
                            next_attempt_at=utc_now() + timedelta(seconds=300),
                            claimed_by=claims.claim_text(unseen, 4026530000, claims.namespace()[1], 4242),
                            heartbeat_at=utc_now())  # fmt: skip
        session.add(row)
        session.flush()
        outbox_id = row.id
    AuditRecorder(site.store).record(
        AuditEvent(EventType.DISPATCH_ATTEMPTED, Actor(process=unseen), study_uid=UID,
                   payload={"outbox_id": outbox_id, "kind": "hl7", "destination": "127.0.0.1:60123", "attempt": 1})
    )  # fmt: skip

    shown = radtrace("--config", str(site.config), "study", "show", UID, env={"COLUMNS": "400"})

    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split()).replace("│ ", "")
    assert f"({unseen}, another PID namespace of this host, last heartbeat " in text, text
    assert "if it stopped, a dispatcher releases its claim once the heartbeat is 10 s overdue (from " in text, text
    assert "its claim expires at" not in text, text
    assert "not running" not in site.status("status", "--no-broker").stdout


@pytest.mark.parametrize("holder", ["dead here", "alive here", "another host"])
def test_a_delivery_in_flight_says_what_will_release_it(site: Site, holder: str) -> None:
    """What status and study show say happens to a delivery whose dispatcher is gone is what the dead-claim release
    does (radtrace.worker.dead_claims): a holder of this PID namespace is released within about 10 s by a running
    dispatcher (not at its lease's end, as the text said before); one on another host once a dispatcher has seen its
    heartbeat stand still for 15 s (eba1319; before: at its lease's end)."""
    revision_id = _study(site, RevisionState.REPORTED)
    ns, boot = claims.namespace()
    if holder == "another host":
        process, pid_ns = "radtrace@pacs-b.example:4242", ns
    else:
        pid = _dead_pid() if holder == "dead here" else os.getpid()
        process, pid_ns = f"radtrace@{socket.gethostname()}:{pid}", ns
    start = claims.start_ticks("self") if holder == "alive here" else 4242
    claimed_at = utc_now()
    with site.store.session() as session:
        row = OutboxMessage(revision_id=revision_id, kind="hl7", destination="127.0.0.1:60123", payload_path="x",
                            payload_sha256="0" * 64, state=OutboxState.PENDING, attempts=1,
                            next_attempt_at=claimed_at + timedelta(seconds=300),
                            claimed_by=claims.claim_text(process, pid_ns, boot, start) + " claim=0a1b2c",
                            heartbeat_at=claimed_at)  # fmt: skip
        session.add(row)
        session.flush()
        outbox_id = row.id
    AuditRecorder(site.store).record(
        AuditEvent(EventType.DISPATCH_ATTEMPTED, Actor(process=process), study_uid=UID,
                   payload={"outbox_id": outbox_id, "kind": "hl7", "destination": "127.0.0.1:60123", "attempt": 1})
    )  # fmt: skip

    shown = radtrace("--config", str(site.config), "study", "show", UID, env={"COLUMNS": "400"})

    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split()).replace("│ ", "")
    released = (
        "a running dispatcher releases its claim within about 10 s and sends it again; one starting, at its first"
    )
    expected = {
        "dead here": f"({process}, not running: {released}",
        "alive here": f"({process}; if it dies, {released}",
        "another host": f"({process}, another host, last heartbeat {claimed_at:%H:%M:%S} UTC by its clock; if it "
        "stopped, a running dispatcher releases its claim once it has seen the same beat for 15 s and sends it again)",
    }[holder]
    assert expected in text, text
    status = site.status("status", "--no-broker").stdout
    assert ("not running" in status) is (holder == "dead here"), status


def test_a_revision_processing_under_a_claim_that_ran_out_says_its_worker_is_gone(site: Site) -> None:
    expired = utc_now() - timedelta(seconds=95)
    _study(site, RevisionState.PROCESSING, opened_s_ago=300, claimed_by="gpu0@host:4242", claim_expires_at=expired,
           attempts=1)  # fmt: skip

    text = " ".join(site.status("status", "--no-broker").stdout.split())

    assert f"reason: claimed by worker gpu0@host:4242, whose claim expired at {expired:%H:%M:%S} UTC (" in text, text
    assert "stopped renewing it (killed, lost); the next worker that looks takes it over" in text
