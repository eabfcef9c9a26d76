"""`radtrace audit export --format atna-xml|jsonl` and `radtrace audit forward` as an operator runs them:
the forwarder process killed (SIGKILL) mid-stream and started again delivers everything to rsyslog, no gap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree

from radtrace.audit.atna.forwarder import CursorFile
from radtrace.audit.atna.message import validate_audit_message
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.atna import Pki, Rsyslog, free_port, make_pki
from tests_support import radtrace

pytestmark = pytest.mark.integration

PEER = Actor(ae_title="PACS1", host="10.1.2.3", process="radtrace@test:1")


def seeded_data_dir(tmp_path: Path, count: int) -> Path:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    store = Store.from_url(f"sqlite:///{data_dir / 'radtrace.db'}")
    upgrade(store)
    kinds = list(EventType)
    events = [AuditEvent(kinds[n % len(kinds)], PEER, study_uid=f"1.2.3.{n}", patient_id=f"P{n}") for n in range(count)]
    for start in range(0, count, 500):
        AuditRecorder(store).record_many(events[start : start + 500])
    store.dispose()
    return data_dir


def test_export_writes_valid_atna_xml_and_jsonl_one_event_per_line(tmp_path: Path) -> None:
    data_dir = seeded_data_dir(tmp_path, 2 * len(EventType))
    env = {"RADTRACE_DATA_DIR": str(data_dir), "RADTRACE_ATNA__AUDIT_SOURCE_ID": "site-radtrace"}
    xml_file, jsonl_file = tmp_path / "audit.xml", tmp_path / "audit.jsonl"
    exported = radtrace("audit", "export", "--format", "atna-xml", "--output", str(xml_file), env=env)
    assert exported.returncode == 0, exported.stderr
    assert f"exported {2 * len(EventType)} audit events" in exported.stderr
    lines = xml_file.read_bytes().splitlines()
    assert len(lines) == 2 * len(EventType)
    for n, line in enumerate(lines):
        validate_audit_message(line)
        message = etree.fromstring(line)
        assert message.find("AuditSourceIdentification").get("AuditSourceID") == "site-radtrace"
        assert message.xpath(f"ParticipantObjectIdentification[@ParticipantObjectID='urn:radtrace:audit:{n + 1}']")

    exported = radtrace("audit", "export", "--format", "jsonl", "--output", str(jsonl_file), env=env)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in jsonl_file.read_text().splitlines()]
    # The first export recorded audit_exported (seq N+1) and is itself in the second export.
    assert [row["seq"] for row in rows] == list(range(1, 2 * len(EventType) + 2))
    assert rows[-1]["event_type"] == "audit_exported"
    assert rows[0]["patient_id"] == "P0"
    assert rows[0]["payload"] == {}


def test_forwarder_process_killed_mid_stream_resumes_from_its_cursor_without_a_gap(tmp_path: Path) -> None:
    total = 4000
    data_dir = seeded_data_dir(tmp_path, total)
    pki: Pki = make_pki(tmp_path / "pki")
    receiver = Rsyslog(tmp_path / "rsyslog", free_port(), pki)
    receiver.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {
        "RADTRACE_DATA_DIR": str(data_dir),
        "RADTRACE_ATNA__HOST": "127.0.0.1",
        "RADTRACE_ATNA__PORT": str(receiver.port),
        "RADTRACE_ATNA__SERVER_NAME": "localhost",
        "RADTRACE_ATNA__CA_BUNDLE": str(pki.ca),
        "RADTRACE_ATNA__CERTIFICATE": str(pki.client_cert),
        "RADTRACE_ATNA__PRIVATE_KEY": str(pki.client_key),
        "RADTRACE_ATNA__BATCH_SIZE": "50",
        "RADTRACE_ATNA__SETTLE_S": "0.3",
        "RADTRACE_ATNA__POLL_INTERVAL_S": "0.05",
    }
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "radtrace", "audit", "forward"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        cursor = CursorFile(data_dir / "atna" / "cursor.json")
        # Mid-stream: some rows settled (the cursor moved), more sent and not yet settled.
        while (receiver.count_lines() < 1000 or cursor.read().seq == 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        assert process.stderr is not None
        process.stderr.close()
        killed_at = cursor.read().seq
        assert 0 < killed_at < total

        resumed = subprocess.run(
            [sys.executable, "-m", "radtrace", "audit", "forward", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert f"delivered up to seq {total}" in resumed.stderr
    finally:
        receiver.stop()
    seqs = [message.seq for message in receiver.received()]
    # The killed process delivered 1..sent_before (in order); the new one resent from its cursor on. So the
    # only duplicates are the rows that had not settled when it died, each arriving again with its seq.
    sent_before = len(seqs) - (total - killed_at)
    assert sent_before >= killed_at
    assert seqs == list(range(1, sent_before + 1)) + list(range(killed_at + 1, total + 1))
    print(f"forwarder killed at cursor {killed_at}: {sent_before - killed_at} duplicates, no gap")


def test_forward_without_a_repository_is_a_usage_error(tmp_path: Path) -> None:
    data_dir = seeded_data_dir(tmp_path, 1)
    result = radtrace("audit", "forward", "--once", env={"RADTRACE_DATA_DIR": str(data_dir)})
    assert result.returncode == 2
    assert "atna.host is not set" in result.stderr
