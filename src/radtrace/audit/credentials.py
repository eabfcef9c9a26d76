"""Credentials bound to the audit chain: an API token or console account is accepted only if the log records it.

The ``api_tokens`` and ``console_users`` tables are ordinary tables: whoever can write the database could insert
a token or an admin account, raise a role or swap a credential hash, and use it without any audit event. So each
event that creates a credential (``api_token_created``, ``console_user_created``, and ``*_bound`` for one recorded
later) carries a *binding*: the SHA-256 of the row's name, role and credential hash (the token's SHA-256, the
account's argon2 hash). Authentication recomputes the binding from the row it read and accepts the row only when

* an event of those types carries exactly that binding (a changed role, name or hash gives another binding),
* that event row still matches its own hash and is chained to its neighbours (an edited or slipped-in event
  does not count), and
* for a token, no ``api_token_revoked`` event names it later (clearing ``revoked_at`` in the table does not
  bring a revoked token back).

What this does not stop: the row hashes are not keyed, so someone who can write the database can also *append*
an event with a valid hash that binds their row. That event is then in the log for good: the ATNA forwarder
sends it off the host, ``audit query --event-type api_token_created`` lists it, and once a signed checkpoint covers it
it cannot be removed unnoticed. It can no longer be done silently. The positive result of the event look-up is
kept per store and process (the event rows cannot change without breaking the chain); revocation is read on
every request.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.audit.chain import GENESIS_HASH, content_intact, hashed_columns
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome, canonical_json
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store

__all__ = [
    "ACCOUNT",
    "ACCOUNT_EVENTS",
    "TOKEN",
    "TOKEN_EVENTS",
    "Kind",
    "Unrecorded",
    "account_binding",
    "account_problem",
    "alert_once",
    "events_naming",
    "recorded_binding",
    "revoked_after",
    "token_binding",
    "unrecorded",
]

TOKEN_EVENTS: Final = (EventType.API_TOKEN_CREATED, EventType.API_TOKEN_BOUND)
ACCOUNT_EVENTS: Final = (EventType.CONSOLE_USER_CREATED, EventType.CONSOLE_USER_BOUND)
_CACHE_LIMIT: Final = 4096
_TABLE: Final = AuditEventRow.__table__
_SEQ: Final = 0
_PREV_HASH: Final = -3  # hashed_columns ends with ..., prev_hash, payload, hash
_PAYLOAD: Final = -2
_HASH: Final = -1

# Per store (weakly, so a disposed store's entries go with it): bindings found recorded, and alerts sent.
_recorded: weakref.WeakKeyDictionary[Store, dict[str, int]] = weakref.WeakKeyDictionary()
_alerted: weakref.WeakKeyDictionary[Store, set[str]] = weakref.WeakKeyDictionary()


def _binding(kind: str, *fields: str) -> str:
    return hashlib.sha256(canonical_json([f"radtrace {kind} binding 1", *fields]).encode("utf-8")).hexdigest()


def token_binding(name: str, role: str, token_sha256: str) -> str:
    """The binding of an API token row: its name, role and secret's SHA-256."""
    return _binding("api_token", name, role, token_sha256)


def account_binding(name: str, role: str, password_hash: str | None) -> str:
    """The binding of a console account row: its name, role and argon2 hash (none: trusted-header sign-in)."""
    return _binding("console_user", name, role, "~" if password_hash is None else f":{password_hash}")


def _payload(row: Sequence[Any]) -> dict[str, Any]:
    try:
        value = json.loads(str(row[_PAYLOAD]))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _chained(session: Session, row: Sequence[Any]) -> bool:
    """Whether an event row matches its hash, the row before it carries its prev_hash and the row after is
    chained to it."""
    seq = row[_SEQ]
    if not isinstance(seq, int) or not content_intact(row):
        return False
    before = session.scalar(sa.select(_TABLE.c.hash).where(_TABLE.c.seq == seq - 1)) if seq > 1 else GENESIS_HASH
    if before != row[_PREV_HASH]:
        return False
    after = session.execute(sa.select(_TABLE.c.prev_hash).where(_TABLE.c.seq == seq + 1)).first()
    return after is None or after[0] == row[_HASH]


def recorded_binding(store: Store, session: Session, types: Sequence[EventType], binding: str) -> int | None:
    """The seq of an intact, chained event of ``types`` that carries ``binding``; None when there is none."""
    cache = _recorded.setdefault(store, {})
    if binding in cache:
        return cache[binding]
    rows = session.execute(
        sa.select(*hashed_columns(store))
        .where(_TABLE.c.event_type.in_([kind.value for kind in types]), _TABLE.c.payload.contains(binding))
        .order_by(_TABLE.c.seq)
        .limit(20)
    ).all()
    for row in rows:
        if _payload(row).get("binding") == binding and _chained(session, row):
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[binding] = row[_SEQ]
            return int(row[_SEQ])
    return None


