"""``radtrace status`` says what the listener refused in the last hour, per port and reason, with the sources.

The night shift asks why the PACS says studies are not arriving: a modality calling with an AE title the listener
does not admit is refused at every association, and the audit log holds it (a first event and an aggregated count per
source, reason and port: :mod:`radtrace.dicom_listener.refusals`). Before, ``radtrace status`` showed none of it.
Here a real listener refuses a real dcmtk echoscu, and status (text and --json) names the port, the reason, the count
and the calling AE, with the audit query that shows them in full, which runs as pasted.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pynetdicom import AE
from pynetdicom.sop_class import (
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from listener_support import audit_payloads, listener_settings, running
from radtrace.dicom_listener.contexts import SERVICES_NOT_OFFERED
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.dicom_listener.refusals import LIVE_S
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.worker.recent_refusals import recent_refusals
from tests_support import radtrace

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("echoscu") is None, reason="needs dcmtk"),
]

REFUSED = "calling AE title not allowed"


def test_status_shows_the_listeners_refusals_of_the_last_hour_per_port_and_reason(
    tmp_path: Path, store: Store, database_url: str, listener_port: int
) -> None:
    settings = listener_settings(tmp_path, listener_port)  # admits the calling AE 'PACS' only
    with running(settings, store):
        assert echoscu(listener_port).returncode == 0  # an admitted caller: no refusal
        for _ in range(3):
            assert echoscu(listener_port, calling="CT_ROOM_2").returncode != 0
    # a first event (1), then the count of the rest: written LIVE_S after it, or at the listener's stop
    written = [json.loads(p) for p in audit_payloads(store, "association_rejected")]
    assert [(p["aggregated"], p["count"]) for p in written[:1]] == [(False, 1)], written
    assert all(p["aggregated"] for p in written[1:]), written
    assert sum(p["count"] for p in written[1:]) == 2, written
    config = tmp_path / "site settings.toml"  # a space: the printed command must quote it
    config.write_text(f'data_dir = "{settings.data_dir}"\n[store]\nurl = "{database_url}"\n', encoding="utf-8")

    shown = radtrace("--config", str(config), "status", "--no-broker", env={"COLUMNS": "400"})

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    [head] = [line for line in lines if line.startswith("listener refusals since ")]
    assert head.endswith("(last hour): 3"), shown.stdout
    start = lines.index(head)
    assert lines[start + 1] == (
        f"  port {listener_port} (no TLS): 3 association refusal(s): {REFUSED}; from CT_ROOM_2 at 127.0.0.1"
    ), shown.stdout
    again = lines[start + 2]
    assert again.startswith(f"  again: radtrace --config {shlex.quote(str(config))} audit query "
                            "--event-type association_rejected --since "), shown.stdout  # fmt: skip
    data = json.loads(radtrace("--config", str(config), "status", "--no-broker", "--json").stdout)
    refusals = data["listener_refusals"]
    assert refusals["total"] == 3, refusals
    assert refusals["truncated"] is False, refusals
    assert refusals["groups"] == [
        {"event_type": "association_rejected", "port": listener_port, "tls": False, "reason": REFUSED,
         "count": 3, "sources": ["CT_ROOM_2 at 127.0.0.1"]},
    ], refusals  # fmt: skip
    command = again.removeprefix("  again: ")
    [in_json] = refusals["again"]  # the same command, its --since a second later at most
    assert in_json.rpartition(" --since ")[0] == command.rpartition(" --since ")[0], (in_json, command)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {"COLUMNS": "400"}
    pasted = subprocess.run(  # noqa: S602  # as a shell reads it (radtrace: this interpreter's module)
        command.replace("radtrace", f"{shlex.quote(sys.executable)} -m radtrace", 1) + " --format json", shell=True,
        capture_output=True, text=True, env=environment, check=False, timeout=120,
    )  # fmt: skip
    assert pasted.returncode == 0, pasted.stderr
    events = json.loads(pasted.stdout)["events"]
    counted = [(e["event_type"], e["payload"]["count"]) for e in events]
    assert counted == [("association_rejected", p["count"]) for p in written], events


def test_status_says_nothing_of_refusals_when_there_were_none(tmp_path: Path, store: Store, database_url: str) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[store]\nurl = "{database_url}"\n', encoding="utf-8")

    shown = radtrace("--config", str(config), "status", "--no-broker")
    data = json.loads(radtrace("--config", str(config), "status", "--no-broker", "--json").stdout)

    assert shown.returncode == 0, shown.stderr
    assert "listener refusals" not in shown.stdout
    assert data["listener_refusals"] == {"since": data["listener_refusals"]["since"], "total": 0, "other_services": 0,
                                         "truncated": False, "groups": [], "again": []}  # fmt: skip


def test_status_counts_the_later_refusals_of_a_group_within_seconds_not_at_the_intervals_end(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """A modality refused three times: before, status said 1 for the whole refusal audit interval (60 s), since the
    second and third were only counted in the listener's memory until the interval ended. Now the count so far is
    written LIVE_S (3 s) after the group's last event, while the listener runs."""
    settings = listener_settings(tmp_path, listener_port)
    assert settings.listener.refusal_audit_interval_s == 60
    with running(settings, store):
        for _ in range(3):
            assert echoscu(listener_port, calling="CT_ROOM_2").returncode != 0
        refused = time.monotonic()
        seen = []
        while time.monotonic() - refused < 8:  # LIVE_S (3 s), a sweep (0.25 s) and room for a busy machine
            with store.session() as session:
                seen.append(recent_refusals(session, utc_now()).as_json()["total"])
            if seen[-1] == 3:
                break
            time.sleep(0.25)
    assert seen[-1] == 3, seen  # before: 1 until the interval's end
    assert LIVE_S == 3


