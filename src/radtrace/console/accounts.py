"""Console accounts and sessions: argon2 passwords, lockout after repeated failures, idle-timed sessions.

A password is kept only as an argon2id hash (argon2-cffi's defaults, RFC 9106's second recommended profile).
``max_failed_logins`` failures in a row lock an account for ``lockout_s`` seconds (0: until an admin unlocks
it); a success resets the run. An unknown name costs the same argon2 work as a known one, so timing does not
tell which names exist. A session is a random cookie of which only the SHA-256 is stored, with its own CSRF
token; it ends at logout or after ``idle_timeout_s`` without a request. Every login, failed login, lock and
logout is an audit event naming the user. An account is accepted only while the audit log records it as it
stands (name, role, password hash; :mod:`radtrace.audit.credentials`): one inserted or raised in the database
directly is refused, with a ``tamper_detected`` event.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from radtrace.audit.credentials import account_binding, account_problem
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import ConsoleSettings
from radtrace.console.schema import ConsoleSession, ConsoleUser
from radtrace.errors import PermanentError
from radtrace.store.base import utc_now
from radtrace.store.engine import Store

__all__ = [
    "Account",
    "AccountError",
    "ConsoleRole",
    "LoginFailed",
    "SignedIn",
    "create_user",
    "end_session",
    "generate_password",
    "log_in",
    "resume_session",
    "start_session",
    "unlock_user",
]

_HASHER: Final = PasswordHasher()
_DUMMY_HASH: Final = _HASHER.hash("radtrace: no such user")
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH: Final = 10
_CHECK_ATTEMPTS: Final = 3  # a login re-checks when the account changed between its read and its write


class ConsoleRole(enum.StrEnum):
    """What a console user may do: radiologists decide; qa and admin read (admin also manages accounts)."""

    RADIOLOGIST = "radiologist"
    QA = "qa"
    ADMIN = "admin"

    @property
    def may_decide(self) -> bool:
        """Only a radiologist records assessments of a draft."""
        return self is ConsoleRole.RADIOLOGIST


class AccountError(PermanentError):
    """An account could not be created or changed (bad name, taken name, short password)."""


@dataclass(frozen=True)
class Account:
    """A console user as the pages need it."""

    id: int
    name: str
    role: ConsoleRole


@dataclass(frozen=True)
class SignedIn:
    """A live session: whose it is, its CSRF token, and the cookie value (only right after login)."""

    account: Account
    session_id: int
    csrf_token: str
    cookie: str | None = None


@dataclass(frozen=True)
class LoginFailed:
    """Why a login was refused (the page shows one message for every reason)."""

    reason: str


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def generate_password() -> str:
    """A random password of about 120 bits, for ``radtrace user create`` without ``--password``."""
    return secrets.token_urlsafe(15)


def create_user(store: Store, name: str, role: str, password: str | None, operator: Actor) -> Account:
    """Add an account (recorded as ``console_user_created``); ``password`` None: trusted-header sign-in only."""
    if not _NAME.match(name):
        raise AccountError(f"user name {name!r}: letters, digits and . _ @ - only, at most 64 characters")
    try:
        chosen = ConsoleRole(role)
    except ValueError as exc:
        raise AccountError(f"role must be radiologist, qa or admin, not {role!r}") from exc
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    hashed = _HASHER.hash(password) if password is not None else None
    with store.session("creating a console user", immediate=True) as session:
        if session.scalar(sa.select(ConsoleUser.id).where(ConsoleUser.name == name)) is not None:
            raise AccountError(f"a console user named {name!r} exists already")
        user = ConsoleUser(name=name, role=chosen.value, password_hash=hashed, failed_logins=0)
        session.add(user)
        session.flush()
        AuditRecorder(store).record(
            AuditEvent(
                EventType.CONSOLE_USER_CREATED,
                operator,
                payload={
                    "user": name,
                    "role": chosen.value,
                    "password": password is not None,
                    "binding": account_binding(name, chosen.value, hashed),
                },
            ),
            session=session,
        )
        return Account(user.id, name, chosen)


def unlock_user(store: Store, name: str, operator: Actor) -> None:
    """Clear an account's lock and failed-login run."""
    with store.session("unlocking a console user", immediate=True) as session:
        user = session.scalar(sa.select(ConsoleUser).where(ConsoleUser.name == name))
        if user is None:
            raise AccountError(f"no console user named {name!r}")
        user.locked_at, user.failed_logins = None, 0
        AuditRecorder(store).record(
            AuditEvent(EventType.CONSOLE_USER_LOCKED, operator, payload={"user": name, "locked": False}),
            session=session,
        )


