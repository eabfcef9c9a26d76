"""The QA dashboard (console, ``qa`` and ``admin``): volume, latency, agreement and drift over a chosen period.

``GET /console/dashboard?from=YYYY-MM-DD&to=YYYY-MM-DD&period=day|week`` draws every figure of
:mod:`radtrace.console.dashboard_figures` for the days ``from`` to ``to`` (inclusive; default the last 30 days) by
day or by ISO week. Days are the site's local calendar days in ``qa.time_zone`` (default UTC), weeks start on
their Monday, and a DST day counts its 23 or 25 hours. Label drift uses the ``qa`` settings that the Prometheus
rules use (``qa.baseline_days`` before the window set the control limits; a label drifts when its daily rate stays
outside its 95 % limits on one side for ``qa.drift_run_days`` days) and the same local days of ``qa.time_zone``
as the rules (:mod:`radtrace.qa.metrics`), so the page and the site's alerting agree; the audit explorer shows its
times in that zone too.

By week, the figures cover whole ISO weeks: from the Monday of ``from``'s week, which the page names as the first
day counted. Agreement is shown per label, per label and model version of the reading decided, and per label and
period (the share accepted).

Every chart's numbers download as CSV (:mod:`.dashboard_csv`) from ``/console/dashboard/<chart>.csv`` with the same
parameters; a text cell that a spreadsheet would run as a formula (``= + - @``, tab, CR) is prefixed with an
apostrophe. The studies behind an agreement figure are listed at ``/console/dashboard/agreement`` (label and
decision), each linked to its study page by the study's handle (:mod:`.links`), never its UID; the decisions left
out of them (drafts withdrawn as wrong-patient) at ``/console/dashboard/left-out``, paged, and as CSV
(``left-out/export.csv``). Viewing the dashboard and listing studies are recorded as ``audit_queried``, a CSV
download as ``audit_exported`` (``view: dashboard``), naming the console user, like every other use of the console.

radtrace keeps no site per study: the page says it shows a single site.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from radtrace.audit.events import AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.console.charts import (
    Band,
    Marker,
    Series,
    bar_chart_svg,
    horizontal_bars_svg,
    percent,
    time_series_svg,
)
from radtrace.console.dashboard_agreement import WHOLE_DRAFT, agreement_studies
from radtrace.console.dashboard_csv import (
    DECISION_NAMES,
    SECTIONS,
    TABLES,
    csv_text,
    drift_periods,
    label_model_agreement,
    left_out_rows,
    rate,
)
from radtrace.console.dashboard_figures import (
    LATENCY_STAGES,
    Figures,
    read_figures,
    top_values,
)
from radtrace.console.dashboard_left_out import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, all_left_out, left_out_page
from radtrace.console.dashboard_queries import Window
from radtrace.console.pages import (
    PREFIX,
    SECURITY_HEADERS,
    ConsoleState,
    StateDep,
    UserDep,
    control_character_problem,
    render_page,
    request_actor,
    sync_worklist,
)
from radtrace.qa.agreement import DECISIONS
from radtrace.qa.drift import DriftAlert

__all__ = ["CHARTS", "DEFAULT_DAYS", "MAX_DAYS", "router"]

DEFAULT_DAYS: Final = 30
MAX_DAYS: Final = 366
#: The days a window may show: the baseline before ``from`` and the period after ``to`` stay in the calendar.
EARLIEST: Final = date(1970, 1, 1)
LATEST: Final = date(9998, 12, 31)
CHARTS: Final = ("volume", "queue", "latency", "agreement", "agreement_models", "agreement_periods", "prevalence",
                  "failures", "mix", "rates", "models")  # fmt: skip
VOLUME_COLOURS: Final = {"read": "#56b4e9", "skipped": "#e69f00", "failed": "#ff5a4f"}
#: A share resting on fewer cases than this (decisions, readings) is drawn hollow: its 95 % interval spans
#: tens of points either way, so a lone high or low point says little.
FEW: Final = 10

router = APIRouter(prefix=PREFIX, include_in_schema=False)

FromDate = Annotated[date | None, Query(alias="from", description="first day shown (qa.time_zone), YYYY-MM-DD")]
ToDate = Annotated[date | None, Query(alias="to", description="last day shown (qa.time_zone), YYYY-MM-DD")]
Granularity = Annotated[Literal["day", "week"], Query(description="one point per day or per ISO week")]


def _qa(user: Any) -> None:
    if user.account.role.value not in ("qa", "admin"):
        raise HTTPException(403, detail=f"the dashboard is for qa and admin users; you are signed in as "
                                        f"{user.account.role.value}")  # fmt: skip


def _window(state: ConsoleState, first: date | None, last: date | None, period: str) -> Window:
    rules = state.settings.qa
    today = datetime.now(UTC).astimezone(ZoneInfo(rules.time_zone)).date()  # the site's today, not UTC's
    last = last or today
    if not EARLIEST <= last <= LATEST:  # checked before any date arithmetic that could leave the calendar
        raise HTTPException(422, detail=f"to ({last}) must lie between {EARLIEST} and {LATEST}")
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if not EARLIEST <= first <= LATEST:
        raise HTTPException(422, detail=f"from ({first}) must lie between {EARLIEST} and {LATEST}")
    if first > last:
        raise HTTPException(422, detail=f"from ({first}) is after to ({last})")
    if (last - first).days + 1 > MAX_DAYS:
        raise HTTPException(422, detail=f"at most {MAX_DAYS} days at a time; {first} to {last} is "
                                        f"{(last - first).days + 1}")  # fmt: skip
    return Window(first, last, "week" if period == "week" else "day", rules.baseline_days, rules.drift_run_days,
                  rules.time_zone)  # fmt: skip


def _record(request: Request, state: ConsoleState, user: Any, kind: EventType, **payload: Any) -> None:
    AuditRecorder(state.store).record(
        AuditEvent(kind, request_actor(request, user), payload={"via": "console", "view": "dashboard", **payload})
    )


def _params(window: Window) -> dict[str, str]:
    return {"from": window.first.isoformat(), "to": window.last.isoformat(), "period": window.period}


@router.get("/dashboard")
def dashboard_page(
    request: Request, state: StateDep, user: UserDep, first: FromDate = None, last: ToDate = None,
    period: Granularity = "day",
) -> HTMLResponse:  # fmt: skip
    """The dashboard for the chosen days (default the last 30), by day or week; a window that cannot be shown is
    a 422 page naming why, with the period form as it was sent."""
    _qa(user)
    try:
        window = _window(state, first, last, period)
    except HTTPException as exc:
        given = {"from": first.isoformat() if first else "", "to": last.isoformat() if last else "", "period": period}
        return render_page(request, state, "dashboard_problem.html", exc.status_code, user=user, params=given,
                           reason=str(exc.detail))  # fmt: skip
    sync_worklist(state)  # the worklist's projection carries the views and flags counted here
    figures = read_figures(state.store, window, datetime.now(UTC))
    _record(request, state, user, EventType.AUDIT_QUERIED, **_params(window))
    return render_page(request, state, "dashboard.html", user=user, f=figures, window=window, params=_params(window),
                       charts=_charts(figures), alerts=_alerts(figures), stage_names=LATENCY_STAGES,
                       model_changes=model_changes(figures), few=FEW, checks=_drift_checks(figures),
                       by_model=label_model_agreement(figures),
                       decisions=DECISION_NAMES, whole_draft=WHOLE_DRAFT)  # fmt: skip


@router.get("/dashboard/agreement")
def agreement_cell(
    request: Request, state: StateDep, user: UserDep,
    label: Annotated[str, Query(min_length=1, max_length=255)],
    decision: Annotated[Literal["accept", "reject", "modify"], Query()],
    first: FromDate = None, last: ToDate = None, period: Granularity = "day",
) -> HTMLResponse:  # fmt: skip
    """The studies behind one agreement figure: whose findings of ``label`` got ``decision`` in the window."""
    _qa(user)
    problem = control_character_problem({"label": label})
    if problem:
        raise HTTPException(400, detail=problem)
    window = _window(state, first, last, period)
    studies = agreement_studies(state.store, window, label, decision)
    _record(request, state, user, EventType.AUDIT_QUERIED, **_params(window), label=label, decision=decision,
            returned=len(studies))  # fmt: skip
    handles = state.links.study_handles(uid for uid, *_ in studies)  # each linked by its handle, not its UID
    return render_page(request, state, "dashboard_studies.html", user=user, window=window, params=_params(window),
                       label=label, decision=DECISION_NAMES[decision], studies=studies, handles=handles)  # fmt: skip


LeftOutLimit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="decisions a page")]
Cursor = Annotated[int | None, Query(ge=0, description="a decision's audit seq")]


@router.get("/dashboard/left-out")
def left_out_list(
    request: Request, state: StateDep, user: UserDep, first: FromDate = None, last: ToDate = None,
    period: Granularity = "day", before_seq: Cursor = None, after_seq: Cursor = None,
    limit: LeftOutLimit = DEFAULT_PAGE_SIZE,
) -> HTMLResponse:  # fmt: skip
    """The decisions behind the agreement section's note: each current decision of the window left out because its
    draft was withdrawn as wrong-patient, newest first, a page at a time (:mod:`.dashboard_left_out`)."""
    _qa(user)
    window = _window(state, first, last, period)
    page = left_out_page(state.store, window, before_seq=before_seq, after_seq=after_seq, limit=limit)
    _record(request, state, user, EventType.AUDIT_QUERIED, **_params(window), list="left_out",
            returned=len(page.decisions))  # fmt: skip
    handles = state.links.study_handles(d.study_uid for d in page.decisions)  # linked by handle, never the UID
    return render_page(request, state, "dashboard_left_out.html", user=user, window=window, params=_params(window),
                       page=page, handles=handles, decisions=DECISION_NAMES, limit=limit)  # fmt: skip


@router.get("/dashboard/left-out/export.csv")
def left_out_csv(
    request: Request, state: StateDep, user: UserDep, first: FromDate = None, last: ToDate = None,
    period: Granularity = "day",
) -> Response:  # fmt: skip
    """Every decision of :func:`left_out_list` in the window, as CSV (text cells formula-safe)."""
    _qa(user)
    window = _window(state, first, last, period)
    rows = left_out_rows(window, all_left_out(state.store, window))
    _record(request, state, user, EventType.AUDIT_EXPORTED, chart="left_out", rows=len(rows) - 1, **_params(window))
    name = f"radtrace-left-out-{window.first}-{window.last}-{window.period}.csv"
    return Response(csv_text(rows), media_type="text/csv; charset=utf-8",
                    headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


@router.get("/dashboard/{chart}.csv")
async def chart_csv(
    request: Request, state: StateDep, user: UserDep,
    chart: Annotated[str, PathParam(max_length=32)],
    first: FromDate = None, last: ToDate = None, period: Granularity = "day",
) -> Response:  # fmt: skip
    """One chart's numbers as CSV (text cells formula-safe)."""
    _qa(user)
    if chart not in CHARTS:
        raise HTTPException(404, detail=f"no chart {chart!r}; the charts are: {', '.join(CHARTS)}")
    window = _window(state, first, last, period)
    needs = SECTIONS[chart]
    if needs & {"mix", "rates"}:  # counted from the worklist's projection, brought up to date as the page does
        await run_in_threadpool(sync_worklist, state)
    figures = await run_in_threadpool(read_figures, state.store, window, datetime.now(UTC), needs)
    rows = TABLES[chart](figures)
    await run_in_threadpool(_record, request, state, user, EventType.AUDIT_EXPORTED, chart=chart, rows=len(rows) - 1,
                            **_params(window))  # fmt: skip
    name = f"radtrace-{chart}-{window.first}-{window.last}-{window.period}.csv"
    return Response(csv_text(rows), media_type="text/csv; charset=utf-8",
                    headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


# --- charts ------------------------------------------------------------------------------------------------------


def _label(p: date, period: str) -> str:
    return p.strftime("%d %b") if period == "day" else f"wk {p.strftime('%d %b')}"


def _drift_checks(f: Figures) -> dict[str, list[str]]:
    """The labels present in the window whose drift was checked (a baseline, so control limits) and those that
    were not: the alert box says "No label drifted" only of the first. Before, it said so at go-live, when no
    label had a baseline and nothing was checked."""
    checked = [label for label, points in f.prevalence.items() if points and points[0].centre is not None]
    return {"checked": checked, "unchecked": [label for label in f.prevalence if label not in checked]}


def _alerts(f: Figures) -> dict[str, list[DriftAlert]]:
    by_label: dict[str, list[DriftAlert]] = {}
    for alert in f.drift:
        by_label.setdefault(alert.label, []).append(alert)
    return by_label


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def model_changes(f: Figures) -> list[tuple[int, date, str]]:
    """(period index, period start, model) for each model version whose first reading in the window falls after
    its first period: a version rolled out in the window, marked on every chart over time (before, only the model
    chart at the foot of the page showed it, and a shift in agreement or prevalence at a rollout looked like drift
    of the cases)."""
    first: dict[str, int] = {}
    for i, p in enumerate(f.periods):
        for model, count in sorted(f.models.get(p, Counter()).items()):
            if count and model not in first:
                first[model] = i
    return [(i, f.periods[i], model) for model, i in first.items() if i > 0]


def _markers(f: Figures) -> list[Marker]:
    when = "week of " if f.window.period == "week" else ""
    return [Marker(i, f"{model}: first reading {when}{start}", model.rsplit(" ", 1)[-1])
            for i, start, model in model_changes(f)]  # fmt: skip


def _charts(f: Figures) -> dict[str, Any]:
    labels = [_label(p, f.window.period) for p in f.periods]
    marks = _markers(f)
    charts: dict[str, Any] = {}
    charts["volume"] = bar_chart_svg(labels, {
        "read": [float(f.read.get(p, 0)) for p in f.periods],
        "skipped": [float(sum(f.skipped.get(p, Counter()).values())) for p in f.periods],
        "failed": [float(sum(f.failed.get(p, Counter()).values())) for p in f.periods],
    }, title="Studies read and skipped, reading attempts failed", colours=VOLUME_COLOURS)  # fmt: skip
    target = next((s.target_s for s in f.latencies if s.stage == "total"), None)
    charts["latency"] = time_series_svg(
        labels,
        [Series("p50", [f.total_latency[p][0] if p in f.total_latency else None for p in f.periods]),
         Series("p95", [f.total_latency[p][1] if p in f.total_latency else None for p in f.periods],
                flagged=[p in f.total_latency and target is not None and f.total_latency[p][1] > target
                         for p in f.periods])],
        title="Last image → SR at the PACS", target=target, y_format=_seconds, markers=marks,
    )  # fmt: skip
    charts["stages"] = horizontal_bars_svg(
        [(LATENCY_STAGES.get(s.stage, s.stage), s.p95, s.p50, s.p95) for s in f.latencies],
        title="p95 per stage (whisker from p50)", x_format=_seconds, label_width=190,
        flagged=[s.target_s is not None and s.p95 > s.target_s for s in f.latencies],
    )  # fmt: skip
    charts["agreement"] = horizontal_bars_svg(
        [(a.label, a.accepted.rate or 0.0, a.accepted.low, a.accepted.high) for a in f.agreement if a.total],
        title="Share accepted, with its 95 % interval", x_format=percent, x_max=1.0,
    )  # fmt: skip
    charts["agreement_periods"] = {
        label: time_series_svg(
            labels, [_accepted_series([per_period.get(p) for p in f.periods])],
            title=label, y_format=percent, y_max=1.0, width=460, height=180, markers=marks,
        )
        for label, per_period in f.agreement_periods.items()
    }  # fmt: skip
    drifting = drift_periods(f)
    charts["prevalence"] = {
        label: time_series_svg(
            labels,
            [Series(label, [p.rate for p in points], flagged=[(label, p.start) in drifting for p in points],
                    notes=[f"{p.count} of {p.total} readings" if p.total else None for p in points],
                    few=[0 < p.total < FEW for p in points])],
            band=Band([p.lower if p.total else None for p in points], [p.upper if p.total else None for p in points],
                      points[0].centre, "95 % limits") if points and points[0].centre is not None else None,
            title=label if points and points[0].centre is not None else f"{label} (no baseline)",
            y_format=percent, width=460, height=180, markers=marks,
        )
        for label, points in f.prevalence.items()
    }  # fmt: skip
    bursts = {b.start for b in f.bursts}
    base = f.baseline_failures
    charts["failures"] = time_series_svg(
        labels,
        [Series("failed share", [rate(p.count, p.total) for p in f.failures],
                flagged=[p.start in bursts for p in f.failures],
                notes=[f"{p.count} of {p.total} attempts" if p.total else None for p in f.failures])],
        title="Failed reading attempts of read + failed", y_format=percent, markers=marks,
        target=base.high if base else None, target_name="baseline (upper 95 % bound)",
    )  # fmt: skip
    charts["rates"] = time_series_svg(
        labels,
        [Series("refused", [f.refused[p].rate if p in f.refused else None for p in f.periods]),
         Series("text sanitised", [f.sanitised[p].rate if p in f.sanitised else None for p in f.periods])],
        title="Refusals and sanitised texts, share of readings", y_format=percent, markers=marks,
    )  # fmt: skip
    charts["mix"] = {
        name: _mix_chart(labels, f.periods, per_period, name, uid_names=name in ("transfer syntax", "SOP class"))
        for name, per_period in f.mix.items()
    }
    charts["models"] = _mix_chart(labels, f.periods, f.models, "Model versions")
    return charts


def _accepted_series(per_period: list[Counter[str] | None]) -> Series:
    """The share accepted per period, each point with its n ("12 of 15 decisions"), hollow under :data:`FEW`
    decisions; a period without a decision is a gap, not 0 %. Before, a day's 1 of 4 showed as a bare 25 %."""
    totals = [sum(c[d] for d in DECISIONS) if c else 0 for c in per_period]
    accepted = [c["accept"] if c else 0 for c in per_period]
    return Series("accepted", [a / t if t else None for a, t in zip(accepted, totals, strict=True)],
                  notes=[f"{a} of {t} decisions" if t else None for a, t in zip(accepted, totals, strict=True)],
                  few=[0 < t < FEW for t in totals])  # fmt: skip


def _uid_name(value: str) -> str:
    """A UID's name where pydicom knows it (a transfer syntax, a SOP class), else the UID."""
    from pydicom.uid import UID

    try:
        name = UID(value).name or value
    except ValueError:
        name = value
    return name if len(name) <= 48 else name[:47] + "…"  # a legend entry, not the record: the CSV keeps the UID


def _mix_chart(
    labels: list[str], periods: list[date], per_period: dict[date, Counter[str]], title: str, uid_names: bool = False
) -> Markup:
    top = top_values(per_period, 5)
    stacks = {value: [float(per_period.get(p, Counter())[value]) for p in periods] for value in top}
    others = [float(sum(per_period.get(p, Counter()).values()) - sum(s[i] for s in stacks.values()))
              for i, p in enumerate(periods)]  # fmt: skip
    if uid_names:
        stacks = {_uid_name(value): values for value, values in stacks.items()}
    if any(others):
        stacks["other"] = others
    return bar_chart_svg(labels, stacks, title=title, width=460, height=200)
