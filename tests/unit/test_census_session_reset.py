"""What a connection pooler leaves as a server connection's last statement once its client has gone
(radtrace.store.census.session_reset): recognised only when every statement is a session reset."""

from __future__ import annotations

import pytest

from radtrace.store.census import session_reset


@pytest.mark.parametrize(
    "query",
    ["DISCARD ALL", "discard all;", "  DISCARD   ALL ; ", "RESET ALL; SET SESSION AUTHORIZATION DEFAULT",
     "RESET ALL", "DEALLOCATE ALL; DISCARD ALL"],
)  # fmt: skip
def test_a_pooler_s_reset_is_recognised(query: str) -> None:
    assert session_reset(query)


@pytest.mark.parametrize(
    "query",
    [None, "", "<insufficient privilege>", "ROLLBACK", "COMMIT", "SELECT 1", "select 1",
     "SELECT count(*) FROM outbox; DISCARD ALL", "DISCARD ALL; SELECT 1", "SET application_name = 'x'", ";"],
)  # fmt: skip
def test_anything_radtrace_may_run_is_not(query: str | None) -> None:
    """A ROLLBACK or COMMIT is what an idle radtrace connection may show last (its pool's reset on return)."""
    assert not session_reset(query)
