"""The QA dashboard's CSV downloads: each chart's numbers as the rows :mod:`.dashboard` writes at
``/console/dashboard/<chart>.csv``, built from :class:`~radtrace.console.dashboard_figures.Figures`.

A text cell that a spreadsheet would run as a formula (``= + - @``, tab, CR) is prefixed with an apostrophe
(:func:`radtrace.audit.presentation.defuse_formula`); a float is rounded to six places, a missing value is empty.
:data:`SECTIONS` names the reads each chart's CSV needs, so a download reads only those.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import date, timedelta
from typing import Any, Final

from radtrace.audit.presentation import defuse_formula
from radtrace.console.dashboard_agreement import label_order
from radtrace.console.dashboard_figures import OTHER_REASONS, Figures, Section
from radtrace.console.dashboard_left_out import LeftOutDecision
from radtrace.console.dashboard_operations import FailedStudies
from radtrace.console.dashboard_queries import Window
from radtrace.console.identifiers import shown_id_text
from radtrace.qa.agreement import DECISIONS

__all__ = [
    "DECISION_NAMES",
    "LEFT_OUT_LIST_COLUMNS",
    "ROW_LEFT_OUT_COLUMN",
    "SECTIONS",
    "TABLES",
    "csv_text",
    "drift_periods",
    "label_model_agreement",
    "left_out_rows",
    "rate",
]  # fmt: skip

DECISION_NAMES: Final = {"accept": "accepted", "reject": "rejected", "modify": "modified"}


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, date):
        return str(value)
    # A label or reason starting with = + - @ would run as a spreadsheet formula: the audit export's guard.
    return defuse_formula(value) if isinstance(value, str) else value


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([_cell(value) for value in row])
    return buffer.getvalue()


def rate(count: int, total: int) -> float | None:
    """``count`` of ``total`` (None when ``total`` is 0)."""
    return count / total if total else None


def _volume_rows(f: Figures) -> list[list[object]]:
    skip, fail = [r for r, _ in f.skip_reasons()], [r for r, _ in f.failure_reasons()]
    header: list[object] = ["period", "received", "read", "skipped", "failed", "delivered"]
    # A reason is free text (a peer's, an exception's): its invisible characters as visible escapes, so that a CR or
    # LF does not break the header line and a right-to-left override does not reverse the column's name.
    header += [f"skipped: {shown_id_text(r)}" for r in skip] + [f"failed: {shown_id_text(r)}" for r in fail]
    rows = [header]
    for p in f.periods:
        skipped, failed = f.skipped.get(p, Counter()), f.failed.get(p, Counter())
        rows.append([p, f.received.get(p, 0), f.read.get(p, 0), sum(skipped.values()), sum(failed.values()),
                     f.delivered.get(p, 0), *_by_reason(skipped, skip), *_by_reason(failed, fail)])  # fmt: skip
    return rows


def _by_reason(counts: Counter[str], shown: list[str]) -> list[int]:
    """A period's count for each reason shown, the reasons not shown summed under OTHER_REASONS."""
    named = [reason for reason in shown if reason != OTHER_REASONS]
    other = sum(counts.values()) - sum(counts[reason] for reason in named)
    return [other if reason == OTHER_REASONS else counts[reason] for reason in shown]


def _queue_rows(f: Figures) -> list[list[object]]:
    q = f.queue
    return [["receiving", "queued", "processing", "oldest_wait_s"], [q.receiving, q.queued, q.processing,
                                                                       q.oldest_wait_s]]  # fmt: skip


def _latency_rows(f: Figures) -> list[list[object]]:
    # Over LATENCY_SAMPLE studies the percentiles come from one in every k of them: "studies" counts the sample, and
    # sampled_every says so (before, a sampled day's 27 "studies" stood beside the volume CSV's 275 read).
    every = f.latency_sample[1]
    rows: list[list[object]] = [["period", "stage", "studies", "p50_s", "p95_s", "target_s", "over_target_share",
                                 "sampled_every"]]  # fmt: skip
    for s in f.latencies:
        over = s.over_target.rate if s.over_target else None
        rows.append(["whole window", s.stage, s.count, s.p50, s.p95, s.target_s, over, every])
    target = next((s.target_s for s in f.latencies if s.stage == "total"), None)
    for p in f.periods:
        if p in f.total_latency:
            p50, p95, n = f.total_latency[p]
            rows.append([p, "total", n, p50, p95, target, None, every])
    return rows


#: The last column of every agreement CSV: the decisions of the row's label (and model, or period) left out because
#: their draft was withdrawn as wrong-patient, so that the column sums to the page's note "N decisions on M drafts
#: withdrawn as wrong-patient". Before, ``agreement`` and ``agreement_models`` ended with the window's two figures
#: (``left_out_wrong_patient_decisions``, ``left_out_wrong_patient_drafts``) repeated on every row: a pivot table
#: summed them into nonsense. The drafts figure, which no row can carry (a draft has many labels), is the page's.
ROW_LEFT_OUT_COLUMN: Final = "left_out_wrong_patient_decisions_this_row"