def events_naming(
    store: Store, session: Session, types: Sequence[EventType], key: str, name: str, *, after: int = 0
) -> list[tuple[int, dict[str, Any]]]:
    """(seq, payload) of each event of ``types`` after seq ``after`` whose payload's ``key`` is ``name``."""
    rows = session.execute(
        sa.select(*hashed_columns(store))
        .where(
            _TABLE.c.event_type.in_([kind.value for kind in types]),
            _TABLE.c.seq > after,
            _TABLE.c.payload.contains(json.dumps(name, ensure_ascii=False), autoescape=True),
        )
        .order_by(_TABLE.c.seq)
        .limit(1000)
    ).all()
    found = []
    for row in rows:
        payload = _payload(row)
        if payload.get(key) == name and isinstance(row[_SEQ], int):
            found.append((row[_SEQ], payload))
    return found


def revoked_after(store: Store, session: Session, name: str, seq: int) -> int | None:
    """The seq of an ``api_token_revoked`` event for token ``name`` after ``seq``; None when there is none."""
    found = events_naming(store, session, (EventType.API_TOKEN_REVOKED,), "token_name", name, after=seq)
    return found[0][0] if found else None


def alert_once(
    store: Store, key: str, actor: Actor, payload: dict[str, Any], *, session: Session | None = None
) -> None:
    """Record a ``tamper_detected`` event for this problem (in ``session``, which the caller commits and which
    must hold the write lock on SQLite; else in its own transaction), once per store and process: a client
    retrying a refused credential must not fill the log."""
    sent = _alerted.setdefault(store, set())
    if key in sent:
        return
    event = AuditEvent(EventType.TAMPER_DETECTED, actor, Outcome.MAJOR_FAILURE, payload=payload)
    AuditRecorder(store).record(event, session=session)
    if len(sent) >= _CACHE_LIMIT:
        sent.clear()
    sent.add(key)


@dataclass(frozen=True)
class Kind:
    """What sort of credential: its words, the events that record it, and the payload key that names it."""

    words: str
    credential: str
    events: tuple[EventType, ...]
    key: str


TOKEN: Final = Kind("token", "api_token", TOKEN_EVENTS, "token_name")
ACCOUNT: Final = Kind("console account", "console_user", ACCOUNT_EVENTS, "user")


@dataclass(frozen=True)
class Unrecorded:
    """Why a credential row is not accepted; ``legacy``: created before bindings, by an event of ``legacy_seq``."""

    reason: str
    legacy_seq: int | None = None


def unrecorded(
    store: Store,
    session: Session,
    kind: Kind,
    name: str,
    role: str,
    binding: str,
    *,
    password: bool | None = None,
    alert_in: Session | None = None,
) -> Unrecorded | None:
    """None when an intact event records ``binding``; otherwise why not. A row changed or inserted in the database
    directly is also a ``tamper_detected`` event (once; in ``alert_in``, else in its own transaction); one from
    before bindings is not."""
    if recorded_binding(store, session, kind.events, binding) is not None:
        return None
    events = events_naming(store, session, kind.events, kind.key, name)
    bound = [(seq, payload) for seq, payload in events if "binding" in payload]
    legacy = [
        seq
        for seq, payload in events
        if "binding" not in payload
        and payload.get("role") == role
        and (password is None or payload.get("password") == password)
    ]
    if bound:
        seq, payload = bound[-1]
        what = "secret hash" if kind is TOKEN else "password hash"
        reason = (
            f"{kind.words} {name!r} is not as the audit log recorded it (event {seq}: role {payload.get('role')!r}): "
            f"its role ({role!r}) or {what} was changed in the database directly"
        )
    elif legacy:
        return Unrecorded(
            f"{kind.words} {name!r} was created before credentials were bound to the audit log: an admin must "
            "record it with radtrace audit rebind",
            legacy[-1],
        )
    elif events:
        seq, payload = events[-1]
        reason = (
            f"{kind.words} {name!r} has role {role!r} in the database but the audit log recorded "
            f"{payload.get('role')!r} (event {seq}): it was changed in the database directly"
        )
    else:
        reason = f"{kind.words} {name!r} is not recorded in the audit log: it was inserted in the database directly"
    details = {"credential": kind.credential, kind.key: name, "role": role, "problem": reason}
    alert_once(store, f"{kind.credential} {binding} {reason}", Actor(user=name), details, session=alert_in)
    return Unrecorded(reason)


def account_problem(
    store: Store, session: Session, name: str, role: str, password_hash: str | None, *, writing: bool
) -> str | None:
    """None when the audit log records this console account as it stands (name, role, password hash); otherwise
    why not (see :func:`unrecorded`). ``writing``: ``session`` holds the write lock and is committed, so an alert
    goes in it."""
    binding = account_binding(name, role, password_hash)
    problem = unrecorded(store, session, ACCOUNT, name, role, binding, password=password_hash is not None,
                         alert_in=session if writing else None)  # fmt: skip
    return None if problem is None else problem.reason
