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
from pathlib import Path

import pytest

from listener_support import audit_payloads, listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store
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
    # the listener's stop writes the interval's count: a first event (1) and an aggregated one (2)
    written = [json.loads(p) for p in audit_payloads(store, "association_rejected")]
    assert sorted((p["aggregated"], p["count"]) for p in written) == [(False, 1), (True, 2)], written
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
    assert counted == [("association_rejected", 1), ("association_rejected", 2)], events


def test_status_says_nothing_of_refusals_when_there_were_none(tmp_path: Path, store: Store, database_url: str) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[store]\nurl = "{database_url}"\n', encoding="utf-8")

    shown = radtrace("--config", str(config), "status", "--no-broker")
    data = json.loads(radtrace("--config", str(config), "status", "--no-broker", "--json").stdout)

    assert shown.returncode == 0, shown.stderr
    assert "listener refusals" not in shown.stdout
    assert data["listener_refusals"] == {"since": data["listener_refusals"]["since"], "total": 0, "truncated": False,
                                         "groups": [], "again": []}  # fmt: skip
