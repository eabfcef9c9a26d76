"""The audit explorer (console, ``qa`` and ``admin``): the audit query as a form, study timelines, verify, CSV.

Everything here runs the audit package's own code, so the console, the CLI and the QA API answer alike and
record alike: a page of events is :func:`~radtrace.audit.queries.run_query` (an ``audit_queried`` event naming
the console user), a study's timeline :func:`~radtrace.audit.queries.study_timeline`, verification
:func:`~radtrace.audit.operations.verify_audit_log` (``audit_verified``, and ``tamper_detected`` when broken) and
the CSV export :func:`~radtrace.audit.queries.export_records` (``audit_exported``, recorded before the first byte).

Events are listed newest first unless the form asks for oldest first (``order=asc``): QA staff come here to find
what happened last night, and oldest first opened on the day the site was installed, so reaching last night meant
paging through the whole log or typing a time. Pages are keyset-paged on ``seq`` as the API is, both ways: a page
older than the one shown is ``before_seq`` (read newest first), a newer one ``after_seq`` (read oldest first), each
shown in the form's order (at most :data:`MAX_PAGE_SIZE` events a page).
Times are shown, and read from the form, in the site's zone ``qa.time_zone`` (default UTC), as the QA dashboard's
days are, and each page names it (a ``datetime-local`` field has no zone: its time is that zone's, a DST overlap's
first occurrence); a time given with a zone in the URL is kept. The CSV export keeps UTC (ISO 8601 with its offset).
A filter that does not parse gets a 400 page naming the filter and the problem.

A patient ID, accession or Study UID never sits in a URL: a search is POSTed and its patient identifiers kept
under a token (``q``), a study's timeline is ``/console/audit/timeline/<handle>``. Tokens and handles are kept in
the database (:mod:`radtrace.console.links`), so a link made by one console process works in another and after a
restart, for :data:`~radtrace.console.links.LINK_TTL_S` after a page last showed it.

Verification (``admin``) runs in a background thread of this process, one at a time, so a long walk over
millions of rows neither blocks the event loop nor runs twice; the page polls ``/console/audit/verify/progress``
(console.js) and shows the result when it ends. The CSV export (``admin``, as the API's) is streamed, and every
text cell a spreadsheet would run as a formula is prefixed with an apostrophe.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from radtrace.audit.checkpoints import CheckpointSource
from radtrace.audit.events import EventType, Outcome, canonical_json
from radtrace.audit.presentation import csv_chunks, recorded_text
from radtrace.audit.queries import (
    STAGES,
    AuditFilter,
    AuditQuery,
    AuditRecord,
    Order,
    QueryError,
    QueryPage,
    Timeline,
    export_records,
    run_query,
    study_timeline,
)
from radtrace.console.accounts import ConsoleRole, SignedIn
from radtrace.console.explorer_verify import Verifier, VerifyRun
from radtrace.console.links import LINK_TTL_S, TIMELINE, UID, ConsoleLinks
from radtrace.console.pages import (
    PREFIX,
    SECURITY_HEADERS,
    ConsoleState,
    StateDep,
    UserDep,
    check_csrf,
    console_state,
    control_character_problem,
    read_form,
    redirect,
    render_page,
    request_actor,
)
from radtrace.console.times import shown_time

__all__ = ["DEFAULT_ORDER", "DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "VerifyRun", "router"]

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
PAGE_SIZES: Final = (25, 50, 100, 200)
#: The list's order unless the form asks otherwise: newest first (see the module doc).
DEFAULT_ORDER: Final[Order] = "desc"
ORDERS: Final[dict[str, str]] = {"desc": "newest first", "asc": "oldest first"}
#: A page's parameters beside the filters.
PAGE_PARAMS: Final = ("limit", "after_seq", "before_seq", "order")
PAYLOAD_SHOWN_CHARS: Final = 2000
REASON_SHOWN_CHARS: Final = 300
#: The form's filters, in the order shown; each is a field of :class:`AuditFilter`.
FILTERS: Final = (
    "since", "until", "event_type", "outcome", "study_uid", "accession", "patient_id", "actor", "model_name",
    "model_version", "label",
)  # fmt: skip
#: Filters that identify a patient (a Study Instance UID too: it names one patient's study): never in a URL (see
#: :meth:`radtrace.console.links.ConsoleLinks.save_search`).
PATIENT_FILTERS: Final = ("patient_id", "accession", "study_uid")
#: How the chart names the stages of :data:`radtrace.audit.queries.STAGES`.
STAGE_NAMES: Final = {
    "receive_to_queue": "received → queued", "queue_wait": "queued → read", "inference": "model reading",
    "report": "read → report", "dispatch": "report → delivered", "total": "received → delivered",
}  # fmt: skip
_NAIVE_TIME: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$")

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _reader(user: SignedIn) -> None:
    if user.account.role not in (ConsoleRole.QA, ConsoleRole.ADMIN):
        raise HTTPException(403, detail=f"the audit explorer is for qa and admin; you are signed in as "
                                        f"{user.account.role.value}")  # fmt: skip


def _admin(user: SignedIn, what: str) -> None:
    if user.account.role is not ConsoleRole.ADMIN:
        raise HTTPException(403, detail=f"only an admin may {what}; you are signed in as {user.account.role.value}")


# --- the query form --------------------------------------------------------------------------


_HELD_LOCK: Final = threading.Lock()
T = TypeVar("T")


def _held(request: Request, name: str, kind: Callable[[], T]) -> T:
    """The one ``kind`` this application holds as ``app.state.<name>``, made on first use (under a lock: two first
    requests at once must not make two)."""
    with _HELD_LOCK:
        held = getattr(request.app.state, name, None)
        if held is None:
            held = kind()
            setattr(request.app.state, name, held)
        return held


def _links(request: Request) -> ConsoleLinks:
    return console_state(request).links


def _timeline_handles(request: Request, events: Iterable[AuditRecord]) -> dict[str, str]:
    """The timeline handle of each event's Study UID (an event with none, or with one that is not a UID, gets no
    link)."""
    return _links(request).timeline_handles(event.study_uid for event in events if event.study_uid)


class ExpiredSearchError(QueryError):
    """A ``q`` token the database does not hold (expired, or never made)."""


def _typed(source: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The named fields that are given (blank fields are "not given"), as typed."""
    given = {}
    for name in names:
        value = source.get(name, "").strip()
        if value:
            given[name] = value
    return given


