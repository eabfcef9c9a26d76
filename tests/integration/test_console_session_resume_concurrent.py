"""A console session resumed while another connection writes: SQLite's lock upgrade must not refuse the request.

On SQLite (the one-machine default) a transaction that reads and then writes cannot take the write lock once another
connection has committed since its read began: SQLite answers "database is locked" at once, without waiting its busy
timeout. Resuming a session read the session and the account, then wrote ``last_seen_at`` (at most every few seconds)
in the same transaction, so a radiologist's request answered 503 "database unavailable while resuming a console
session" whenever a decision, an audit event or a worker's write landed between the two (found by a CI run under load).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

import radtrace.console.accounts as accounts
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import ConsoleSettings
from radtrace.console.accounts import SignedIn, create_user, log_in, resume_session
from radtrace.console.schema import ConsoleSession
from radtrace.store.base import utc_now
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

SETTINGS = ConsoleSettings()
PASSWORD = "correct horse battery"


@pytest.fixture
def signed_in(sqlite_store: Store) -> SignedIn:
    store = sqlite_store
    create_user(store, "dr.keys", "radiologist", PASSWORD, Actor(user="root", host="radtrace-host"))
    result = log_in(store, "dr.keys", PASSWORD, SETTINGS, host="10.0.0.9")
    assert isinstance(result, SignedIn)
    return result


def _last_seen(store: Store, session_id: int) -> tuple[object, object]:
    with store.engine.connect() as connection:
        row = connection.execute(
            sa.select(ConsoleSession.last_seen_at, ConsoleSession.ended_at).where(ConsoleSession.id == session_id)
        ).one()
    return row[0], row[1]


def _set_last_seen(store: Store, session_id: int, seconds_ago: float) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(ConsoleSession)
            .where(ConsoleSession.id == session_id)
            .values(last_seen_at=utc_now() - timedelta(seconds=seconds_ago))
        )


def _with_a_write_committed_meanwhile(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Between resume_session's reads and its write, another connection commits a write (an audit event: another
    radtrace user signing in; a no-op UPDATE would not do, SQLite writes nothing for it)."""
    real = accounts.account_problem
    writes: list[int] = []

    def problem_then_a_write(*args: object, **kwargs: object) -> str | None:
        answer = real(*args, **kwargs)  # type: ignore[arg-type]
        AuditRecorder(store).record(AuditEvent(EventType.CONSOLE_LOGIN, Actor(user="dr.other", host="10.0.0.8")))
        writes.append(1)
        return answer

    monkeypatch.setattr(accounts, "account_problem", problem_then_a_write)
    return writes


def test_a_session_whose_clock_is_due_resumes_while_another_connection_writes(
    sqlite_store: Store, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    assert signed_in.cookie is not None
    _set_last_seen(store, signed_in.session_id, 60)  # the idle clock is restarted on this request
    before, _ = _last_seen(store, signed_in.session_id)
    writes = _with_a_write_committed_meanwhile(store, monkeypatch)

    resumed = resume_session(store, signed_in.cookie, SETTINGS)

    assert writes == [1]
    assert resumed is not None
    assert resumed.account.name == "dr.keys"
    after, ended = _last_seen(store, signed_in.session_id)
    assert ended is None
    assert after > before  # type: ignore[operator]  # the idle clock restarted


def test_an_idle_session_is_ended_and_stays_ended(
    sqlite_store: Store, signed_in: SignedIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_store
    assert signed_in.cookie is not None
    _set_last_seen(store, signed_in.session_id, SETTINGS.idle_timeout_s + 60)

    assert resume_session(store, signed_in.cookie, SETTINGS) is None
    _, ended = _last_seen(store, signed_in.session_id)
    assert ended is not None  # recorded as ended, not only refused this once
    _set_last_seen(store, signed_in.session_id, 0)
    assert resume_session(store, signed_in.cookie, SETTINGS) is None
