"""The worklist with tens of thousands of studies (``CONSOLE_SCALE=1``: 50,000; CI seeds 10,000): every filter's
first page, the last page, next study and the study page answer, with the counts right, and each filter's page is
read from its own index in order (the query plan: EXPLAIN QUERY PLAN on SQLite, first and last page; EXPLAIN on
PostgreSQL after ANALYZE, first page), never a scan and sort of the whole table.

How long the pages take is a figure, not a test: ``.venv/bin/python bench/console_pages.py --studies 10000
[--postgresql]`` (medians through the ASGI app; "worklist sync, nothing new" too). Before, this test asserted each
page under 300 ms of wall time, which a loaded machine can miss and a fast one passes with a bad plan.

The tables are seeded directly (radtrace.testing.console); one real study read by the pipeline sits among them
for the study page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from console_support import (
    add_user,
    console_client,
    console_settings,
    reported_study,
    sign_in,
    study_path,
)
from radtrace.console.schema import ReviewItem
from radtrace.console.worklist import WorklistFilter, sync_review_items, worklist_query
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.testing.console import seed_worklist

pytestmark = pytest.mark.integration

#: CI seeds 10,000 (the same queries and plans, a fifth of the seeding); ``CONSOLE_SCALE=1`` the 50,000.
STUDIES = 50_000 if os.environ.get("CONSOLE_SCALE") == "1" else 10_000


#: Each filter's index (radtrace.console.schema.ReviewItem).
INDEXES = {
    WorklistFilter.UNASSESSED: "ix_review_items_queue",
    WorklistFilter.ALL: "ix_review_items_all",
    WorklistFilter.FLAGGED: "ix_review_items_flagged",
    WorklistFilter.MINE: "ix_review_items_mine",
}


def query_plan(store: Store, query: sa.Select[Any]) -> str:
    """The database's plan of ``query`` (its binds written in), as one text."""
    sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
    explain = "EXPLAIN QUERY PLAN " if store.engine.dialect.name == "sqlite" else "EXPLAIN "
    with store.engine.connect() as connection:
        if store.engine.dialect.name != "sqlite":
            connection.exec_driver_sql("ANALYZE review_items")
        rows = connection.exec_driver_sql(explain + sql).all()
    return "\n".join(" ".join(str(column) for column in row) for row in rows)


def test_tens_of_thousands_of_studies_page_from_each_filters_index(store: Store, tmp_path: Path) -> None:
    settings = console_settings(tmp_path, store, sync_interval_s=3600)
    seed_worklist(store, STUDIES)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=1)
    assert sync_review_items(store, settings.spool_dir) == 1
    add_user(store, "dr.scale", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.scale")

        with store.session() as session:
            waiting = session.scalar(sa.select(sa.func.count()).select_from(ReviewItem).where(~ReviewItem.assessed))
        assert f">{waiting} drafts<" in client.get("/console/worklist").text
        pages = client.get("/console/worklist?filter=all").text
        last_page = int(pages.split("page 1 of ")[1].split("<")[0])
        assert last_page == -(-(STUDIES + 1) // settings.console.page_size)
        for url in ("/console/worklist?filter=flagged", "/console/worklist?filter=mine",
                    f"/console/worklist?filter=all&page={last_page}", study_path(store, study_uid)):  # fmt: skip
            assert client.get(url).status_code == 200, url
        assert client.get("/console/next", follow_redirects=False).status_code in (303, 307), "next study"
        assert sync_review_items(store, settings.spool_dir) == 0  # nothing new

    # PostgreSQL rightly scans and sorts for a page deep in the table (most rows are read either way): page 1 there
    pages_planned = (1, last_page) if store.engine.dialect.name == "sqlite" else (1,)
    for which, index in INDEXES.items():
        for page in pages_planned:
            plan = query_plan(store, worklist_query(which, "dr.scale", page, settings.console.page_size))
            assert index in plan, (which, page, plan)
            assert "TEMP B-TREE" not in plan, (which, page, plan)  # SQLite: no sort of the rows
            assert "Sort" not in plan, (which, page, plan)  # PostgreSQL
