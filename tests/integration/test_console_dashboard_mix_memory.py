"""The dashboard's input-mix read on PostgreSQL runs with its own work_mem, in its own transaction only.

Its GROUP BY has ten keys over every instance of the window: a year's (100k instances) sorted on disk at
PostgreSQL's default 4 MB (EXPLAIN ANALYZE: external merge, 12 MB, 1,169 ms against HashAggregate 243 ms with
32 MB; bench/qa_dashboard.py). The setting is SET LOCAL: it ends with the transaction, so no other read on the
pooled connection inherits it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from dashboard_support import seed_history
from radtrace.console.dashboard_figures import read_figures
from radtrace.console.dashboard_queries import Window
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.services import temporary_postgres_database

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres() -> Iterator[Store]:
    with temporary_postgres_database() as url:
        store = Store.from_url(url)
        upgrade(store)
        yield store
        store.dispose()


def test_the_input_mix_reads_with_room_to_hash_and_the_setting_ends_with_its_transaction(postgres: Store) -> None:
    seed_history(postgres, days=21, per_day=(3, 4))
    with postgres.engine.connect() as connection:
        server_value = connection.execute(sa.text("SHOW work_mem")).scalar()
    seen: list[tuple[int, str]] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        seen.append((id(conn.connection.dbapi_connection), " ".join(statement.split())))

    sa.event.listen(postgres.engine, "before_cursor_execute", record)
    today = datetime.now(UTC).date()
    figures = read_figures(postgres, Window(today - timedelta(days=20), today), datetime.now(UTC), sections={"mix"})
    sa.event.remove(postgres.engine, "before_cursor_execute", record)
    assert sum(sum(c.values()) for c in figures.mix["modality"].values()) > 0
    mix = next(i for i, (_, sql) in enumerate(seen) if "instances.transfer_syntax_uid" in sql and "GROUP BY" in sql)
    setting = [i for i, (_, sql) in enumerate(seen) if sql.startswith("SET LOCAL work_mem")]
    assert setting, "the mix read ran at the server's work_mem"  # before: no SET LOCAL at all
    assert setting[-1] < mix
    assert seen[setting[-1]][0] == seen[mix][0]  # on the mix read's own connection
    assert re.fullmatch(r"SET LOCAL work_mem = '\d+MB'", seen[setting[-1]][1])
    with postgres.engine.connect() as connection:  # back in the pool at the server's value
        assert connection.execute(sa.text("SHOW work_mem")).scalar() == server_value
