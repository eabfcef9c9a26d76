"""What leaving the decisions on wrong-patient drafts out of the agreement figures costs.

Seeds a SQLite history (tests/dashboard_support.seed_history: ``--days`` days of ``--per-day`` studies, 30 % of them
assessed finding by finding), then times, median of ``--repeat``: the dashboard's three agreement sections
(``read_figures(..., sections={"agreement", "agreement_by_model", "agreement_periods"})``, the left-out count with
them) over the last 30 days, and the agreement page's all-time figures (``current_agreement``). Each is timed with
no withdrawn draft (the peer: the figures' own index-only counts, as before the change, plus the one look for
withdrawn drafts) and with ``--withdrawn`` of the assessed revisions marked ``reassigned_at`` (a wrong-patient
correction), in the same run on the same database, and the figures are checked to drop by exactly the decisions on
those drafts.

.venv/bin/python bench/qa_agreement_withdrawn.py --days 90 --per-day 100 --withdrawn 0.01
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dashboard_support import seed_history
from radtrace.console.dashboard_agreement import current_agreement
from radtrace.console.dashboard_figures import read_figures
from radtrace.console.dashboard_queries import Window
from radtrace.console.schema import QaDecision
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Revision, Study


def _median_ms(call: Callable[[], object], repeat: int) -> float:
    call()  # warm the page cache and the statement cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--per-day", type=int, default=100)
    parser.add_argument("--withdrawn", type=float, default=0.01, help="share of the assessed revisions withdrawn")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qa-withdrawn-") as root:
        store = Store.from_url(f"sqlite:///{Path(root) / 'radtrace.db'}")
        upgrade(store)
        seed_history(store, days=args.days, per_day=(args.per_day - 10, args.per_day + 10))
        today = datetime.now(UTC).date()
        window = Window(today - timedelta(days=29), today)
        sections = {"agreement", "agreement_by_model", "agreement_periods"}
        with store.session() as session:
            decisions = session.scalar(sa.select(sa.func.count()).select_from(QaDecision)) or 0
            assessed = session.execute(sa.select(QaDecision.study_uid).distinct().order_by(QaDecision.study_uid)).all()
        step = max(1, round(1 / args.withdrawn)) if args.withdrawn > 0 else 0
        chosen = [uid for n, (uid,) in enumerate(assessed) if step and n % step == 0]

        def dashboard() -> object:
            return read_figures(store, window, datetime.now(UTC), sections=sections)

        def page() -> object:
            return current_agreement(store)

        rows = []
        for label, marked in (("no withdrawn draft (peer)", []), (f"{len(chosen)} drafts withdrawn", chosen)):
            with store.session() as session:
                session.execute(sa.update(Revision).values(reassigned_at=None))
                if marked:
                    ids = sa.select(Study.id).where(Study.study_uid.in_(marked))
                    session.execute(sa.update(Revision).where(Revision.study_id.in_(ids)).values(
                        reassigned_at=datetime.now(UTC)))  # fmt: skip
            figures = read_figures(store, window, datetime.now(UTC), sections=sections)
            shown = sum(a.total for a in figures.agreement)
            total = page()
            all_time = sum(a.total for a in (*total.findings, total.impression, total.drafts))  # type: ignore[attr-defined]
            rows.append((label, _median_ms(dashboard, args.repeat), _median_ms(page, args.repeat), shown,
                         figures.agreement_left_out.decisions, all_time, total.left_out.decisions))  # type: ignore[attr-defined]  # fmt: skip
        store.dispose()
    print(f"{decisions:,} decisions on {len(assessed):,} assessed studies; {args.days} days; SQLite; median of "
          f"{args.repeat}")  # fmt: skip
    print(f"{'':28} {'dashboard ms':>13} {'page ms':>9} {'30-day counted':>15} {'left out':>9} "
          f"{'all-time counted':>17} {'left out':>9}")  # fmt: skip
    for label, dash_ms, page_ms, shown, left, all_time, all_left in rows:
        print(f"{label:28} {dash_ms:13.1f} {page_ms:9.1f} {shown:15,} {left:9,} {all_time:17,} {all_left:9,}")
    (_, _, _, shown_0, _, all_0, _), (_, _, _, shown_1, left_1, all_1, all_left_1) = rows
    assert shown_0 - shown_1 == left_1, "the 30-day figures dropped by other than the decisions left out"
    assert all_0 - all_1 == all_left_1, "the all-time figures dropped by other than the decisions left out"


if __name__ == "__main__":
    main()