def _agreement_header(first: list[object]) -> list[object]:
    header = [*first, "decisions"]
    for name in DECISIONS:
        shown = DECISION_NAMES[name]
        header += [shown, f"{shown}_share", f"{shown}_ci95_low", f"{shown}_ci95_high"]
    return header


def _agreement_row(first: list[object], a: Any) -> list[object]:
    row: list[object] = [*first, a.total]
    for share in (a.accepted, a.rejected, a.modified):
        row += [share.count, share.rate, share.low, share.high]
    return row


def _no_agreement(first: list[object]) -> list[object]:
    """An agreement row of ``first`` (a label, a model) with no decision counted: 0 decisions, no share."""
    return [*first, 0] + [0, None, None, None] * len(DECISIONS)


def _agreement_rows(f: Figures) -> list[list[object]]:
    """Per label: the page's agreement table, and the label's decisions left out (:data:`ROW_LEFT_OUT_COLUMN`). A
    label whose decisions were all left out has its row, with 0 decisions and no share."""
    left: Counter[str] = Counter()
    for per_label in f.agreement_left_out_by_model.values():
        left.update(per_label)
    counted = {a.label: a for a in f.agreement}
    rows: list[list[object]] = []
    for label in sorted(set(counted) | set(left), key=label_order):
        row = _agreement_row([label], counted[label]) if label in counted else _no_agreement([label])
        rows.append([*row, left[label]])
    return [[*_agreement_header(["label"]), ROW_LEFT_OUT_COLUMN], *rows]


def _agreement_model_rows(f: Figures) -> list[list[object]]:
    """The page's table "by model version": per label, each model's counts in turn, and the decisions of that label
    and model left out (:data:`ROW_LEFT_OUT_COLUMN`); a (label, model) whose decisions were all left out has its row
    (0 decisions, no share), after the label's counted models."""
    counted = {(a.label, model): a for a, model in label_model_agreement(f)}
    left = {(label, model): count for model, per_label in f.agreement_left_out_by_model.items()
            for label, count in per_label.items()}  # fmt: skip
    labels = sorted({label for label, _ in [*counted, *left]}, key=label_order)
    rows: list[list[object]] = []
    for label in labels:
        keys = [key for key in counted if key[0] == label]
        keys += sorted(key for key in left if key[0] == label and key not in counted)
        for key in keys:
            a = counted.get(key)
            row = _agreement_row(list(key), a) if a is not None else _no_agreement(list(key))
            rows.append([*row, left.get(key, 0)])
    return [[*_agreement_header(["label", "model"]), ROW_LEFT_OUT_COLUMN], *rows]


def _agreement_period_rows(f: Figures) -> list[list[object]]:
    """Per label, per period with decisions counted or left out: the page's "share accepted per period" charts'
    numbers, and the decisions of the same label and period left out (:data:`ROW_LEFT_OUT_COLUMN`). A period
    whose decisions on a label were all left out has its row, with 0 decisions and no share. Before, this CSV
    ended with the window's two left-out figures repeated on every row, a column that summed to nonsense."""
    labels = sorted(set(f.agreement_periods) | set(f.agreement_periods_left_out), key=label_order)
    rows: list[list[object]] = []
    for label in labels:
        per_period, left = f.agreement_periods.get(label, {}), f.agreement_periods_left_out.get(label, {})
        for p in f.periods:
            counts = per_period.get(p, Counter())
            total = sum(counts[d] for d in DECISIONS)
            if total or left.get(p, 0):
                rows.append([p, label, total, counts["accept"], rate(counts["accept"], total), counts["reject"],
                             counts["modify"], left.get(p, 0)])  # fmt: skip
    return [["period", "label", "decisions", "accepted", "accepted_share", "rejected", "modified",
             ROW_LEFT_OUT_COLUMN], *rows]  # fmt: skip


def label_model_agreement(f: Figures) -> list[tuple[Any, str]]:
    """Each (label's agreement, model) of :attr:`Figures.agreement_by_model`, label by label (in the agreement
    table's order) and, within a label, model by model: the rows of the page's table and of its CSV."""
    order = {a.label: n for n, a in enumerate(f.agreement)}
    rows = [(a, model) for model, per_label in f.agreement_by_model.items() for a in per_label]
    models = list(f.agreement_by_model)
    return sorted(rows, key=lambda pair: (order.get(pair[0].label, len(order)), models.index(pair[1])))