def _given(request: Request) -> dict[str, str]:
    """The filters of a GET: those in the URL, and the patient identifiers saved under its ``q`` token."""
    given = _typed(request.query_params, FILTERS)
    token = request.query_params.get("q", "").strip()
    if token:
        saved = _links(request).saved_search(token)
        if saved is None:
            raise ExpiredSearchError(
                "this search link has expired (searches with a patient ID, accession or Study UID are kept "
                f"{LINK_TTL_S // 3600} hours): search again"
            )
        given.update(_typed(saved, PATIENT_FILTERS))
    return given


def _address(request: Request, path: str, given: dict[str, str], **extra: str | int) -> str:
    """``path`` with the filters in the query string, the patient identifiers replaced by a saved token."""
    shown = {name: value for name, value in given.items() if name not in PATIENT_FILTERS}
    hidden = _typed(given, PATIENT_FILTERS)
    if hidden:
        extra = {**extra, "q": _links(request).save_search(hidden)}
    return _link(path, shown, **extra)


def _identifiers_in_url(request: Request, path: str) -> Response | None:
    """A GET whose URL carries a patient ID, accession or Study UID (an old bookmark, a typed URL) is answered once,
    by a redirect to the same search with them saved under a token, so the pages that follow do not carry them."""
    if not _typed(request.query_params, PATIENT_FILTERS):
        return None
    given = _typed(request.query_params, FILTERS)
    page = _typed(request.query_params, PAGE_PARAMS)
    return redirect(_address(request, path, given, **page))


def zone_of(state: ConsoleState) -> ZoneInfo:
    """The site's zone (``qa.time_zone``, checked when the settings load): the explorer's times, as the dashboard's."""
    return ZoneInfo(state.settings.qa.time_zone)


def _in_zone(value: str, zone: ZoneInfo) -> str:
    # A datetime-local field sends "2025-03-03T08:00" with no zone: the form names the site's zone, so it is that one.
    if not _NAIVE_TIME.match(value):
        return value
    return datetime.fromisoformat(value).replace(tzinfo=zone).isoformat()


def _selection(given: dict[str, str], zone: ZoneInfo) -> dict[str, str]:
    return {name: _in_zone(value, zone) if name in ("since", "until") else value for name, value in given.items()}


def _query(request: Request, given: dict[str, str], zone: ZoneInfo) -> tuple[AuditQuery, Order]:
    """The page the request asks for, and the order to show it in; raises :class:`QueryError` naming each bad
    value."""
    _check_characters(given)
    return _query_of(given, _typed(request.query_params, PAGE_PARAMS), zone)


