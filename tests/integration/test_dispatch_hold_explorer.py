"""A destination's hold in the audit log as people look at it: its own event types (``dispatch_held``,
``dispatch_hold_released``) in the console's audit explorer (the type list, the filter, who acted, the outcome) and in
``radtrace audit query``, recorded after holds of before these types (``dispatch_failed`` with ``hold: placed``,
``dispatch_retry_scheduled`` with ``hold: lifted``), which stay as they were: the chain still verifies.

The hold events are made by the code that makes them (:func:`radtrace.reporting.dispatch.holds.held_event` and
:func:`~radtrace.reporting.dispatch.holds.lift_hold`); the end-to-end hold against a refusing PACS is
test_dispatch_destination_hold.py."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.operations import verify_audit_log
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import DispatchSettings
from radtrace.reporting.dispatch import holds
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from tests_support import radtrace

pytestmark = pytest.mark.integration

PACS = "NIGHTPACS@10.0.0.9:104"
REASON = f"{PACS} rejected the association (A-ASSOCIATE-RJ 1/1/3: calling AE title not recognised)"


def _old_style_hold(recorder: AuditRecorder) -> None:
    """A hold as radtrace recorded it before its own event types: never rewritten."""
    recorder.record(AuditEvent(EventType.DISPATCH_FAILED, Actor(process="radtrace@pacs1:4242"),
                               Outcome.SERIOUS_FAILURE, payload={"destination": PACS, "hold": "placed",
                                                                 "hold_reason": REASON, "outbox_id": 1}))  # fmt: skip
    lifted = {"destination": PACS, "hold": "lifted", "requested_by": "operator"}
    recorder.record(AuditEvent(EventType.DISPATCH_RETRY_SCHEDULED, Actor(user="olduser", host="pacs1"), payload=lifted))


def _hold_and_lift(store: Store, recorder: AuditRecorder) -> None:
    now = utc_now()
    row = SimpleNamespace(id=7, destination=PACS)
    error = SimpleNamespace(reason=REASON, rejection=SimpleNamespace(codes="1/1/3"))
    with store.session(immediate=True) as session:
        recorder.record(holds.held_event(Actor(process="radtrace@pacs1:5151"), row, error, now,  # type: ignore[arg-type]
                                         DispatchSettings()), session=session)  # fmt: skip
        session.add(holds.DestinationHold(destination=PACS, reason=REASON, codes="1/1/3",
                                          held_since=now - timedelta(minutes=42), outbox_id=7,
                                          calling_ae_title="RADTRACE"))  # fmt: skip
    with store.session(immediate=True) as session:
        lifted = holds.lift_hold(session, recorder, Actor(user="nightshift", host="pacs1"), PACS, now)
        assert lifted is not None


def test_hold_events_have_their_own_types_in_the_explorer_and_the_chain_with_old_holds_verifies(
    store: Store, tmp_path: Path
) -> None:
    recorder = AuditRecorder(store)
    _old_style_hold(recorder)
    _hold_and_lift(store, recorder)
    add_user(store, "qa.quinn", "qa")
    with console_client(store, console_settings(tmp_path, store)) as qa:
        sign_in(qa, "qa.quinn")
        form = qa.get("/console/audit", params={"limit": "25"})
        assert form.status_code == 200, form.text
        assert '<option value="dispatch_held">' in form.text
        assert '<option value="dispatch_hold_released">' in form.text
        rows: dict[str, str] = {}
        for kind in ("dispatch_held", "dispatch_hold_released"):
            page = qa.get("/console/audit", params={"event_type": kind})
            assert page.status_code == 200, page.text
            [rows[kind]] = re.findall(r'<tr class="event [^"]*" data-seq="\d+">.*?</tr>', page.text, re.S)
    held, released = rows["dispatch_held"], rows["dispatch_hold_released"]
    assert 'class="event outcome-serious_failure"' in held
    assert "radtrace@pacs1:5151" in held  # the dispatcher whose refusal placed it
    assert "A-ASSOCIATE-RJ 1/1/3" in held
    assert 'class="event outcome-success"' in released
    assert "nightshift@pacs1" in released  # who lifted it
    assert "&#34;lifted_by&#34;:&#34;operator&#34;" in released or '"lifted_by":"operator"' in released

    env = {"RADTRACE_DATA_DIR": str(tmp_path / "cli"), "RADTRACE_STORE__URL": str(store.engine.url)}
    found = radtrace("audit", "query", "--event-type", "dispatch_hold_released", "--format", "json", env=env)
    assert found.returncode == 0, found.stderr
    [event] = json.loads(found.stdout)["events"]
    assert (event["actor_user"], event["dicom_event_id"]) == ("nightshift", "110113")
    assert (event["payload"]["held_s"], event["payload"]["released"]) == (2520.0, 0)

    verification = verify_audit_log(store, Actor(user="auditor"))
    assert verification.result.ok, verification.result