def _locked(user: ConsoleUser, settings: ConsoleSettings, now: datetime) -> bool:
    if user.locked_at is None:
        return False
    return settings.lockout_s == 0 or now < user.locked_at + timedelta(seconds=settings.lockout_s)


def _verify(stored: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(stored, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def log_in(
    store: Store, name: str, password: str, settings: ConsoleSettings, *, host: str | None
) -> SignedIn | LoginFailed:
    """Check a name and password; on success start a session. Both outcomes are audited.

    The argon2 work (about 0.6 s and 64 MiB per check, and as much again for a hash upgrade) is done outside any
    transaction: the account is read, the password checked, and only then is the outcome written, under the write
    lock, if the account still has the hash that was checked (else it is checked again against what is there now).
    Before, the check ran inside the write transaction and every other writer (and on SQLite each API request's
    audit row) waited for it.
    """
    actor = Actor(user=name[:64] or None, host=host)
    recorder = AuditRecorder(store)
    for _ in range(_CHECK_ATTEMPTS):
        with store.session("reading a console account") as session:
            row = session.execute(sa.select(ConsoleUser.password_hash).where(ConsoleUser.name == name)).first()
        exists, checked = row is not None, row[0] if row is not None else None
        stored = checked or _DUMMY_HASH
        matched = _verify(stored, password)  # an unknown name costs the same work as a known one
        upgraded = _HASHER.hash(password) if matched and checked and _HASHER.check_needs_rehash(checked) else None
        with store.session("checking a console login", immediate=True) as session:
            user = session.scalar(sa.select(ConsoleUser).where(ConsoleUser.name == name))
            if (user is not None) != exists or (user is not None and user.password_hash != checked):
                continue  # created, removed or given a new password meanwhile: check against the account as it is
            return _record_log_in(store, session, recorder, actor, user, matched, upgraded, settings, host)
    reason = "account changed during every check"
    recorder.record(
        AuditEvent(EventType.CONSOLE_LOGIN_FAILED, actor, Outcome.MINOR_FAILURE, payload={"reason": reason})
    )
    return LoginFailed(reason)


def _record_log_in(
    store: Store,
    session: sa.orm.Session,
    recorder: AuditRecorder,
    actor: Actor,
    user: ConsoleUser | None,
    matched: bool,
    upgraded: str | None,
    settings: ConsoleSettings,
    host: str | None,
) -> SignedIn | LoginFailed:
    """The outcome of a checked password, written in the login's write transaction (``user`` as it is now)."""
    now = utc_now()
    reason: str | None = None
    if user is None:
        reason = "unknown user"
    elif user.password_hash is None:
        reason = "account signs in through the trusted header only"
    elif _locked(user, settings, now):
        reason = "account locked"
    elif not matched:
        reason = "wrong password"
    else:
        reason = account_problem(store, session, user.name, user.role, user.password_hash, writing=True)
    if reason is not None:
        events = [AuditEvent(EventType.CONSOLE_LOGIN_FAILED, actor, Outcome.MINOR_FAILURE, payload={"reason": reason})]
        if user is not None and reason == "wrong password":
            user.failed_logins += 1
            if user.failed_logins >= settings.max_failed_logins:
                user.locked_at = now
                events.append(
                    AuditEvent(
                        EventType.CONSOLE_USER_LOCKED,
                        actor,
                        Outcome.SERIOUS_FAILURE,
                        payload={"user": user.name, "locked": True, "failed_logins": user.failed_logins},
                    )
                )
        recorder.record_many(events, session=session)
        return LoginFailed(reason)
    assert user is not None
    if upgraded is not None:
        user.password_hash = upgraded
        binding = account_binding(user.name, user.role, user.password_hash)
        recorder.record(AuditEvent(EventType.CONSOLE_USER_BOUND, actor, payload={
            "user": user.name, "role": user.role, "binding": binding, "reason": "password hash upgraded"}),
            session=session)  # fmt: skip
    user.failed_logins, user.locked_at, user.last_login_at = 0, None, now
    return _open_session(session, recorder, user, host, method="password")


def start_session(store: Store, name: str, *, host: str | None, method: str) -> SignedIn | LoginFailed:
    """Start a session for a user someone else authenticated (the trusted-header mode)."""
    with store.session("starting a console session", immediate=True) as session:
        user = session.scalar(sa.select(ConsoleUser).where(ConsoleUser.name == name))
        if user is None:
            AuditRecorder(store).record(
                AuditEvent(
                    EventType.CONSOLE_LOGIN_FAILED,
                    Actor(user=name[:64] or None, host=host),
                    Outcome.MINOR_FAILURE,
                    payload={"reason": "unknown user", "method": method},
                ),
                session=session,
            )
            return LoginFailed("unknown user")
        problem = account_problem(store, session, user.name, user.role, user.password_hash, writing=True)
        if problem is not None:
            AuditRecorder(store).record(AuditEvent(EventType.CONSOLE_LOGIN_FAILED, Actor(user=user.name, host=host),
                Outcome.MINOR_FAILURE, payload={"reason": problem, "method": method}), session=session)  # fmt: skip
            return LoginFailed(problem)
        user.last_login_at = utc_now()
        return _open_session(session, AuditRecorder(store), user, host, method=method)


def _open_session(session: sa.orm.Session, recorder: AuditRecorder, user: ConsoleUser, host: str | None,
                  *, method: str) -> SignedIn:  # fmt: skip
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utc_now()
    row = ConsoleSession(
        token_sha256=_sha256(cookie), user_id=user.id, csrf_token=csrf, host=host, created_at=now, last_seen_at=now
    )
    session.add(row)
    session.flush()
    account = Account(user.id, user.name, ConsoleRole(user.role))
    recorder.record(
        AuditEvent(
            EventType.CONSOLE_LOGIN,
            Actor(user=user.name, host=host),
            payload={"role": user.role, "method": method, "session": row.id},
        ),
        session=session,
    )
    return SignedIn(account, row.id, csrf, cookie)


def resume_session(store: Store, cookie: str, settings: ConsoleSettings) -> SignedIn | None:
    """The live session a cookie names, its idle clock restarted; None when unknown, ended or idle too long.

    The reads and the write (the session ended, or its idle clock restarted) are two transactions: on SQLite a
    transaction that has read cannot take the write lock once another connection has committed since, and SQLite
    refuses it at once ("database is locked", no busy wait), so any decision or audit event landing between the two
    made a radiologist's request a 503. The write is a conditional UPDATE in its own write transaction.
    """
    now = utc_now()
    with store.session("resuming a console session") as session:
        found = session.execute(
            sa.select(ConsoleSession, ConsoleUser)
            .join(ConsoleUser, ConsoleSession.user_id == ConsoleUser.id)
            .where(ConsoleSession.token_sha256 == _sha256(cookie), ConsoleSession.ended_at.is_(None))
        ).first()
        if found is None:
            return None
        row, user = found[0], found[1]
        idle = now - row.last_seen_at > timedelta(seconds=settings.idle_timeout_s)
        refused = (
            idle or account_problem(store, session, user.name, user.role, user.password_hash, writing=False) is not None
        )
        resumed = SignedIn(Account(user.id, user.name, ConsoleRole(user.role)), row.id, row.csrf_token)
        last_seen = row.last_seen_at
    if idle:
        _update_live_session(store, resumed.session_id, "ending an idle console session", ended_at=now)
    elif not refused and now - last_seen > timedelta(seconds=5):  # one write per few seconds, not per request
        _update_live_session(store, resumed.session_id, "resuming a console session", last_seen_at=now)
    return None if refused else resumed


def _update_live_session(store: Store, session_id: int, doing: str, **values: datetime) -> None:
    """Set ``values`` on a console session that has not ended, in a write transaction of its own."""
    with store.session(doing, immediate=True) as session:
        session.execute(
            sa.update(ConsoleSession)
            .where(ConsoleSession.id == session_id, ConsoleSession.ended_at.is_(None))
            .values(**values)
        )


def end_session(store: Store, signed_in: SignedIn, *, host: str | None) -> None:
    """Log out: the session ends now (recorded as ``console_logout``)."""
    with store.session("ending a console session", immediate=True) as session:
        row = session.get(ConsoleSession, signed_in.session_id)
        if row is not None and row.ended_at is None:
            row.ended_at = utc_now()
        AuditRecorder(store).record(
            AuditEvent(
                EventType.CONSOLE_LOGOUT,
                Actor(user=signed_in.account.name, host=host),
                payload={"session": signed_in.session_id},
            ),
            session=session,
        )
