"""The audit explorer writes an accession with bidirectional controls as the worklist and the study page do: each
control a visible escape, the value left to right in stored order (radtrace.console.identifiers; the browser's
drawing is checked in tests/e2e/test_console_identifiers_browser.py). Before, ``ACC<RLO>12`` was written as stored
in the events table's cell, drawn as ``ACC21``."""

from __future__ import annotations

from pathlib import Path

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def test_the_audit_explorer_shows_an_accessions_bidi_controls(store: Store, tmp_path: Path) -> None:
    AuditRecorder(store).record(
        AuditEvent(EventType.INSTANCE_RECEIVED, Actor(host="modality"), study_uid="1.2.3.9", accession="ACC\u202e12")
    )
    add_user(store, "qa.audit", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.audit")
        page = client.get("/console/audit")
    assert page.status_code == 200
    assert "ACC\u202e12" not in page.text
    assert (
        '<td><bdo dir="ltr" class="id">ACC<span class="control" title="invisible character: right-to-left override">'
        "⟨U+202E⟩</span>12</bdo></td>"
    ) in page.text
