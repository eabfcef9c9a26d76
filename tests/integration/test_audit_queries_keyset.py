"""Keyset paging of the audit query both ways, on real SQLite and PostgreSQL (hypothesis over filters and page sizes).

QA staff read the log newest first (``order="desc"``, paging back with ``next_before_seq``) and turn around to
newer pages (``after_seq``, oldest first); the API kept its oldest-first paging (``next_after_seq``). For any
filter and page size, walking either way visits every matching row that existed when the walk began exactly once,
in order, although every page itself appends an ``audit_queried`` event; a page turned back to is the page that
was shown before. The expected rows are the log as read directly, filtered here in Python (not by the SQL under
test).
"""

from __future__ import annotations

import os
from itertools import pairwise
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_support import STUDY_A, STUDY_B, seed_audit_log
from radtrace.audit.events import Actor
from radtrace.audit.queries import MAX_SEQ, AuditQuery, QueryError, run_query
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

QA = Actor(user="qa.keyset", process="radtrace-test")
#: Every page records an event (a transaction): CI samples a few walks, RADTRACE_FULL_KEYSET=1 runs many.
EXAMPLES = 60 if os.environ.get("RADTRACE_FULL_KEYSET") == "1" else 5
#: Filters, each a value the seeded log holds (or a study it does not: an empty walk), combined at random.
FILTERS = st.fixed_dictionaries(
    {},
    optional={
        "event_type": st.sampled_from(["instance_received", "study_queued", "inference_completed", "dispatch_failed"]),
        "study_uid": st.sampled_from([STUDY_A, STUDY_B, "1.2.3.4"]),
        "outcome": st.sampled_from(["success", "serious_failure"]),
        "label": st.sampled_from(["Effusion", "Cardiomegaly"]),
    },
)
COLUMNS = {"event_type": "event_type", "study_uid": "study_uid", "outcome": "outcome"}


@pytest.fixture
def seeded(store: Store) -> Store:
    seed_audit_log(store)
    return store


def _expected(store: Store, filters: dict[str, str], upto: int | None = None) -> tuple[list[int], int]:
    """The matching seqs up to ``upto`` (else all now), oldest first, and the head of those rows."""
    table = AuditEventRow.__table__
    with store.session() as session:
        query = sa.select(table).order_by(table.c.seq)
        rows = session.execute(query if upto is None else query.where(table.c.seq <= upto)).mappings().all()
    matching = [
        row["seq"]
        for row in rows
        if all(row[COLUMNS[name]] == value for name, value in filters.items() if name in COLUMNS)
        and ("label" not in filters or filters["label"] in (row["labels"] or "").split(","))
    ]
    return matching, rows[-1]["seq"]


def _seeded_head(store: Store) -> int:
    with store.session() as session:
        return int(session.scalar(sa.select(sa.func.min(AuditEventRow.seq)).where(
            AuditEventRow.event_type == "audit_queried")) or 10**9) - 1  # fmt: skip


def _page(store: Store, **values: Any) -> tuple[list[int], int | None, int | None]:
    page = run_query(store, AuditQuery.parse(**values), QA)
    return [event.seq for event in page.events], page.next_after_seq, page.next_before_seq


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(filters=FILTERS, limit=st.integers(min_value=1, max_value=9))
def test_paging_either_way_visits_every_matching_row_once(seeded: Store, filters: dict[str, str], limit: int) -> None:
    # The walk covers the seeded log: the audit_queried events every page appends (this walk's and the earlier
    # examples') lie above the bound and must never show; a log growing with each example made the walks quadratic.
    expected, head = _expected(seeded, filters, upto=_seeded_head(seeded))
    bound = head + 1

    newest_first: list[list[int]] = []
    cursor: int | None = bound
    while cursor is not None:
        seqs, forward, cursor = _page(seeded, **filters, limit=limit, before_seq=cursor, order="desc")
        assert forward is None
        assert seqs == sorted(seqs, reverse=True)
        assert len(seqs) <= limit
        newest_first.append(seqs)
    assert [seq for page in newest_first for seq in page] == expected[::-1]

    oldest_first: list[list[int]] = []
    after: int | None = 0
    while after is not None:
        seqs, after, back = _page(seeded, **filters, limit=limit, after_seq=after, before_seq=bound)
        assert back is None
        oldest_first.append(seqs)
    assert [seq for page in oldest_first for seq in page] == expected

    # Turning around, as the explorer's "newer" link does: the events just after a newest-first page's newest are
    # the page shown before it.
    for shown_before, page in pairwise(newest_first):
        seqs, *_ = _page(seeded, **filters, limit=limit, after_seq=page[0], before_seq=bound)
        assert seqs[::-1] == shown_before


def test_the_default_page_is_still_oldest_first_and_newest_first_pages_back(seeded: Store) -> None:
    expected, _ = _expected(seeded, {"event_type": "instance_received"})
    assert _page(seeded, event_type="instance_received", limit=3) == (expected[:3], expected[2], None)
    newest = _page(seeded, event_type="instance_received", limit=3, order="desc")
    assert newest == (expected[:-4:-1], None, expected[-3])
    older = _page(seeded, event_type="instance_received", limit=3, order="desc", before_seq=expected[-3])
    assert older == (expected[-4:-7:-1], None, expected[-6])


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"before_seq": "0"}, "before_seq: Input should be greater than or equal to 1"),
        ({"before_seq": str(MAX_SEQ + 1)}, "before_seq: Input should be less than or equal to"),
        ({"before_seq": "ten"}, "before_seq: Input should be a valid integer"),
        ({"after_seq": "5", "before_seq": "5"}, "after_seq (5) is not below before_seq (5)"),
        ({"order": "sideways"}, "order: Input should be 'asc' or 'desc'"),
    ],
)
def test_a_cursor_out_of_range_is_refused_naming_it(values: dict[str, str], named: str) -> None:
    with pytest.raises(QueryError, match=named.replace("(", r"\(").replace(")", r"\)")):
        AuditQuery.parse(**values)