def _prevalence_rows(f: Figures) -> list[list[object]]:
    drifting = drift_periods(f)
    rows: list[list[object]] = [["period", "label", "present", "read", "rate", "baseline", "lower_limit",
                                 "upper_limit", "outside", "drift_alert"]]  # fmt: skip
    for label, points in f.prevalence.items():
        for point in points:
            rows.append([point.start, label, point.count, point.total, point.rate, point.centre, point.lower,
                         point.upper, point.side or "", (label, point.start) in drifting])  # fmt: skip
    return rows


def _failure_rows(f: Figures) -> list[list[object]]:
    bursts = {b.start for b in f.bursts}
    base = f.baseline_failures
    rows: list[list[object]] = [["period", "failed_attempts", "attempts", "rate", "baseline_rate", "burst",
                                 "studies_failed", "recovered", "still_failed", "retrying"]]  # fmt: skip
    for p in f.failures:
        studies = f.failed_studies.get(p.start, FailedStudies())
        rows.append([p.start, p.count, p.total, rate(p.count, p.total), base.rate if base else None,
                     p.start in bursts, studies.studies, studies.recovered, studies.still_failed,
                     studies.retrying])  # fmt: skip
    return rows


def _mix_rows(f: Figures) -> list[list[object]]:
    rows: list[list[object]] = [["period", "attribute", "value", "count"]]
    for attribute, per_period in f.mix.items():
        for p in sorted(per_period):
            rows += [[p, attribute, value, count] for value, count in sorted(per_period[p].items())]
    return rows


def _rates_rows(f: Figures) -> list[list[object]]:
    rows: list[list[object]] = [["period", "read", "refused", "refused_rate", "sanitised", "sanitised_rate"]]
    for p in f.periods:
        refused, sanitised = f.refused.get(p), f.sanitised.get(p)
        if refused and sanitised:
            rows.append([p, refused.total, refused.count, refused.rate, sanitised.count, sanitised.rate])
    return rows


def _model_rows(f: Figures) -> list[list[object]]:
    rows: list[list[object]] = [["period", "model", "readings"]]
    for p in sorted(f.models):
        rows += [[p, model, count] for model, count in sorted(f.models[p].items())]
    return rows


TABLES: Final[dict[str, Callable[[Figures], list[list[object]]]]] = {
    "volume": _volume_rows, "queue": _queue_rows, "latency": _latency_rows, "agreement": _agreement_rows,
    "agreement_models": _agreement_model_rows,
    "agreement_periods": _agreement_period_rows,
    "prevalence": _prevalence_rows, "failures": _failure_rows, "mix": _mix_rows, "rates": _rates_rows,
    "models": _model_rows,
}  # fmt: skip
#: The reads each chart's CSV needs (:func:`read_figures` reads only these).
SECTIONS: Final[dict[str, frozenset[Section]]] = {
    "volume": frozenset({"volume"}), "queue": frozenset({"queue"}), "latency": frozenset({"latency"}),
    "agreement": frozenset({"agreement", "agreement_left_out_split"}),
    "agreement_models": frozenset({"agreement", "agreement_by_model", "agreement_left_out_split"}),
    "agreement_periods": frozenset({"agreement_periods"}), "prevalence": frozenset({"drift"}),
    "failures": frozenset({"volume"}), "mix": frozenset({"mix"}), "rates": frozenset({"rates"}),
    "models": frozenset({"models"}),
}  # fmt: skip


def drift_periods(f: Figures) -> set[tuple[str, date]]:
    """(label, period start) of every period a drift alert covers (weeks that hold an alert's days)."""
    covered = set()
    for alert in f.drift:
        for p in f.periods:
            end = p + timedelta(days=6 if f.window.period == "week" else 0)
            if p <= alert.last and end >= alert.first:
                covered.add((alert.label, p))
    return covered


#: The columns of the left-out decisions' CSV (``/console/dashboard/left-out/export.csv``).
LEFT_OUT_LIST_COLUMNS: Final = ("decided_at", "study_uid", "revision", "accession", "label", "decision", "reader",
                                "left_out_because", "audit_seq")  # fmt: skip


def left_out_rows(window: Window, decisions: Iterable[LeftOutDecision]) -> list[list[object]]:
    """One row per decision left out of the agreement figures (:mod:`.dashboard_left_out`), newest first: when
    (the site's local time, with its UTC offset), the study and revision, the accession as the console shows it
    (invisible characters as visible escapes), the finding, the decision, the reader, why the draft was withdrawn,
    and the decision's audit ``seq`` (to find it in the audit log)."""
    rows: list[list[object]] = [list(LEFT_OUT_LIST_COLUMNS)]
    for d in decisions:
        rows.append([window.local(d.recorded_at).isoformat(timespec="seconds"), d.study_uid, d.revision,
                     shown_id_text(d.accession), d.label, DECISION_NAMES.get(d.decision, d.decision), d.reader,
                     d.because, d.seq])  # fmt: skip
    return rows