def _query_of(given: dict[str, str], page: Mapping[str, str], zone: ZoneInfo) -> tuple[AuditQuery, Order]:
    """The query of a page (its own order: the rows nearest its cursor, newest first below ``before_seq``, oldest
    first above ``after_seq``), and the order the list is shown in."""
    limit = page.get("limit", str(DEFAULT_PAGE_SIZE))
    if limit.isdigit() and int(limit) > MAX_PAGE_SIZE:
        raise QueryError(f"invalid audit query: limit: at most {MAX_PAGE_SIZE} events a page (got {limit!r})")
    shown = page.get("order", DEFAULT_ORDER)
    if shown not in ORDERS:
        raise QueryError(f"invalid audit query: order: asc (oldest first) or desc (newest first) (got {shown!r})")
    before, after = page.get("before_seq"), page.get("after_seq", "0")
    read = "desc" if before is not None else "asc" if after != "0" else shown
    query = AuditQuery.parse(**_selection(given, zone), limit=limit, after_seq=after, before_seq=before, order=read)
    return query, "desc" if shown == "desc" else "asc"


@dataclass(frozen=True)
class Pager:
    """The links around a page: to the first page of the list (newest or oldest), to older and to newer events."""

    first: str | None
    older: str | None
    newer: str | None


def _pager(query: AuditQuery, page: QueryPage, kept: dict[str, str]) -> Pager:
    """Older and newer links exist when events lie that way: past the page in its reading order when its query found
    more, and on the side it was reached from (a page reached through a cursor has a neighbour there)."""
    more = (page.next_after_seq if query.order == "asc" else page.next_before_seq) is not None
    reached = query.before_seq is not None or query.after_seq > 0
    seqs = [event.seq for event in page.events]
    older = newer = None
    if seqs and ((query.order == "desc" and more) or (query.order == "asc" and query.after_seq > 0)):
        older = _link("/audit", kept, before_seq=min(seqs))
    if seqs and ((query.order == "asc" and more) or (query.order == "desc" and query.before_seq is not None)):
        newer = _link("/audit", kept, after_seq=max(seqs))
    return Pager(_link("/audit", kept) if reached else None, older, newer)


def _check_characters(given: dict[str, str]) -> None:
    problem = control_character_problem(given)
    if problem:
        raise QueryError(f"invalid audit query: {problem}")


def _form_values(query: AuditFilter, zone: ZoneInfo) -> dict[str, str]:
    """The parsed filters as the form shows them (times in the site's zone for the datetime-local fields)."""
    values = {}
    for name in FILTERS:
        value = getattr(query, name)
        if isinstance(value, datetime):
            values[name] = value.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S.%f" if value.microsecond else
                                                          "%Y-%m-%dT%H:%M:%S")  # fmt: skip
        elif value is not None:
            values[name] = str(value)
    return values


def _link(path: str, values: dict[str, str], **extra: str | int) -> str:
    return f"{PREFIX}{path}?" + urlencode({**values, **{name: str(value) for name, value in extra.items()}})


@dataclass(frozen=True)
class EventRow:
    """One event as the results table shows it."""

    event: AuditRecord
    actor: str
    model: str
    payload: str
    timeline_url: str | None
    recorded: str  # to the second; "unreadable: '...'" for a row whose time was edited into a non-time
    recorded_ms: str  # to the millisecond (the timeline)
    #: The payload's ``reason`` of an event that did not succeed (a study failed or skipped, an instance refused, a
    #: delivery given up), shown in the row: before, it sat in the collapsed payload. Cut at REASON_SHOWN_CHARS.
    reason: str = ""


def _row(event: AuditRecord, handles: Mapping[str, str], zone: ZoneInfo) -> EventRow:
    handle = handles.get(event.study_uid or "")
    who = event.actor_user or event.actor_ae or event.actor_process
    payload = canonical_json(event.payload) if event.payload else ""
    if len(payload) > PAYLOAD_SHOWN_CHARS:
        payload = payload[:PAYLOAD_SHOWN_CHARS] + " … (the CSV export has it whole)"
    return EventRow(
        event,
        f"{who}@{event.actor_host}" if event.actor_host else who,
        " ".join(part for part in (event.model_name, event.model_version) if part),
        payload,
        f"{PREFIX}/audit/timeline/{handle}" if handle else None,
        recorded_text(event, lambda at: shown_time(at, zone)),
        recorded_text(event, lambda at: shown_time(at, zone, ms=True)),
        _reason(event),
    )


def _reason(event: AuditRecord) -> str:
    reason = event.payload.get("reason") if event.payload and event.outcome != Outcome.SUCCESS.value else None
    if not isinstance(reason, str) or not reason:
        return ""
    return reason if len(reason) <= REASON_SHOWN_CHARS else reason[:REASON_SHOWN_CHARS] + " …"


