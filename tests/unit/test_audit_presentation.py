"""QA query values without a database: filter validation, timeline arithmetic, CSV and table output."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from radtrace.audit.presentation import CSV_COLUMNS, csv_chunks, page_json, page_table, timeline_renderable
from radtrace.audit.queries import AuditQuery, AuditRecord, QueryError, QueryPage, build_timeline
from radtrace.audit.tokens import Role

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


def _record(seq: int, event_type: str, seconds: float, **values: Any) -> AuditRecord:
    fields: dict[str, Any] = {
        "seq": seq, "recorded_at": T0 + timedelta(seconds=seconds), "event_type": event_type,
        "dicom_event_id": "110103", "outcome": "success", "actor_ae": None, "actor_host": None, "actor_user": None,
        "actor_process": "radtrace-worker@gpu1:7", "study_uid": "1.2.3", "accession": None, "patient_id": None,
        "model_name": None, "model_version": None, "labels": (), "payload": {}, "prev_hash": "0" * 64,
        "hash": f"{seq:064x}",
    }  # fmt: skip
    return AuditRecord(**(fields | values))


def test_bad_filters_are_refused_with_the_reason() -> None:
    with pytest.raises(QueryError) as refused:
        AuditQuery.parse(event_type="inference_done")
    assert "event_type" in refused.value.reason
    assert "'inference_completed'" in refused.value.reason  # the valid types are listed
    with pytest.raises(QueryError, match=r"since .* is after until"):
        AuditQuery.parse(since="2025-03-02T00:00:00Z", until="2025-03-01T00:00:00Z")
    with pytest.raises(QueryError, match="needs a time zone"):
        AuditQuery.parse(since="2025-03-01T08:00:00")
    with pytest.raises(QueryError, match="limit"):
        AuditQuery.parse(limit=0)
    with pytest.raises(QueryError, match="limit"):
        AuditQuery.parse(limit=1001)
    with pytest.raises(QueryError, match="after_seq"):
        AuditQuery.parse(after_seq=-1)
    with pytest.raises(QueryError, match="comma"):
        AuditQuery.parse(label="Effusion,Mass")
    with pytest.raises(QueryError, match="outcome"):
        AuditQuery.parse(outcome="fine")
    with pytest.raises(QueryError, match="study_uid"):
        AuditQuery.parse(study_uid="  ")
    assert AuditQuery.parse(since="2025-03-01T09:00:00+01:00", label=" Mass ").label == "Mass"


def test_stages_run_from_the_first_opening_event_to_the_first_closing_one_after_it() -> None:
    events = [
        _record(1, "instance_received", 0),
        _record(2, "instance_received", 5),
        _record(3, "study_queued", 15),
        _record(4, "inference_started", 20),
        _record(5, "inference_failed", 30, outcome="serious_failure"),
        _record(6, "inference_started", 90),  # the retry
        _record(7, "inference_completed", 130),
        _record(8, "instance_received", 200),  # a late instance opens revision 2
        _record(9, "study_queued", 210),
        _record(10, "report_created", 131),  # recorded by another host with a slower clock
    ]
    timeline = build_timeline("1.2.3", events)
    stages = {stage.name: (stage.from_seq, stage.to_seq, stage.seconds) for stage in timeline.stages}
    assert stages == {
        "receive_to_queue": (1, 3, 15.0),
        "queue_wait": (3, 4, 5.0),
        "inference": (4, 7, 110.0),  # first start to first completion, across the retry
        "report": (7, 10, 1.0),
    }
    assert timeline.entries[-1].seconds_since_previous == -79.0  # clock skew is shown, not hidden
    assert build_timeline("1.2.3", []).entries == ()


def test_a_stage_an_operator_retried_runs_from_the_retry() -> None:
    """`radtrace study retry` hours after a failure: the model's reading is the retried reading, not the two hours
    from the failed attempt's start (7,220 s before); the whole path still runs from the first image."""
    events = [
        _record(1, "instance_received", 0),
        _record(2, "study_queued", 15),
        _record(3, "inference_started", 20),
        _record(4, "study_failed", 30, outcome="serious_failure"),
        _record(5, "study_retried", 7200),
        _record(6, "inference_started", 7201),
        _record(7, "inference_completed", 7240),
        _record(8, "report_created", 7241),
        _record(9, "dispatch_delivered", 7243),
    ]
    stages = {stage.name: (stage.from_seq, stage.to_seq, stage.seconds) for stage in build_timeline("1", events).stages}
    assert stages == {
        "receive_to_queue": (1, 2, 15.0),
        "queue_wait": (2, 3, 5.0),
        "inference": (6, 7, 39.0),
        "report": (7, 8, 1.0),
        "dispatch": (8, 9, 2.0),
        "total": (1, 9, 7243.0),
    }


