"""How QA results look: rich tables for people, JSON and CSV for tools. Shared by the CLI and the HTTP API.

JSON is the same document the API returns (one pydantic serialisation of the result dataclasses).
CSV has one header line and one line per event, every stored column, labels joined with commas
(a label never contains one) and the payload as compact JSON; it is written in chunks so that an
export can be streamed. Every CSV (the API's export, ``audit query --format csv``, the console's export) is
meant to be opened in a spreadsheet: a text cell that would run as a formula gets a leading apostrophe. Tools
that need every value exactly read the JSON.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import TypeAdapter
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from radtrace.audit.events import canonical_json
from radtrace.audit.queries import AuditRecord, QueryPage, Timeline
from radtrace.logging import escape

__all__ = [
    "CSV_COLUMNS",
    "csv_chunks",
    "defuse_formula",
    "page_json",
    "page_table",
    "recorded_text",
    "timeline_json",
    "timeline_renderable",
]

# An unreadable time is shown in the recorded_at cell itself (see recorded_text), not in a column of its own.
CSV_COLUMNS: Final = tuple(field.name for field in fields(AuditRecord) if field.name != "recorded_at_unreadable")
UNREADABLE: Final = "unreadable: "
CSV_ROWS_PER_CHUNK: Final = 500
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


@functools.cache
def _adapter(kind: type[Any]) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def page_json(page: QueryPage) -> str:
    """The page as one JSON document: the query, its events and ``next_after_seq`` (``next_before_seq``)."""
    return _adapter(QueryPage).dump_json(page, indent=2).decode("utf-8")


def timeline_json(timeline: Timeline) -> str:
    """The timeline as one JSON document: entries with their durations, and the stages."""
    return _adapter(Timeline).dump_json(timeline, indent=2).decode("utf-8")


def recorded_text(record: AuditRecord, shown: Callable[[datetime], str]) -> str:
    """The event's time as ``shown`` writes it, or ``unreadable: '<stored value>'`` for a row whose time was
    edited into something that is not a time (``audit verify`` names the row)."""
    if record.recorded_at is None:
        return f"{UNREADABLE}{record.recorded_at_unreadable!r}"
    return shown(record.recorded_at)


def _csv_value(record: AuditRecord, name: str) -> str | int:
    value = getattr(record, name)
    if name == "recorded_at":
        return recorded_text(record, _iso)
    if value is None:
        return ""
    if name == "labels":
        return ",".join(value)
    if name == "payload":
        return canonical_json(value)
    if isinstance(value, int):
        return value
    return str(value)


def defuse_formula(value: str | int) -> str | int:
    """A CSV cell a spreadsheet will not run: text starting with ``=``, ``+``, ``-``, ``@``, tab or CR gets a
    leading apostrophe (OWASP "CSV injection"); anything else is returned as is."""
    # Accession numbers, AE titles and payloads come from peers and can start so.
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def csv_chunks(records: Iterable[AuditRecord], *, rows_per_chunk: int = CSV_ROWS_PER_CHUNK) -> Iterator[str]:
    """CSV text (RFC 4180): the header, then the events, yielded ``rows_per_chunk`` lines at a time.

    A text cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, carriage return first)
    is prefixed with an apostrophe (:func:`defuse_formula`): the API's export is a ``.csv`` attachment and the CLI's
    output is redirected into one, both opened in a spreadsheet (before, only the console's export was defused).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    pending = 0
    for record in records:
        row = [_csv_value(record, name) for name in CSV_COLUMNS]
        writer.writerow([defuse_formula(value) for value in row])
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


def _iso(value: datetime) -> str:
    # The same form as the JSON documents: UTC with a "Z".
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.3f} s"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{sign}{hours} h {minutes:02d} min {rest:04.1f} s" if hours else f"{sign}{minutes} min {rest:04.1f} s"


def _actor(record: AuditRecord) -> str:
    who = record.actor_user or record.actor_ae or record.actor_process
    return f"{who}@{record.actor_host}" if record.actor_host else who


def _model(record: AuditRecord) -> str:
    return " ".join(part for part in (record.model_name, record.model_version) if part)


def _cells(*values: str | None) -> list[Text]:
    # Text, not markup: an accession or AE title from a hostile peer must not be read as rich markup. Its
    # control characters are shown escaped (as in the log): rich passes ESC through, and a newline splits the row.
    return [Text(escape(value or "")) for value in values]


def page_table(page: QueryPage) -> Table:
    """A table of the page's events (the payload and hashes are in the JSON and CSV formats)."""
    table = Table(
        "seq", "recorded (UTC)", "event", "outcome", "actor", "study", "accession", "model", "labels",
        title=f"audit events ({len(page.events)})", title_justify="left",
    )  # fmt: skip
    for record in page.events:
        table.add_row(
            *_cells(
                str(record.seq),
                recorded_text(record, _when),
                record.event_type,
                record.outcome,
                _actor(record),
                record.study_uid,
                record.accession,
                _model(record),
                ", ".join(record.labels),
            )
        )
    if page.next_after_seq is not None:
        table.caption = f"more events: --after-seq {page.next_after_seq}"
    elif page.next_before_seq is not None:
        table.caption = f"older events: --newest-first --before-seq {page.next_before_seq}"
    return table


def timeline_renderable(timeline: Timeline) -> RenderableType:
    """The study's events with the time since the previous and the first one, then its stage durations."""
    events = Table(
        "seq", "recorded (UTC)", "+previous", "+first", "event", "outcome", "actor", "model", "labels",
        title=Text(f"timeline of study {timeline.study_uid} ({len(timeline.entries)} events)"), title_justify="left",
    )  # fmt: skip
    for entry in timeline.entries:
        record = entry.event
        events.add_row(
            *_cells(
                str(record.seq),
                recorded_text(record, _when),
                _duration(entry.seconds_since_previous),
                _duration(entry.seconds_since_first),
                record.event_type,
                record.outcome,
                _actor(record),
                _model(record),
                ", ".join(record.labels),
            )
        )
    if not timeline.stages:
        return events
    stages = Table("stage", "from", "to", "duration", title="stages", title_justify="left")
    for stage in timeline.stages:
        stages.add_row(
            *_cells(
                stage.name,
                f"{stage.from_event} (seq {stage.from_seq})",
                f"{stage.to_event} (seq {stage.to_seq})",
                _duration(stage.seconds),
            )
        )
    return Group(events, stages)
