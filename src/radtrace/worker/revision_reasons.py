"""What a revision's ``reason`` says while it is not final, and how each turn of an attempt rewrites it.

``radtrace study show``, ``radtrace status`` and the console print a revision's ``reason`` as why it is in its state.
It says the *current* state, never an older one:

* a counted failure retried: ``attempt 1 of 3 failed: <error>; tried again at 12:00:05 UTC`` (:func:`retried`),
  written as the revision goes back to ``queued`` and kept while the next attempt runs (it is why the study is on
  attempt 2); a lost worker's attempt taken over reads the same (``worker lost: claim expired``);
* waiting, its attempt not counted: ``waiting: <why>; …; no attempt counted`` (the model server is down or reading
  is stopped, the drafts' disk is full, the database was away while the attempt ended), followed, when an attempt
  failed before, by ``; earlier, attempt 1 of 3 failed: …`` (:func:`waiting`): the wait is said first and the
  earlier failure is not lost. When the wait ends (the server answers again, the stop is lifted, the revision is
  claimed again) the reason goes back to that earlier failure, or to none (:func:`after_wait`);
* final: ``gave up after 3 attempts: <error>`` or the permanent error (``failed``), why it was skipped, or none
  (``reported``): the last attempt's, never an earlier attempt's or a wait's.

The job rows and the audit log keep every attempt's own error; the reason is the one line a person reads first.

The earlier failure is found by structure, not by a marker that peer text could forge: a waiting reason is the wait,
then :data:`EARLIER`, then the failure, and the wait never contains :data:`EARLIER` (:func:`waiting` writes each one
in it as :data:`EARLIER_IN_WAIT`: a model server's error body, an OS error, is the peer's text and may say anything).
So the first :data:`EARLIER` of a waiting reason is where its failure begins, and that failure is kept as it was,
whatever its own error says.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from radtrace.store.models import Revision

__all__ = ["EARLIER", "EARLIER_IN_WAIT", "WAITING", "after_wait", "retried", "rewrite", "wait_of", "waiting"]

#: How a waiting reason begins.
WAITING: Final = "waiting: "
#: What joins a wait to the failed attempt before it.
EARLIER: Final = "; earlier, "
#: How :data:`EARLIER` reads inside a wait's own text (its peer's words), so the wait cannot contain it.
EARLIER_IN_WAIT: Final = ", earlier, "
_FAILED_ATTEMPT: Final = "attempt "  # how a retried attempt's reason begins


def retried(attempt: int, max_attempts: int, error: str, at: datetime) -> str:
    """The reason of a revision whose counted attempt ``attempt`` failed with ``error`` and is tried again at ``at``
    (UTC; the next attempt's claim, or now for an attempt taken over)."""
    return f"{_FAILED_ATTEMPT}{attempt} of {max_attempts} failed: {error}; tried again at {at:%H:%M:%S} UTC"


def after_wait(reason: str | None) -> str | None:
    """What ``reason`` says once its wait is over: the failed attempt it was written after (all that follows the
    wait's first :data:`EARLIER`), or None. A retried attempt's reason is kept; any other (a wait with no failure
    before it, a reason older code left) is none."""
    if reason is None:
        return None
    if reason.startswith(_FAILED_ATTEMPT):
        return reason
    if reason.startswith(WAITING):
        found = reason.find(EARLIER + _FAILED_ATTEMPT)
        return reason[found + len(EARLIER) :] if found >= 0 else None
    return None


def wait_of(reason: str | None) -> str | None:
    """The wait a waiting reason says (all before its earlier failure: the ``why`` :func:`waiting` wrote), or None
    when ``reason`` is no wait."""
    if reason is None or not reason.startswith(WAITING):
        return None
    return reason.split(EARLIER, 1)[0]


def waiting(why: str, before: str | None) -> str:
    """The reason of a revision that waits for ``why`` (a whole ``waiting: …`` text), after ``before`` (its reason so
    far: the failed attempt in it is kept, an earlier wait is replaced). Each :data:`EARLIER` in ``why`` is written
    as :data:`EARLIER_IN_WAIT`, again until none is left (one written so may make another with the text before it:
    "; earlier" then "; earlier, " reads "; earlier, earlier, "), so :func:`after_wait` finds the failure by
    structure."""
    while EARLIER in why:  # ends: each pass writes one ";" fewer
        why = why.replace(EARLIER, EARLIER_IN_WAIT)
    earlier = after_wait(before)
    return why if earlier is None else f"{why}{EARLIER}{earlier}"


def rewrite(
    session: Session,
    *where: sa.ColumnElement[bool],
    why: str | None = None,
    only: Callable[[str | None], bool] | None = None,
) -> int:
    """Set the reason of each revision matching ``where`` (and whose reason ``only`` accepts, when given):
    :func:`waiting` for ``why`` when given, else :func:`after_wait`. Only the rows whose reason changes are written
    (one UPDATE by primary key each, in one round trip); returns how many. Read and written in the caller's
    transaction (take the write lock at BEGIN on SQLite)."""
    rows = session.execute(sa.select(Revision.id, Revision.reason).where(*where)).all()
    updates = []
    for revision_id, reason in rows:
        if only is not None and not only(reason):
            continue
        new = waiting(why, reason) if why is not None else after_wait(reason)
        if new != reason:
            updates.append({"id": revision_id, "reason": new})
    if updates:
        session.execute(sa.update(Revision), updates)
    return len(updates)
