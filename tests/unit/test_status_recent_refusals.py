"""The grouping behind ``radtrace status``'s listener refusals (:mod:`radtrace.worker.recent_refusals`), over events
as the listener writes them: first events and aggregated counts per port, an ``instance_rejected`` for a full spool
(no count, no port: counted once), and the one-hour window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.worker.recent_refusals import recent_refusals

REFUSED = "calling AE title not allowed"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    yield store
    store.dispose()


def _refused(host: str, ae: str | None, count: int, port: int, tls: bool, *, aggregated: bool) -> AuditEvent:
    payload = {"reason": REFUSED, "count": count, "aggregated": aggregated, "port": port, "tls": tls}
    return AuditEvent(EventType.ASSOCIATION_REJECTED, Actor(ae_title=ae, host=host), outcome=Outcome.MINOR_FAILURE,
                      payload=payload)  # fmt: skip


def test_refusals_are_summed_per_port_and_reason_naming_their_sources(sqlite_store: Store) -> None:
    AuditRecorder(sqlite_store).record_many([
        _refused("10.0.0.5", "CT_ROOM_2", 1, 11112, True, aggregated=False),
        _refused("10.0.0.5", None, 40, 11112, True, aggregated=True),
        _refused("10.0.0.9", "US_3", 1, 11112, True, aggregated=False),
        _refused("10.0.0.5", "CT_ROOM_2", 1, 104, False, aggregated=False),
        AuditEvent(EventType.INSTANCE_REJECTED, Actor(ae_title="PACS", host="10.0.0.7"),
                   outcome=Outcome.MINOR_FAILURE, payload={"reason": "spool disk nearly full",
                                                           "sop_instance_uid": "1.2.3"}),
    ])  # fmt: skip
    with sqlite_store.session() as session:
        recent = recent_refusals(session, utc_now())
        later = recent_refusals(session, utc_now() + timedelta(hours=1, seconds=5))

    assert [(g.event_type, g.port, g.tls, g.reason, g.count, g.sources) for g in recent.groups] == [
        ("association_rejected", 11112, True, REFUSED, 42, ("CT_ROOM_2 at 10.0.0.5", "US_3 at 10.0.0.9")),
        ("association_rejected", 104, False, REFUSED, 1, ("CT_ROOM_2 at 10.0.0.5",)),
        ("instance_rejected", None, None, "spool disk nearly full", 1, ("PACS at 10.0.0.7",)),
    ]
    assert recent.lines()[1] == (
        f"  port 11112 (TLS): 42 association refusal(s): {REFUSED}; from CT_ROOM_2 at 10.0.0.5, US_3 at 10.0.0.9"
    )
    assert [line.split(" --since ")[0] for line in recent.lines()[-2:]] == [
        "  again: radtrace audit query --event-type association_rejected",
        "  again: radtrace audit query --event-type instance_rejected",
    ]
    assert "1.2.3" not in repr(recent.as_json())  # the instance's UID is not shown
    assert later.groups == []  # older than an hour
    assert later.lines() == []


def test_more_rows_than_read_say_the_counts_are_a_floor(sqlite_store: Store) -> None:
    AuditRecorder(sqlite_store).record_many(
        [_refused(f"10.0.1.{n}", "X", 1, 104, False, aggregated=False) for n in range(4)]
    )
    with sqlite_store.session() as session:
        recent = recent_refusals(session, utc_now(), limit=3)

    assert recent.truncated
    assert sum(g.count for g in recent.groups) == 3
    assert "(at least: more rows than read)" in recent.lines()[0]


def test_refused_dimse_requests_are_named_as_requests_not_as_instances_or_contexts(sqlite_store: Store) -> None:
    """A C-FIND answered 0211H (radtrace.dicom_listener.served) is an instance_rejected event; before, status called it
    an 'instance/context refusal', sending the reader to look for a refused image or SOP class."""
    payload = {
        "reason": "DIMSE request refused",
        "count": 1,
        "aggregated": False,
        "port": 11112,
        "tls": False,
        "requests": [{"command": "C-FIND-RQ", "problem": "not served (C-STORE and C-ECHO only)", "status": 529}],
    }
    AuditRecorder(sqlite_store).record_many([
        AuditEvent(EventType.INSTANCE_REJECTED, Actor(ae_title="RIS", host="10.0.0.9"), outcome=Outcome.MINOR_FAILURE,
                   payload=payload),
    ])  # fmt: skip
    with sqlite_store.session() as session:
        [group] = recent_refusals(session, utc_now()).groups
    assert group.describe() == (
        "port 11112 (no TLS): 1 DIMSE request refusal(s): DIMSE request refused; from RIS at 10.0.0.9"
    )
