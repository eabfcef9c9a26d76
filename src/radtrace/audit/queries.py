"""QA queries over the audit log: typed filters, stable keyset pages, and every query itself audited.

A query is an :class:`AuditQuery` (filters plus a page: ``limit`` rows with ``after_seq < seq < before_seq``,
oldest first, or newest first with ``order="desc"``). Pages are keyed on ``seq``, which only grows, so paging
forward with ``next_after_seq`` or back with ``next_before_seq`` neither repeats nor skips an event while new ones
are appended. Whoever asks is recorded as an ``audit_queried`` event
(an export as ``audit_exported``) with the filters used; a query by patient ID carries that ID in
the event's own ``patient_id`` column, so "who looked up this patient" is itself a query.

A study's timeline lists its events with the time between them and the duration of each stage of
the study lifecycle (DESIGN.md): received, queued once settled, inference started and completed,
report created, delivered. A stage runs from the first event that opens it to the first later event
that closes it, so it describes the study's first pass; later revisions still appear as entries.

The same SQL runs on SQLite and PostgreSQL: plain comparisons, and a substring position (not LIKE,
whose case rules differ between the two) for the one-label match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self

import sqlalchemy as sa
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.errors import PermanentError
from radtrace.store.engine import Store, is_postgresql

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_SEQ",
    "STAGES",
    "AuditFilter",
    "AuditQuery",
    "AuditRecord",
    "Order",
    "QueryError",
    "QueryPage",
    "StageDuration",
    "Timeline",
    "TimelineEntry",
    "build_timeline",
    "describe_validation_error",
    "export_records",
    "record_columns",
    "run_query",
    "study_timeline",
]

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
EXPORT_BATCH_ROWS: Final = 1000

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control(value: str) -> str:
    """A filter is matched against stored text: a control character matches nothing, and PostgreSQL refuses a NUL
    outright (a 500 before this check)."""
    if _CONTROL.search(value):
        raise ValueError("control characters (such as NUL) are not allowed")
    return value


_Identifier = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64), AfterValidator(_no_control)
]
_Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), AfterValidator(_no_control)
]
_Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=255, pattern=r"^[^,]+$"),
    AfterValidator(_no_control),
]


class QueryError(PermanentError):
    """A QA query's filters are invalid; the message names each filter and what is wrong with it."""


