"""Bearer tokens for the QA API: issued once, stored only as SHA-256, each with one role, revocable.

A token's secret (``secrets.token_urlsafe(32)``, 256 random bits) is shown to the operator once and
never stored; the database keeps its SHA-256. Authentication hashes the presented secret and looks
the hash up, so the secret itself is never compared byte by byte. Creating and revoking a token are
recorded in the audit log (Security Alert events), in the same transaction as the change, and a token is
accepted only while that record binds its name, role and hash (:mod:`radtrace.audit.credentials`): a row
inserted or changed in the database directly is refused, with a ``tamper_detected`` event.

Roles: ``qa`` reads the log (events, timelines); ``admin`` also verifies the chain and exports.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from radtrace.audit.credentials import TOKEN, TOKEN_EVENTS, recorded_binding, revoked_after, unrecorded
from radtrace.audit.credentials import token_binding as _binding
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.tokens_schema import ApiToken
from radtrace.errors import ConfigError, PermanentError
from radtrace.store.base import utc_now
from radtrace.store.engine import Store

__all__ = [
    "BOOTSTRAP_TOKEN_NAME",
    "AuthenticationError",
    "IssuedToken",
    "Role",
    "TokenError",
    "TokenInfo",
    "authenticate",
    "create_token",
    "ensure_bootstrap_admin",
    "list_tokens",
    "revoke_token",
]

BOOTSTRAP_TOKEN_NAME: Final = "bootstrap-admin"
MIN_SECRET_CHARS: Final = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


class Role(enum.StrEnum):
    """What a token may do: ``qa`` reads; ``admin`` reads, verifies and exports."""

    QA = "qa"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        """Whether a token with this role may do what ``needed`` may do."""
        return self is Role.ADMIN or needed is Role.QA


class TokenError(PermanentError):
    """A token operation was refused: bad name or role, duplicate name, no such token."""


class AuthenticationError(PermanentError):
    """A presented token is unknown or revoked. ``token_name`` names a revoked token, never the secret."""

    def __init__(self, reason: str, token_name: str | None = None) -> None:
        super().__init__(reason)
        self.token_name = token_name


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its secret or hash."""

    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the token is still accepted."""
        return self.revoked_at is None


@dataclass(frozen=True)
class IssuedToken:
    """A newly created token and its secret, which is shown once and cannot be recovered."""

    info: TokenInfo
    secret: str = field(repr=False)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    try:
        role = Role(row.role)
    except ValueError as exc:
        raise PermanentError(f"API token {row.name!r} has an unknown role {row.role!r} in the database") from exc
    return TokenInfo(row.name, role, row.created_at, row.revoked_at)


def _by(session: Session, column: InstrumentedAttribute[str], value: str) -> ApiToken | None:
    return session.execute(sa.select(ApiToken).where(column == value)).scalar_one_or_none()


def _insert(store: Store, session: Session, name: str, role: Role, secret: str, created_by: Actor) -> TokenInfo:
    row = ApiToken(name=name, role=role.value, token_sha256=_sha256(secret), created_at=utc_now())
    session.add(row)
    session.flush()
    AuditRecorder(store).record(
        AuditEvent(
            EventType.API_TOKEN_CREATED,
            created_by,
            payload={"token_name": name, "role": role.value, "binding": _binding(name, role.value, row.token_sha256)},
        ),
        session=session,
    )
    return _info(row)


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TokenError(
            f"invalid token name {name!r}: 1-64 letters, digits and . _ @ + -, starting with a letter or digit"
        )
    return name


def create_token(store: Store, name: str, role: Role | str, created_by: Actor) -> IssuedToken:
    """Issue a new token called ``name`` with ``role`` and record who created it.

    Returns the secret once; only its SHA-256 is stored. Raises :class:`TokenError` for an invalid
    name or role or a name already in use (revoked tokens keep their names).
    """
    _check_name(name)
    try:
        role = Role(role)
    except ValueError as exc:
        raise TokenError(f"invalid role {role!r}: use {' or '.join(r.value for r in Role)}") from exc
    secret = secrets.token_urlsafe(32)
    with store.session("creating an API token", immediate=True) as session:
        if _by(session, ApiToken.name, name) is not None:
            raise TokenError(f"a token named {name!r} already exists (names of revoked tokens are not reused)")
        info = _insert(store, session, name, role, secret, created_by)
    return IssuedToken(info, secret)


def list_tokens(store: Store) -> list[TokenInfo]:
    """Every token, active and revoked, oldest first."""
    with store.session("listing API tokens") as session:
        rows = session.execute(sa.select(ApiToken).order_by(ApiToken.id)).scalars().all()
        return [_info(row) for row in rows]


def revoke_token(store: Store, name: str, revoked_by: Actor) -> TokenInfo:
    """Revoke the token called ``name`` and record who did; revoking a revoked token changes nothing.

    Raises :class:`TokenError` when there is no such token.
    """
    with store.session("revoking an API token", immediate=True) as session:
        row = _by(session, ApiToken.name, name)
        if row is None:
            raise TokenError(f"no token named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = utc_now()
            session.flush()
            AuditRecorder(store).record(
                AuditEvent(
                    EventType.API_TOKEN_REVOKED,
                    revoked_by,
                    payload={
                        "token_name": name,
                        "role": row.role,
                        "binding": _binding(name, row.role, row.token_sha256),
                    },
                ),
                session=session,
            )
        return _info(row)


def authenticate(store: Store, presented: str) -> TokenInfo:
    """The active token whose secret is ``presented``; :class:`AuthenticationError` if unknown, revoked, or not
    recorded in the audit log as it stands in the database (then also a ``tamper_detected`` event, once)."""
    digest = _sha256(presented)
    with store.session("authenticating an API token") as session:
        row = _by(session, ApiToken.token_sha256, digest)
        # The lookup found it; compare again in constant time so that a lenient collation can never match.
        info = _info(row) if row is not None and hmac.compare_digest(row.token_sha256, digest) else None
        if info is None:
            raise AuthenticationError("unknown token")
        if not info.active:
            raise AuthenticationError("revoked token", token_name=info.name)
        binding = _binding(info.name, info.role.value, digest)
        created = recorded_binding(store, session, TOKEN_EVENTS, binding)
        if created is None:
            problem = unrecorded(store, session, TOKEN, info.name, info.role.value, binding)
            if problem is not None:
                raise AuthenticationError(problem.reason, token_name=info.name)
        revoked = revoked_after(store, session, info.name, created or 0)
        if revoked is not None:
            raise AuthenticationError(
                f"token {info.name!r} was revoked (audit event {revoked}); its revocation was undone in the database",
                token_name=info.name,
            )
    return info


def ensure_bootstrap_admin(store: Store, secret: str, started_by: Actor) -> TokenInfo:
    """Make sure an active admin token with this secret exists (``api.bootstrap_admin_token``).

    Creates it as ``bootstrap-admin`` (or ``bootstrap-admin-2``, … when that name is taken by an
    earlier value) on first start; later starts find it. A secret that was revoked or belongs to a
    ``qa`` token is refused with :class:`ConfigError` rather than silently brought back.
    """
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"api.bootstrap_admin_token must be at least {MIN_SECRET_CHARS} random characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    with store.session("creating the bootstrap admin token", immediate=True) as session:
        row = _by(session, ApiToken.token_sha256, _sha256(secret))
        if row is not None:
            info = _info(row)
            if not info.active:
                raise ConfigError(f"api.bootstrap_admin_token is token {info.name!r}, which was revoked; set a new one")
            if info.role is not Role.ADMIN:
                raise ConfigError(f"api.bootstrap_admin_token is the secret of {info.role} token {info.name!r}")
            binding = _binding(info.name, info.role.value, row.token_sha256)
            if recorded_binding(store, session, TOKEN_EVENTS, binding) is None:
                # Created before tokens were bound to the log: the configured secret vouches for this row.
                AuditRecorder(store).record(
                    AuditEvent(
                        EventType.API_TOKEN_BOUND,
                        started_by,
                        payload={"token_name": info.name, "role": info.role.value, "binding": binding,
                                 "vouched_by": "api.bootstrap_admin_token"},
                    ),
                    session=session,
                )  # fmt: skip
            return info
        name, number = BOOTSTRAP_TOKEN_NAME, 1
        while _by(session, ApiToken.name, name) is not None:
            number += 1
            name = f"{BOOTSTRAP_TOKEN_NAME}-{number}"
        return _insert(store, session, name, Role.ADMIN, secret, started_by)