def test_csv_is_written_in_chunks_that_join_into_one_parsable_document() -> None:
    records = [
        _record(n, "inference_completed", n, labels=("Cardiomegaly", 'Say "hi"'), payload={"raw": "a,b\nc", "n": n})
        for n in range(1, 6)
    ]
    chunks = list(csv_chunks(records, rows_per_chunk=2))
    assert len(chunks) == 3
    rows = list(csv.DictReader(io.StringIO("".join(chunks))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row["seq"] for row in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0]["labels"] == 'Cardiomegaly,Say "hi"'
    assert json.loads(rows[4]["payload"]) == {"raw": "a,b\nc", "n": 5}
    assert rows[0]["recorded_at"] == "2025-03-03T08:00:01.000000Z"
    assert rows[0]["accession"] == ""
    assert "".join(csv_chunks([])) == ",".join(CSV_COLUMNS) + "\r\n"


def test_values_from_peers_are_printed_as_text_not_as_markup() -> None:
    hostile = _record(1, "instance_received", 0, accession="[red]ACC[/red]", actor_ae="[bold]PACS")
    page = QueryPage(AuditQuery(), (hostile,), next_after_seq=1)
    console = Console(record=True, width=200)
    console.print(page_table(page))
    console.print(timeline_renderable(build_timeline("[blink]1.2.3", [hostile])))
    text = console.export_text()
    assert "[red]ACC[/red]" in text
    assert "[bold]PACS" in text
    assert "[blink]1.2.3" in text
    assert "--after-seq 1" in text


def test_page_json_is_the_api_document() -> None:
    page = QueryPage(AuditQuery(label="Mass", limit=1), (_record(7, "inference_completed", 0),), next_after_seq=7)
    document = json.loads(page_json(page))
    assert document["query"]["label"] == "Mass"
    assert document["events"][0]["recorded_at"] == "2025-03-03T08:00:00Z"
    assert document["next_after_seq"] == 7


def test_admin_may_do_what_qa_may_but_not_the_reverse() -> None:
    assert Role.ADMIN.allows(Role.QA)
    assert Role.ADMIN.allows(Role.ADMIN)
    assert Role.QA.allows(Role.QA)
    assert not Role.QA.allows(Role.ADMIN)


def test_tables_show_a_peers_control_characters_escaped_not_sent_to_the_terminal() -> None:
    """An AE title, host or accession holding ESC sequences, BEL or a newline cannot drive the QA terminal."""
    hostile = "EV\x1b[2J\x1b]0;pwned\x07\nIL\u202e"
    record = _record(1, "instance_received", 0, actor_ae=hostile[:16], actor_host=hostile, accession=hostile)
    page = QueryPage(AuditQuery(), (record,), None)
    timeline = build_timeline("1.2.3", [record])
    for renderable in (page_table(page), timeline_renderable(timeline)):
        console = Console(file=io.StringIO(), width=400, force_terminal=False, color_system=None)
        console.print(renderable)
        output = console.file.getvalue()  # type: ignore[attr-defined]
        for char in "\x1b\x07\u202e":
            assert char not in output, f"raw {char!r} in: {output!r}"
        assert "EV\\x1b[2J" in output  # shown, escaped
        assert len([line for line in output.splitlines() if "IL" in line]) == 1, output  # one line per row
