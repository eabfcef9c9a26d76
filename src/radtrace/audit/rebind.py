"""``radtrace audit rebind``: record the tokens and accounts created before credentials were bound to the log.

A token or console account created by an earlier radtrace has an ``api_token_created`` / ``console_user_created``
event naming it and its role, but no binding of its hash (:mod:`radtrace.audit.credentials`), so it is refused
until this runs once after the upgrade. It first verifies the chain against the signed checkpoints (nothing is
recorded over a chain that does not verify), then, for each active token and each account:

* already bound: nothing to do;
* an intact creation event names it with the role it has now (and, for an account, with a password or not, as
  now), and for a token no revocation followed: an ``api_token_bound`` / ``console_user_bound`` event records its
  binding, naming that creation event;
* otherwise (no creation event, or another role): refused, with a ``tamper_detected`` event. Such a row was
  inserted or changed in the database directly.

What it cannot tell: whether the *hash* of an old row was swapped before the upgrade (the old events did not
record it). So it runs right after the upgrade by itself: ``radtrace db upgrade`` and serve's migration of the
embedded database call :func:`rebind_after_upgrade`, which walks the chain only when a row from before is there.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from radtrace.audit.checkpoints import CheckpointSource
from radtrace.audit.credentials import (
    ACCOUNT,
    TOKEN,
    Kind,
    account_binding,
    alert_once,
    revoked_after,
    token_binding,
    unrecorded,
)
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.operations import ChainNotVerifiedError, verify_audit_log
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.tokens_schema import ApiToken
from radtrace.console.schema import ConsoleUser
from radtrace.store.engine import Store

__all__ = ["Rebound", "rebind_after_upgrade", "rebind_credentials"]


@dataclass(frozen=True)
class Rebound:
    """What happened to one credential: ``recorded``, ``already recorded`` or ``refused`` (with the reason)."""

    kind: str
    name: str
    outcome: str
    reason: str = ""


def rebind_credentials(store: Store, operator: Actor, checkpoints: CheckpointSource | None) -> list[Rebound]:
    """Bind every active token and every account that an intact creation event records (see the module doc)."""
    verification = verify_audit_log(store, operator, checkpoints=checkpoints)
    if not verification.ok:
        raise ChainNotVerifiedError(
            "nothing recorded, the audit chain does not verify: " + "; ".join(verification.problems)
        )
    done: list[Rebound] = []
    recorder = AuditRecorder(store)
    with store.session("recording credentials in the audit log", immediate=True) as session:
        tokens = session.scalars(sa.select(ApiToken).where(ApiToken.revoked_at.is_(None)).order_by(ApiToken.id))
        rows: list[tuple[Kind, str, str, str, bool | None]] = [
            (TOKEN, token.name, token.role, token_binding(token.name, token.role, token.token_sha256), None)
            for token in tokens
        ]
        for user in session.scalars(sa.select(ConsoleUser).order_by(ConsoleUser.id)):
            binding = account_binding(user.name, user.role, user.password_hash)
            rows.append((ACCOUNT, user.name, user.role, binding, user.password_hash is not None))
        for kind, name, role, binding, password in rows:
            problem = unrecorded(store, session, kind, name, role, binding, password=password, alert_in=session)
            if problem is None:
                done.append(Rebound(kind.words, name, "already recorded"))
                continue
            created = problem.legacy_seq
            if created is None:
                done.append(Rebound(kind.words, name, "refused", problem.reason))
                continue
            revoked = revoked_after(store, session, name, created) if kind is TOKEN else None
            if revoked is not None:
                reason = f"token {name!r} was revoked (audit event {revoked}) and brought back in the database"
                details = {"credential": kind.credential, kind.key: name, "role": role, "problem": reason}
                alert_once(store, f"{kind.credential} {binding} {reason}", Actor(user=name), details, session=session)
                done.append(Rebound(kind.words, name, "refused", reason))
                continue
            event = EventType.API_TOKEN_BOUND if kind is TOKEN else EventType.CONSOLE_USER_BOUND
            payload = {kind.key: name, "role": role, "binding": binding, "created_seq": created}
            recorder.record(AuditEvent(event, operator, payload=payload), session=session)
            done.append(Rebound(kind.words, name, "recorded"))
    return done


def _from_before(store: Store) -> bool:
    """Whether an active token or an account was created before bindings (and is not yet bound)."""
    with store.session("looking for credentials from before bindings") as session:
        tokens = session.scalars(sa.select(ApiToken).where(ApiToken.revoked_at.is_(None)))
        rows: list[tuple[Kind, str, str, str, bool | None]] = [
            (TOKEN, t.name, t.role, token_binding(t.name, t.role, t.token_sha256), None) for t in tokens
        ]
        rows += [
            (ACCOUNT, u.name, u.role, account_binding(u.name, u.role, u.password_hash), u.password_hash is not None)
            for u in session.scalars(sa.select(ConsoleUser))
        ]
        for kind, name, role, binding, password in rows:
            problem = unrecorded(store, session, kind, name, role, binding, password=password)
            if problem is not None and problem.legacy_seq is not None:
                return True
    return False


def rebind_after_upgrade(store: Store, operator: Actor, checkpoints: CheckpointSource | None) -> list[Rebound]:
    """After a migration: :func:`rebind_credentials` when a token or account from before bindings is there (else
    nothing, and no walk of the chain), so that an upgrade does not lock every radiologist and API client out
    until someone thinks of ``radtrace audit rebind``. Raises :class:`ChainNotVerifiedError` as it does."""
    return rebind_credentials(store, operator, checkpoints) if _from_before(store) else []