def _explorer(request: Request, state: ConsoleState, user: SignedIn, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("order", DEFAULT_ORDER)
    return render_page(request, state, "audit.html", status, user=user, filters=FILTERS, page_sizes=PAGE_SIZES,
                       zone_name=zone_of(state).key, orders=ORDERS,
                       event_types=[t.value for t in EventType], outcomes=[o.value for o in Outcome],
                       is_admin=user.account.role is ConsoleRole.ADMIN, **context)  # fmt: skip


@router.get("/audit")
def explorer_page(request: Request, state: StateDep, user: UserDep) -> Response:
    """One page of audit events matching the form's filters, newest first unless asked otherwise (the query is
    recorded)."""
    _reader(user)
    moved = _identifiers_in_url(request, "/audit")
    if moved is not None:
        return moved
    given: dict[str, str] = {}
    try:
        given = _given(request)
        query, shown_order = _query(request, given, zone_of(state))
    except QueryError as exc:
        return _explorer(request, state, user, 400, error=exc.reason, values=given, limit=DEFAULT_PAGE_SIZE,
                         rows=None)  # fmt: skip
    page = run_query(state.store, query, request_actor(request, user))
    zone = zone_of(state)
    values = _form_values(query, zone)
    token = {"q": request.query_params["q"]} if _typed(values, PATIENT_FILTERS) else {}
    shown = {name: value for name, value in values.items() if name not in PATIENT_FILTERS}
    kept = {**shown, **token, "limit": str(query.limit), "order": shown_order}
    handles = _timeline_handles(request, page.events)
    events = page.events if query.order == shown_order else page.events[::-1]
    return _explorer(
        request, state, user, values=values, limit=query.limit, rows=[_row(e, handles, zone) for e in events],
        order=shown_order, pager=_pager(query, page, kept),
        export_url=_link("/audit/export.csv", {**shown, **token}),
    )  # fmt: skip


@router.post("/audit")
async def explorer_search(request: Request, state: StateDep, user: UserDep) -> Response:
    """The form, POSTed so that a patient ID or accession never sits in a URL; answered by a redirect to the
    results page (Post/Redirect/Get: the back button and reload work), its patient identifiers under a token."""
    form = await read_form(request)
    check_csrf(user.csrf_token, form)
    _reader(user)
    given = _typed(form, FILTERS)
    page = _typed(form, ("limit", "order"))
    try:
        _check_characters(given)
        _query_of(given, page, zone_of(state))
    except QueryError as exc:  # answered here, with the form as typed: nothing was searched, nothing recorded
        return _explorer(request, state, user, 400, error=exc.reason, values=given, limit=DEFAULT_PAGE_SIZE,
                         rows=None)  # fmt: skip
    return redirect(_address(request, "/audit", given, **page))


# --- one study's timeline --------------------------------------------------------------------


@dataclass(frozen=True)
class StageRow:
    """A stage of the lifecycle as the page lists it: measured, or why not."""

    name: str
    label: str
    from_event: str
    to_event: str
    seconds: float | None


def _stage_rows(timeline: Timeline) -> list[StageRow]:
    measured = {stage.name: stage for stage in timeline.stages}
    rows = []
    for name, opened_by, closed_by in STAGES:
        stage = measured.get(name)
        rows.append(StageRow(name, STAGE_NAMES.get(name, name), opened_by.value, closed_by.value,
                             stage.seconds if stage else None))  # fmt: skip
    return rows


def _problem(request: Request, state: ConsoleState, user: SignedIn, status: int, title: str, reason: str) -> Response:
    return render_page(request, state, "audit_problem.html", status, user=user, title=title, reason=reason)


@router.get("/audit/studies/{study_uid}")
def timeline_by_uid(request: Request, study_uid: str, state: StateDep, user: UserDep) -> Response:
    """An old timeline link, with the Study UID in its URL: answered once, by a redirect to the study's handle."""
    _reader(user)
    if not UID.match(study_uid):
        return _problem(request, state, user, 400, "Not a Study Instance UID",
                        "a Study Instance UID is 1 to 64 digits and dots")  # fmt: skip
    return redirect(f"{PREFIX}/audit/timeline/{_links(request).timeline_handles([study_uid])[study_uid]}")


@router.get("/audit/timeline/{handle}")
def timeline_page(request: Request, handle: str, state: StateDep, user: UserDep) -> Response:
    """Every audit event of one study, its stages as a chart and a table (the lookup is recorded)."""
    _reader(user)
    study_uid = _links(request).study_uid(TIMELINE, handle)
    if study_uid is None:
        return _problem(request, state, user, 404, "This timeline link has expired",
                        f"timeline links are kept {LINK_TTL_S // 3600} hours after a page last showed them: "
                        "search for the study again")  # fmt: skip
    try:
        timeline = study_timeline(state.store, study_uid, request_actor(request, user))
    except QueryError as exc:
        return _problem(request, state, user, 400, "Not a Study Instance UID", exc.reason)
    if not timeline.entries:
        return _problem(request, state, user, 404, "No such study in the audit log",
                        "no audit event names this study")  # fmt: skip
    handles = _timeline_handles(request, [entry.event for entry in timeline.entries])
    return render_page(request, state, "audit_timeline.html", user=user, timeline=timeline,
                       rows=[(entry, _row(entry.event, handles, zone_of(state))) for entry in timeline.entries],
                       zone_name=zone_of(state).key,
                       stages=_stage_rows(timeline), chart=_chart(timeline),
                       events_url=_address(request, "/audit", {"study_uid": study_uid}))  # fmt: skip


def _chart(timeline: Timeline) -> str:
    """The measured stages as bars on the study's time axis (SVG from the console's chart module); "" if none."""
    from radtrace.console.chart_timeline import Stage, stage_timeline_svg

    if not timeline.stages:
        return ""
    since_first = {entry.event.seq: entry.seconds_since_first for entry in timeline.entries}
    # A stage is measured only between events with readable times, so its start has an offset.
    bars = [
        Stage(STAGE_NAMES.get(stage.name, stage.name), since_first[stage.from_seq] or 0.0, stage.seconds)
        for stage in timeline.stages
    ]
    return str(stage_timeline_svg(bars, title=f"Stages of study {timeline.study_uid}", width=960, label_width=160))


# --- CSV export ------------------------------------------------------------------------------


@router.get("/audit/export.csv")
def export_page(request: Request, state: StateDep, user: UserDep) -> Response:
    """Every event matching the form's filters as CSV, streamed (admin; recorded before the first byte)."""
    _reader(user)
    _admin(user, "export the audit log")
    moved = _identifiers_in_url(request, "/audit/export.csv")
    if moved is not None:
        return moved
    given: dict[str, str] = {}
    try:
        given = _given(request)
        _check_characters(given)
        selection = AuditFilter.parse(**_selection(given, zone_of(state)))
    except QueryError as exc:
        return _explorer(request, state, user, 400, error=exc.reason, values=given, limit=DEFAULT_PAGE_SIZE,
                         rows=None)  # fmt: skip
    records = export_records(state.store, selection, request_actor(request, user))
    headers = {**SECURITY_HEADERS, "Content-Disposition": 'attachment; filename="radtrace-audit.csv"'}
    return StreamingResponse(csv_chunks(records), media_type="text/csv; charset=utf-8",
                             headers=headers)  # fmt: skip


# --- verification ----------------------------------------------------------------------------


def _verifier(request: Request) -> Verifier:
    return _held(request, "audit_verifier", Verifier)


def _verify_page(request: Request, state: ConsoleState, user: SignedIn, run: VerifyRun | None,
                 status: int = 200, busy: bool = False) -> HTMLResponse:  # fmt: skip
    zone = zone_of(state)
    return render_page(request, state, "audit_verify.html", status, user=user, run=run, busy=busy,
                       zone_name=zone.key, shown=lambda at: shown_time(at, zone))  # fmt: skip


@router.get("/audit/verify")
def verify_page(request: Request, state: StateDep, user: UserDep) -> HTMLResponse:
    """The last verification started here: its progress while it runs, then its result; a button to start one."""
    _reader(user)
    _admin(user, "verify the audit chain")
    return _verify_page(request, state, user, _verifier(request).current)


@router.post("/audit/verify")
async def verify_start(request: Request, state: StateDep, user: UserDep) -> Response:
    """Start walking the hash chain (admin; recorded with its outcome); 409 while another walk is running."""
    form = await read_form(request)
    check_csrf(user.csrf_token, form)
    _reader(user)
    _admin(user, "verify the audit chain")
    checkpoints = CheckpointSource.for_settings(state.settings)
    run, started = _verifier(request).start(state.store, request_actor(request, user), checkpoints)
    if not started:
        return _verify_page(request, state, user, run, 409, busy=True)
    return redirect(f"{PREFIX}/audit/verify")


@router.get("/audit/verify/progress")
def verify_progress(request: Request, user: UserDep) -> JSONResponse:
    """How far the current walk is (polled by console.js)."""
    _reader(user)
    _admin(user, "verify the audit chain")
    run = _verifier(request).current
    body = run.as_json() if run is not None else {"running": False, "checked": 0, "total": 0}
    return JSONResponse(body, headers=SECURITY_HEADERS)
