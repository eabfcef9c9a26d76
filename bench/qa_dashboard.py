"""The QA dashboard's input-mix read over a long window on PostgreSQL: with the section's own work_mem
(``dashboard_figures.MIX_WORK_MEM``, SET LOCAL in its transaction) against the server's default (the peer: the same
read with ``MIX_WORK_MEM = None``, as before), side by side in one run, plus the query plan's aggregate node of each.

Needs a PostgreSQL database already holding a history (e.g. tests/dashboard_support.seed_history(days=365)); it
only reads. Medians of ``--repeat`` reads of ``read_figures(..., sections={"mix"})`` over the last ``--days`` days.

.venv/bin/python bench/qa_dashboard.py --url postgresql+psycopg://postgres@127.0.0.1:5432/qa_console_scale

``--outside-sql`` instead times every section of the dashboard's read over the window, one at a time, and the whole
read (sections side by side): wall time, time in SQL (the driver's execute, summed over the statements) and the rest,
the Python side; run it on two checkouts (PYTHONPATH=<checkout>/src) for a before/after.

``--charts`` times the drawing of the page's charts (SVG) from figures read once: median wall and CPU
milliseconds of ``--repeat``, and the size of the SVG drawn; any database with a history (SQLite too), e.g. ``--url sqlite:////tmp/qa/year.db``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from radtrace.console import dashboard_figures
from radtrace.console.dashboard_figures import Section
from radtrace.console.dashboard_queries import Window
from radtrace.store.engine import Store

#: The input mix's aggregate as the plan shows it (UTC days: the grouping keys and row count are what matter).
PLAN = (
    "EXPLAIN (ANALYZE, COSTS OFF) SELECT date(received_at), transfer_syntax_uid, modality, body_part, sop_class_uid,"
    " calling_ae, manufacturer, manufacturer_model, pixel_spacing_mm, photometric, count(*) FROM instances"
    " WHERE received_at >= now() - make_interval(days => :days) GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
)


def _read_ms(store: Store, window: Window, work_mem: str | None, repeat: int) -> tuple[float, int]:
    dashboard_figures.MIX_WORK_MEM = work_mem  # type: ignore[misc]
    times, values = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        figures = dashboard_figures.read_figures(store, window, datetime.now(UTC), sections={"mix"})
        times.append((time.perf_counter() - started) * 1000)
        values = sum(len(c) for per_day in figures.mix.values() for c in per_day.values())
    return statistics.median(times), values


def _plan(store: Store, days: int, work_mem: str | None) -> str:
    with store.engine.connect() as connection, connection.begin():
        if work_mem:
            connection.execute(sa.text(f"SET LOCAL work_mem = '{work_mem}'"))
        lines = [row[0] for row in connection.execute(sa.text(PLAN), {"days": days})]
    kept = [line.strip() for line in lines if any(k in line for k in ("Aggregate", "Sort Method", "Execution"))]
    return "; ".join(kept)


SECTIONS: tuple[Section, ...] = ("mix", "volume", "latency", "agreement", "agreement_by_model",
                                 "agreement_periods", "drift", "rates", "models", "queue")  # fmt: skip


def _outside_sql(store: Store, window: Window, repeat: int) -> None:
    """Per section and for the whole read: median wall, SQL and outside-SQL milliseconds of ``repeat`` reads."""
    spent: list[float] = []

    def started(conn: object, cursor: object, statement: str, params: object, context: Any, many: bool) -> None:
        context.bench_started = time.perf_counter()

    def ended(conn: object, cursor: object, statement: str, params: object, context: Any, many: bool) -> None:
        spent.append(time.perf_counter() - context.bench_started)

    sa.event.listen(store.engine, "before_cursor_execute", started)
    sa.event.listen(store.engine, "after_cursor_execute", ended)
    dashboard_figures.read_figures(store, window, datetime.now(UTC))  # warm: connections, the decisions' copy
    print(f"{window.period} periods, {(window.last - window.start).days + 1} days, median of {repeat}")
    print(f"{'section':<20} {'wall ms':>8} {'SQL ms':>8} {'outside':>8}")
    names: tuple[Section | None, ...] = (*SECTIONS, None)
    for name in names:
        walls, sqls = [], []
        for _ in range(repeat):
            spent.clear()
            begun = time.perf_counter()
            dashboard_figures.read_figures(store, window, datetime.now(UTC), sections=None if name is None else {name})
            walls.append((time.perf_counter() - begun) * 1000)
            sqls.append(sum(spent) * 1000)
        wall, sql = statistics.median(walls), statistics.median(sqls)
        # The whole read runs its sections side by side: their SQL overlaps, so only the wall time is meaningful.
        shown = f"{wall - sql:8.0f}" if name else f"{'':>8}"
        print(f"{name or 'all (side by side)':<20} {wall:8.0f} {sql:8.0f} {shown}")
    sa.event.remove(store.engine, "before_cursor_execute", started)
    sa.event.remove(store.engine, "after_cursor_execute", ended)


def _charts(store: Store, window: Window, repeat: int) -> None:
    """Median milliseconds of drawing every chart of the page from figures read once, and the SVG's size."""
    from radtrace.console import dashboard

    figures = dashboard_figures.read_figures(store, window, datetime.now(UTC))
    times, cpu, size = [], [], 0
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        charts = dashboard._charts(figures)
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
        size = sum(len(str(c)) for chart in charts.values() for c in (chart.values() if isinstance(chart, dict)
                                                                       else [chart]))  # fmt: skip
    print(
        f"charts of {len(figures.periods)} {window.period} periods: {statistics.median(times):.0f} ms "
        f"(median of {repeat}, min {min(times):.0f}; CPU {statistics.median(cpu):.0f} ms, the figure to compare on "
        f"a shared host), {size:,} bytes of SVG"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a PostgreSQL database with a history")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--outside-sql", action="store_true", help="time each section's SQL and Python instead")
    parser.add_argument("--period", choices=("day", "week"), default="day")
    parser.add_argument("--charts", action="store_true", help="time drawing the charts instead")
    args = parser.parse_args()
    store = Store.from_url(args.url)
    today = datetime.now(UTC).date()
    window = Window(today - timedelta(days=args.days - 1), today, args.period)
    if args.charts:
        _charts(store, window, args.repeat)
        store.dispose()
        return
    if args.outside_sql:
        _outside_sql(store, window, args.repeat)
        store.dispose()
        return
    tuned = dashboard_figures.MIX_WORK_MEM
    print(f"input mix over {args.days} days, median of {args.repeat}")
    print(f"{'read':<34} {'ms':>8} {'values':>8}")
    for name, work_mem in (("server default work_mem (peer)", None), (f"SET LOCAL work_mem '{tuned}'", tuned)):
        ms, values = _read_ms(store, window, work_mem, args.repeat)
        print(f"{name:<34} {ms:8.0f} {values:8d}")
        print(f"  plan: {_plan(store, args.days, work_mem)}")
    store.dispose()


if __name__ == "__main__":
    main()
