"""What the console's addresses carry instead of patient identifiers: study handles and saved searches.

A Study Instance UID, a patient ID or an accession in a URL ends up in browser history, proxy logs and ``Referer``
headers. So the console's addresses name a study by a **handle**, an HMAC-SHA256 of its UID (truncated to 144 bits,
base64url: 24 characters of ``A-Z a-z 0-9 _ -``) under a key that only the database holds (``console_keys``, made
by the first console process that needs it): the same study has the same handle on every page, in every console
process and after a restart, and nobody without the key can tell which UID it stands for. The handle's UID is
kept in ``study_handles`` when a page first shows the link, which is how a request finds its study again.

Two kinds of handle, hashed apart: ``study`` (the review console's study pages and decisions; kept for good, like
a bookmark) and ``timeline`` (the audit explorer's timelines; a link works for :data:`LINK_TTL_S` after a page
last showed it, at most :data:`MAX_KEPT` of them). An audit search's patient identifiers are kept in
``saved_searches`` under a random token, also :data:`LINK_TTL_S` and :data:`MAX_KEPT`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from radtrace.console.schema import ConsoleKey, SavedSearch, StudyHandle
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, is_postgresql

__all__ = [
    "HANDLE",
    "LINK_TTL_S",
    "MAX_KEPT",
    "STUDY",
    "TIMELINE",
    "UID",
    "ConsoleLinks",
]

STUDY: Final = "study"
TIMELINE: Final = "timeline"
#: How long a timeline link and a saved search work after a page last showed them.
LINK_TTL_S: Final = 12 * 3600
#: At most this many timeline handles and this many saved searches are kept (the oldest go first).
MAX_KEPT: Final = 10_000
#: A handle as made here; a Study Instance UID as a console route accepts it (digits and dots, never a handle).
HANDLE: Final = re.compile(r"^[A-Za-z0-9_-]{24}$")
UID: Final = re.compile(r"^[0-9.]{1,64}$")
_KEY_NAME: Final = "study-handles"
#: A timeline handle's ``shown_at`` is written again at most this often (a page of events shows many).
_REFRESH: Final = timedelta(seconds=60)


class ConsoleLinks:
    """The handles and saved searches of one database (one per console application; safe across threads)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._key: bytes | None = None

    # --- handles ---------------------------------------------------------------------------------------------

    def handle(self, kind: str, study_uid: str) -> str:
        """The handle of ``study_uid`` (computed only: :meth:`study_handles` and :meth:`timeline_handles` keep it)."""
        digest = hmac.new(self._secret(), f"{kind}\x00{study_uid}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def study_handles(self, study_uids: Iterable[str]) -> dict[str, str]:
        """Each Study UID's ``study`` handle, kept (a string that is not a UID gets none)."""
        return self._keep(STUDY, study_uids)

    def timeline_handles(self, study_uids: Iterable[str]) -> dict[str, str]:
        """Each Study UID's ``timeline`` handle, kept for :data:`LINK_TTL_S` from now."""
        return self._keep(TIMELINE, study_uids)

    def study_uid(self, kind: str, handle: str) -> str | None:
        """The Study UID ``handle`` stands for, or None: unknown, of the other kind, or (a timeline's) expired."""
        if not HANDLE.match(handle):
            return None
        with self._store.session("reading a study handle") as session:
            found = session.execute(
                sa.select(StudyHandle.kind, StudyHandle.study_uid, StudyHandle.shown_at).where(
                    StudyHandle.handle == handle
                )
            ).first()
        if found is None or found.kind != kind:
            return None
        if kind == TIMELINE and utc_now() - found.shown_at > timedelta(seconds=LINK_TTL_S):
            return None
        return str(found.study_uid)

    def _keep(self, kind: str, study_uids: Iterable[str]) -> dict[str, str]:
        wanted = {uid: self.handle(kind, uid) for uid in set(study_uids) if UID.match(uid)}
        if not wanted:
            return {}
        now = utc_now()
        with self._store.session("reading study handles") as session:
            shown = dict(
                session.execute(
                    sa.select(StudyHandle.handle, StudyHandle.shown_at).where(
                        StudyHandle.handle.in_(sorted(wanted.values()))
                    )
                ).all()
            )
        missing = sorted((handle, uid) for uid, handle in wanted.items() if handle not in shown)
        stale = sorted(h for h, at in shown.items() if kind == TIMELINE and now - at > _REFRESH)
        if missing or stale:
            with self._store.session("keeping study handles") as session:
                if missing:
                    rows = [{"handle": h, "kind": kind, "study_uid": uid, "shown_at": now} for h, uid in missing]
                    session.execute(self._insert(StudyHandle).values(rows).on_conflict_do_nothing())
                if stale:
                    session.execute(sa.update(StudyHandle).where(StudyHandle.handle.in_(stale)).values(shown_at=now))
                if kind == TIMELINE and missing:
                    _forget_old(session, StudyHandle.shown_at, now, StudyHandle.kind == TIMELINE)
        return wanted

    # --- saved searches --------------------------------------------------------------------------------------

    def save_search(self, values: dict[str, str]) -> str:
        """Keep ``values`` and return their new random token (each search is its own, even with equal values)."""
        token = secrets.token_urlsafe(18)
        now = utc_now()
        with self._store.session("saving a search") as session:
            session.add(SavedSearch(token=token, filters=json.dumps(values, sort_keys=True), saved_at=now))
            session.flush()
            _forget_old(session, SavedSearch.saved_at, now)
        return token

    def saved_search(self, token: str) -> dict[str, str] | None:
        """The values saved under ``token``, or None when it is unknown or expired."""
        if not HANDLE.match(token):
            return None
        with self._store.session("reading a saved search") as session:
            found = session.execute(
                sa.select(SavedSearch.filters, SavedSearch.saved_at).where(SavedSearch.token == token)
            ).first()
        if found is None:
            return None
        if utc_now() - found.saved_at > timedelta(seconds=LINK_TTL_S):
            self.forget_expired()
            return None
        values: Any = json.loads(found.filters)
        return {str(name): str(value) for name, value in values.items()} if isinstance(values, dict) else None

    def forget_expired(self) -> None:
        """Delete the saved searches and timeline handles past :data:`LINK_TTL_S` now (a search's patient
        identifiers are not kept longer than its link works; also done as new ones are kept)."""
        now = utc_now()
        with self._store.session("forgetting expired console links") as session:
            _forget_old(session, SavedSearch.saved_at, now)
            _forget_old(session, StudyHandle.shown_at, now, StudyHandle.kind == TIMELINE)

    # --- text typed and not sent yet ---------------------------------------------------------------------------

    def typed_text_key(self, account: str) -> tuple[str, str]:
        """The key (32 bytes, base64) with which the study page's script encrypts what ``account`` typed into a
        decision's form before keeping it in the browser (console.js), and the key's id, which names the entries:
        derived from the database's key, the same on every page of every session of that account, and another
        account's never decrypts them. Only a page of a signed-in session carries it."""
        key = hmac.new(self._secret(), f"typed-text\x00{account}".encode(), hashlib.sha256).digest()
        name = hmac.new(self._secret(), f"typed-text-id\x00{account}".encode(), hashlib.sha256).digest()
        return base64.b64encode(key).decode(), base64.urlsafe_b64encode(name[:9]).decode()

    # --- the key ---------------------------------------------------------------------------------------------

    def _secret(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._load_key()
            return self._key

    def _load_key(self) -> bytes:
        """The database's key, made now when there is none (two processes at once: the first insert wins, and both
        read it back)."""
        query = sa.select(ConsoleKey.secret).where(ConsoleKey.name == _KEY_NAME)
        with self._store.session("reading the console's link key") as session:
            found = session.scalar(query)
        if found is None:
            made = {"name": _KEY_NAME, "secret": secrets.token_hex(32), "created_at": utc_now()}
            with self._store.session("making the console's link key") as session:
                session.execute(self._insert(ConsoleKey).values(made).on_conflict_do_nothing())
            with self._store.session("reading the console's link key") as session:
                found = session.scalar(query)
        if found is None:  # pragma: no cover - inserted or already there just above
            raise RuntimeError("the console's link key could not be kept")
        return bytes.fromhex(found)

    def _insert(self, table: type[Any]) -> Any:
        return (postgresql.insert if is_postgresql(self._store.engine) else sqlite.insert)(table)


def _forget_old(session: Session, at: Any, now: datetime, *where: sa.ColumnElement[bool]) -> None:
    """Delete the rows of ``at``'s table older than :data:`LINK_TTL_S`, then the oldest beyond :data:`MAX_KEPT`."""
    table = at.class_
    session.execute(sa.delete(table).where(*where, at < now - timedelta(seconds=LINK_TTL_S)))
    kept = session.scalar(sa.select(sa.func.count()).select_from(table).where(*where)) or 0
    if kept > MAX_KEPT:
        key = sa.inspect(table).primary_key[0]
        oldest = sa.select(key).where(*where).order_by(at, key).limit(kept - MAX_KEPT).scalar_subquery()
        session.execute(sa.delete(table).where(key.in_(oldest)))