def test_other_services_a_pacs_proposes_with_its_echo_are_not_counted_as_refusals(
    tmp_path: Path, store: Store, database_url: str, listener_port: int
) -> None:
    """Orthanc's C-ECHO (and many a modality's association) also proposes Query/Retrieve and worklist contexts. The
    listener refuses them (it offers storage and verification only), and before each was audited and counted as a
    refusal: ``radtrace status`` said "listener refusals … 2" and RadtraceIntakeRefused paged for a working PACS. A
    SOP class pynetdicom does not know (a private storage class) stays a refusal: an instance may have been lost."""
    settings = listener_settings(tmp_path, listener_port)
    private_storage = "1.2.826.0.1.3680043.9.7433.1.1"
    with running(settings, store):
        peer = AE(ae_title="PACS")
        for context in (Verification, StudyRootQueryRetrieveInformationModelFind, ModalityWorklistInformationFind):
            peer.add_requested_context(context)
        association = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE")
        assert association.is_established
        assert association.send_c_echo().Status == 0x0000
        association.release()
        peer = AE(ae_title="PACS")
        peer.add_requested_context(Verification)
        peer.add_requested_context(private_storage)
        association = peer.associate("127.0.0.1", listener_port, ae_title="RADTRACE")
        assert association.is_established
        association.release()
    config = tmp_path / "settings.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\n[store]\nurl = "{database_url}"\n', encoding="utf-8")

    shown = radtrace("--config", str(config), "status", "--no-broker", env={"COLUMNS": "400"})
    data = json.loads(radtrace("--config", str(config), "status", "--no-broker", "--json").stdout)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    [head] = [line for line in lines if line.startswith("listener refusals since ")]
    assert head.endswith("(last hour): 1"), shown.stdout  # the private storage class's association; before: 2
    [other] = [line for line in lines if line.startswith("other services proposed since ")]
    assert other.endswith("(not offered; no instance refused): 1"), shown.stdout  # the echo's association
    assert lines[lines.index(other) + 1] == (
        f"  port {listener_port} (no TLS): 1 association(s) proposed other services, not offered; from PACS at "
        "127.0.0.1"
    ), shown.stdout
    assert data["listener_refusals"]["total"] == 1, data["listener_refusals"]
    assert data["listener_refusals"]["other_services"] == 1, data["listener_refusals"]
    [services] = [group for group in data["listener_refusals"]["groups"] if group["reason"] == SERVICES_NOT_OFFERED]
    assert services["event_type"] == "instance_rejected", services
    [written] = [json.loads(p) for p in audit_payloads(store, "instance_rejected")
                 if json.loads(p)["reason"] == SERVICES_NOT_OFFERED]  # fmt: skip
    assert sorted(item["sop_class_uid"] for item in written["contexts"]) == sorted(
        [str(StudyRootQueryRetrieveInformationModelFind), str(ModalityWorklistInformationFind)]
    ), written


def test_the_intake_alert_does_not_page_for_services_not_offered() -> None:
    rules = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/prometheus/radtrace-rules.yml").read_text())
    [alert] = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "RadtraceIntakeRefused"]
    assert 'reason!="service not offered"' in alert["expr"], alert["expr"]