def describe_validation_error(exc: ValidationError, what: str = "audit query") -> str:
    """One readable line per invalid filter, e.g. ``event_type: Input should be 'a', 'b' or 'c' (got 'x')``."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "string_pattern_mismatch" and where == "label":
            message = "a label never contains a comma; give one label"
        elif error["type"] == "timezone_aware":
            message = "needs a time zone, e.g. 2025-03-01T08:00:00Z or 2025-03-01T09:00:00+01:00"
        given = error.get("input")
        shown = f" (got {given!r})" if where and not isinstance(given, dict) else ""
        problems.append(f"{where}: {message}{shown}" if where else message)
    return f"invalid {what}: " + "; ".join(problems)


class AuditFilter(BaseModel):
    """Which audit events to select. Every filter is optional; the given ones must all hold.

    Times are timezone-aware ISO 8601 (``2025-03-01T08:00:00Z``); the range is half-open,
    ``since <= recorded_at < until``. Text filters match exactly (case included).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    study_uid: _Identifier | None = Field(default=None, description="Study Instance UID")
    accession: _Identifier | None = Field(default=None, description="accession number")
    patient_id: _Identifier | None = Field(
        default=None, description="patient ID; the query is recorded with it, so looking a patient up is audited"
    )
    since: AwareDatetime | None = Field(default=None, description="recorded at or after this time (with a zone)")
    until: AwareDatetime | None = Field(default=None, description="recorded before this time (with a zone)")
    event_type: EventType | None = Field(default=None, description="one event type")
    model_name: _Name | None = Field(default=None, description="model name, e.g. NV-Reason-CXR-3B")
    model_version: _Name | None = Field(default=None, description="model version (revision)")
    label: _Label | None = Field(
        default=None,
        description="one finding label, matched exactly ('Effusion' does not match 'Pleural Effusion'), or the flag "
        "of a received instance whose text's character set was guessed (character-set-assumed, character-set-doubtful)",
    )
    outcome: Outcome | None = Field(default=None, description="event outcome")
    actor: _Name | None = Field(
        default=None, description="the user who acted, matched exactly (a console user or an API token's name)"
    )

    @model_validator(mode="after")
    def _time_range(self) -> Self:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since ({self.since.isoformat()}) is after until ({self.until.isoformat()})")
        return self

    @classmethod
    def parse(cls, **values: object) -> Self:
        """Build from loosely typed input (CLI strings); ``None`` means "not given". Raises :class:`QueryError`."""
        try:
            return cls(**{name: value for name, value in values.items() if value is not None})
        except ValidationError as exc:
            raise QueryError(describe_validation_error(exc)) from exc

    def recorded_filters(self) -> dict[str, Any]:
        """The given filters as JSON data for the audit payload (the patient ID has its own column)."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"patient_id"})


#: The largest seq the database holds (a 64-bit integer): a larger cursor is refused (422), not sent to the driver.
MAX_SEQ: Final = 2**63 - 1


#: Seq order of a page: ``asc`` oldest first (the API's default, as before), ``desc`` newest first.
Order = Literal["asc", "desc"]


class AuditQuery(AuditFilter):
    """Filters plus one page: at most ``limit`` events with ``after_seq < seq < before_seq``, the oldest of them in
    seq order (``order="asc"``) or the newest, newest first (``order="desc"``)."""

    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="events per page")
    after_seq: int = Field(default=0, ge=0, le=MAX_SEQ, description="keyset cursor: the previous page's next_after_seq")
    before_seq: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SEQ,
        description="keyset cursor: only events with a seq below it (newest first: the previous page's "
        "next_before_seq)",
    )
    order: Order = Field(default="asc", description="asc: oldest first; desc: newest first (page back with before_seq)")

    @model_validator(mode="after")
    def _seq_range(self) -> Self:
        if self.before_seq is not None and self.after_seq >= self.before_seq:
            raise ValueError(f"after_seq ({self.after_seq}) is not below before_seq ({self.before_seq})")
        return self

    def recorded_filters(self) -> dict[str, Any]:
        """As :meth:`AuditFilter.recorded_filters`, with the page; the default order (oldest first) is left out, so
        a query recorded before ``order`` existed and one recorded now read alike."""
        recorded = super().recorded_filters()
        if self.order == "asc":
            del recorded["order"]
        return recorded


@dataclass(frozen=True)
class AuditRecord:
    """One recorded audit event as read back: the stored columns, labels split, payload parsed.

    A row edited in the database may no longer hold a time in ``recorded_at`` (SQLite keeps any text): then
    ``recorded_at`` is ``None`` and ``recorded_at_unreadable`` holds the stored value, as text, so that QA can
    still read and export the tampered log (``audit verify`` names the row). Tables and CSV show it as
    ``unreadable: '<value>'``.
    """

    seq: int
    recorded_at: datetime | None
    event_type: str
    dicom_event_id: str
    outcome: str
    actor_ae: str | None
    actor_host: str | None
    actor_user: str | None
    actor_process: str
    study_uid: str | None
    accession: str | None
    patient_id: str | None
    model_name: str | None
    model_version: str | None
    labels: tuple[str, ...]
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    recorded_at_unreadable: str | None = None

    @classmethod
    def from_row(cls, row: sa.RowMapping | Mapping[str, Any]) -> AuditRecord:
        """Build from an ``audit_events`` row read with :func:`record_columns`."""
        values: dict[str, Any] = {name: _text(row[name]) for name in _TEXT_COLUMNS}
        values["seq"] = row["seq"]
        values["labels"] = tuple(label for label in (_text(row["labels"]) or "").split(",") if label)
        values["payload"] = _payload(_text(row["payload"]) or "")
        values["recorded_at"], values["recorded_at_unreadable"] = _recorded_at(row["recorded_at"])
        return cls(**values)


_TEXT_COLUMNS: Final = frozenset(
    {"event_type", "dicom_event_id", "outcome", "actor_ae", "actor_host", "actor_user", "actor_process", "study_uid",
     "accession", "patient_id", "model_name", "model_version", "prev_hash", "hash"}
)  # fmt: skip


def _text(stored: object) -> str | None:
    """A text column as text: SQLite keeps whatever an edit put there (a blob, a number), which must show as a
    value, not crash the JSON, CSV or XML writers. Bytes that are not UTF-8 are shown as ``\\xNN``."""
    if stored is None or isinstance(stored, str):
        return stored
    if isinstance(stored, bytes):
        return stored.decode("utf-8", "backslashreplace")
    return str(stored)


def record_columns(store: Store) -> list[sa.ColumnElement[Any]]:
    """The ``audit_events`` columns to read rows for :meth:`AuditRecord.from_row`.

    On SQLite ``recorded_at`` is read as the stored text and parsed here: the driver's own parsing raises on a
    value that is not a time, which made one edited row stop every query and export of the log.
    """
    table = AuditEventRow.__table__
    columns: list[sa.ColumnElement[Any]] = list(table.c)
    if not is_postgresql(store.engine):
        index = [column.name for column in columns].index("recorded_at")
        columns[index] = sa.type_coerce(table.c.recorded_at, sa.String).label("recorded_at")
    return columns


def _recorded_at(stored: object) -> tuple[datetime | None, str | None]:
    """(the time, None), or (None, the stored value as text) when it is not a time (an edited row)."""
    if isinstance(stored, datetime):
        return (stored.replace(tzinfo=UTC) if stored.tzinfo is None else stored.astimezone(UTC)), None
    if isinstance(stored, str):
        try:
            parsed = datetime.fromisoformat(stored)
        except ValueError:
            pass
        else:  # SQLite rows are stored in UTC without a zone (radtrace.store.base.UtcDateTime)
            return (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)), None
    if isinstance(stored, bytes):
        return None, stored.decode("utf-8", "backslashreplace")
    return None, str(stored)


def _payload(stored: str) -> dict[str, Any]:
    """The stored payload parsed; one that is no longer a JSON object (an edited row) comes back raw.

    ``audit verify`` names such a row; querying and exporting must still show it, and every row after it.
    """
    try:
        parsed = json.loads(stored)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"unreadable_payload": stored}


@dataclass(frozen=True)
class QueryPage:
    """One page of a query and the cursor of the next one in its order, ``None`` when this is the last:
    ``next_after_seq`` oldest first, ``next_before_seq`` newest first (the other is then ``None``)."""

    query: AuditQuery
    events: tuple[AuditRecord, ...]
    next_after_seq: int | None
    next_before_seq: int | None = None


def _has_label(store: Store, column: sa.ColumnElement[Any], label: str) -> sa.ColumnElement[bool]:
    # Rows store ",A,B,"; ",label," occurs only for that exact label. LIKE would need its %/_ escaped
    # and ignores ASCII case on SQLite but not on PostgreSQL; a substring position is literal and
    # case-sensitive on both.
    needle = f",{label},"
    position = sa.func.strpos(column, needle) if is_postgresql(store.engine) else sa.func.instr(column, needle)
    return position > 0


def _select(store: Store, selection: AuditFilter) -> sa.Select[Any]:
    table = AuditEventRow.__table__
    conditions: list[sa.ColumnElement[bool]] = []
    for name in ("study_uid", "accession", "patient_id", "model_name", "model_version", "event_type", "outcome"):
        value = getattr(selection, name)
        if value is not None:
            conditions.append(table.c[name] == str(value))
    if selection.actor is not None:
        conditions.append(table.c.actor_user == selection.actor)
    if selection.since is not None:
        conditions.append(table.c.recorded_at >= selection.since)
    if selection.until is not None:
        conditions.append(table.c.recorded_at < selection.until)
    if selection.label is not None:
        conditions.append(_has_label(store, table.c.labels, selection.label))
    if not is_postgresql(store.engine):
        # SQLite keeps a seq edited into text or a fraction, and sorts it after every number: such a row is not
        # part of the chain (audit verify names it) and has no place in a page; it is left out, not a crash.
        conditions.append(sa.func.typeof(table.c.seq) == "integer")
    return sa.select(*record_columns(store)).where(*conditions).order_by(table.c.seq)


def run_query(store: Store, query: AuditQuery, asked_by: Actor) -> QueryPage:
    """Read one page of matching events and record that ``asked_by`` ran this query.

    The page is returned only once the ``audit_queried`` event is committed: no one reads the log
    without leaving a trace.
    """
    table = AuditEventRow.__table__
    statement = _select(store, query).where(table.c.seq > query.after_seq)
    if query.before_seq is not None:
        statement = statement.where(table.c.seq < query.before_seq)
    if query.order == "desc":
        statement = statement.order_by(None).order_by(table.c.seq.desc())
    with store.session("querying the audit log") as session:
        rows = session.execute(statement.limit(query.limit + 1)).mappings().all()
    events = tuple(AuditRecord.from_row(row) for row in rows[: query.limit])
    cursor = events[-1].seq if len(rows) > query.limit else None
    next_after_seq, next_before_seq = (cursor, None) if query.order == "asc" else (None, cursor)
    payload: dict[str, Any] = {
        "view": "events",
        "filters": query.recorded_filters(),
        "returned": len(events),
        "next_after_seq": next_after_seq,
    }
    if query.order == "desc":
        payload["next_before_seq"] = next_before_seq
    AuditRecorder(store).record(
        AuditEvent(EventType.AUDIT_QUERIED, asked_by, patient_id=query.patient_id, payload=payload)
    )
    return QueryPage(query, events, next_after_seq, next_before_seq)


def export_records(store: Store, selection: AuditFilter, asked_by: Actor) -> Iterator[AuditRecord]:
    """Record an ``audit_exported`` event, then return an iterator over every matching event before it.

    The iterator reads in keyset batches of :data:`EXPORT_BATCH_ROWS`, each in its own short
    transaction, so an export of millions of rows uses constant memory and holds no lock while the
    client reads. Events appended after the export began are not part of it.
    """
    recorded = AuditRecorder(store).record(
        AuditEvent(
            EventType.AUDIT_EXPORTED,
            asked_by,
            patient_id=selection.patient_id,
            payload={"view": "export", "filters": selection.recorded_filters()},
        )
    )
    return _batches(store, selection, before_seq=recorded.seq)


def _batches(store: Store, selection: AuditFilter, *, before_seq: int) -> Iterator[AuditRecord]:
    table = AuditEventRow.__table__
    statement = _select(store, selection).where(table.c.seq < before_seq).limit(EXPORT_BATCH_ROWS)
    cursor = 0
    while True:
        with store.session("exporting the audit log") as session:
            rows = session.execute(statement.where(table.c.seq > cursor)).mappings().all()
        for row in rows:
            yield AuditRecord.from_row(row)
        if len(rows) < EXPORT_BATCH_ROWS:
            return
        cursor = rows[-1]["seq"]


# --- one study's timeline ------------------------------------------------------------------------

STAGES: Final[tuple[tuple[str, EventType, EventType], ...]] = (
    ("receive_to_queue", EventType.INSTANCE_RECEIVED, EventType.STUDY_QUEUED),  # transfer plus settle time
    ("queue_wait", EventType.STUDY_QUEUED, EventType.INFERENCE_STARTED),  # waiting for a GPU worker
    ("inference", EventType.INFERENCE_STARTED, EventType.INFERENCE_COMPLETED),
    ("report", EventType.INFERENCE_COMPLETED, EventType.REPORT_CREATED),
    ("dispatch", EventType.REPORT_CREATED, EventType.DISPATCH_DELIVERED),
    ("total", EventType.INSTANCE_RECEIVED, EventType.DISPATCH_DELIVERED),
)


@dataclass(frozen=True)
class TimelineEntry:
    """One event of the study with the seconds since the previous event (``None`` for the first) and the first.

    Both are ``None`` for an event whose time is unreadable (an edited row).
    """

    event: AuditRecord
    seconds_since_previous: float | None
    seconds_since_first: float | None


@dataclass(frozen=True)
class StageDuration:
    """How long one named stage took, between the two events that bound it."""

    name: str
    from_event: str
    to_event: str
    from_seq: int
    to_seq: int
    seconds: float


@dataclass(frozen=True)
class Timeline:
    """Every audit event of one study in seq order, with the stage durations its events allow."""

    study_uid: str
    entries: tuple[TimelineEntry, ...]
    stages: tuple[StageDuration, ...]


def study_timeline(store: Store, study_uid: str, asked_by: Actor) -> Timeline:
    """Build the timeline of ``study_uid`` and record that ``asked_by`` read it.

    Raises :class:`QueryError` for an empty or over-long UID. A study with no events gives an
    empty timeline (the lookup is recorded all the same).
    """
    selection = AuditFilter.parse(study_uid=study_uid)
    with store.session("reading a study's audit events") as session:
        rows = session.execute(_select(store, selection)).mappings().all()
    events = [AuditRecord.from_row(row) for row in rows]
    timeline = build_timeline(str(selection.study_uid), events)
    payload = {"view": "timeline", "study_uid": timeline.study_uid, "returned": len(events)}
    AuditRecorder(store).record(AuditEvent(EventType.AUDIT_QUERIED, asked_by, payload=payload))
    return timeline


def build_timeline(study_uid: str, events: list[AuditRecord]) -> Timeline:
    """The timeline of already-read events (pure: no database, nothing recorded)."""
    entries: list[TimelineEntry] = []
    # An event whose time is unreadable (an edited row) has no durations, and is no one's reference.
    first = next((event.recorded_at for event in events if event.recorded_at is not None), None)
    previous: datetime | None = None
    for event in events:
        at = event.recorded_at
        since_previous = (at - previous).total_seconds() if at is not None and previous is not None else None
        since_first = (at - first).total_seconds() if at is not None and first is not None else None
        entries.append(TimelineEntry(event, since_previous, since_first))
        previous = at if at is not None else previous
    return Timeline(study_uid, tuple(entries), _stages(events))


def _stages(events: list[AuditRecord]) -> tuple[StageDuration, ...]:
    stages: list[StageDuration] = []
    retries = [event.seq for event in events if event.event_type == EventType.STUDY_RETRIED.value]
    for name, opened_by, closed_by in STAGES:
        start = next((event for event in events if event.event_type == opened_by.value), None)
        if start is None:
            continue
        end = next((e for e in events if e.seq > start.seq and e.event_type == closed_by.value), None)
        if end is None:
            continue
        # An operator's `radtrace study retry` in between (hours after the failure): the stage ran again after it,
        # and that run is the one that ended (the model's reading was the failed attempt's start to the retried
        # reading's end before). The whole path, which opened only once, keeps its first start.
        retried = [seq for seq in retries if start.seq < seq < end.seq]
        if retried:
            start = next((e for e in events if retried[-1] < e.seq < end.seq and e.event_type == opened_by.value),
                         start)  # fmt: skip
        if start.recorded_at is None or end.recorded_at is None:
            continue
        seconds = (end.recorded_at - start.recorded_at).total_seconds()
        stages.append(StageDuration(name, opened_by.value, closed_by.value, start.seq, end.seq, seconds))
    return tuple(stages)
