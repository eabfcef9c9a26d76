"""A console sign-in checks its password (argon2: about 0.6 s and 64 MiB here) before it takes the write lock.

Before, ``log_in`` ran argon2 inside ``BEGIN IMMEDIATE``: on SQLite every other writer (an API request's audit row,
a listener's instance, a worker's claim) waited for each sign-in's check, and a flood of sign-ins stalled them all.
Now the account is read, the password checked outside any transaction, and the outcome written only if the account
still has the hash that was checked.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

import radtrace.console.accounts as accounts
from radtrace.audit.events import Actor
from radtrace.config import ConsoleSettings
from radtrace.console.accounts import LoginFailed, SignedIn, create_user, log_in
from radtrace.console.schema import ConsoleUser
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

OPERATOR = Actor(user="root", host="radtrace-host")
PASSWORD = "correct horse battery"
SLOWER_S = 0.5  # added to each check, so that "held for the check" cannot pass for scheduling noise


def _slowed_checks(monkeypatch: pytest.MonkeyPatch, during: Any = None) -> threading.Event:
    """Make each argon2 check ``SLOWER_S`` longer; the event is set when the first one starts. ``during`` runs once,
    inside the first check."""
    started = threading.Event()
    real = accounts._HASHER

    class Slowed:
        hash = staticmethod(real.hash)
        check_needs_rehash = staticmethod(real.check_needs_rehash)

        @staticmethod
        def verify(stored: str, password: str) -> bool:
            first = not started.is_set()
            started.set()
            time.sleep(SLOWER_S)
            if first and during is not None:
                during()
            return bool(real.verify(stored, password))

    monkeypatch.setattr(accounts, "_HASHER", Slowed())
    return started


def test_a_writer_is_not_held_for_a_sign_ins_password_check(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_user(sqlite_store, "dr.who", "radiologist", PASSWORD, OPERATOR)
    started = _slowed_checks(monkeypatch)
    outcomes: list[Any] = []
    signing_in = threading.Thread(
        target=lambda: outcomes.append(log_in(sqlite_store, "dr.who", PASSWORD, ConsoleSettings(), host=None))
    )
    begun = time.monotonic()
    signing_in.start()
    assert started.wait(10)
    waited = time.monotonic()
    with sqlite_store.session("another writer", immediate=True) as session:  # SQLite's write lock, at BEGIN
        session.execute(sa.text("SELECT 1"))
    waited = time.monotonic() - waited
    signing_in.join(10)
    check = time.monotonic() - begun
    assert isinstance(outcomes[0], SignedIn)
    assert check >= SLOWER_S
    assert waited < 0.25, f"the writer waited {waited:.2f} s for a sign-in that took {check:.2f} s"


def test_a_password_changed_during_the_check_is_checked_again(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old password matched the hash that was read; the account got a new one before the outcome was written:
    the login is judged against the new hash (a wrong password), not signed in on the old one."""
    create_user(sqlite_store, "dr.who", "radiologist", PASSWORD, OPERATOR)
    replaced = accounts._HASHER.hash("another password entirely")

    def change() -> None:
        with sqlite_store.session("changing the password", immediate=True) as session:
            session.execute(sa.update(ConsoleUser).where(ConsoleUser.name == "dr.who").values(password_hash=replaced))

    _slowed_checks(monkeypatch, during=change)
    outcome = log_in(sqlite_store, "dr.who", PASSWORD, ConsoleSettings(), host=None)
    assert outcome == LoginFailed("wrong password")
    with sqlite_store.session() as session:
        assert session.scalar(sa.select(ConsoleUser.failed_logins).where(ConsoleUser.name == "dr.who")) == 1
