"""Test-only detector of SQLite transactions that read and then write (not fixtures).

On SQLite in WAL mode (radtrace's one-machine default) a ``BEGIN DEFERRED`` transaction that has read holds a snapshot;
its first write must upgrade to the write lock, and if another connection has committed a write since the snapshot
began SQLite refuses at once ("database is locked", SQLITE_BUSY_SNAPSHOT: the busy timeout does not apply). Under load
(listener, worker, dispatcher, API and consoles on one file) every such transaction is a random 503, retry or failure.
Such a transaction must take the write lock up front (``store.session(..., immediate=True)``) or be split into a read
transaction and a conditional write (see radtrace.console.accounts.resume_session).

:func:`install` hooks every SQLAlchemy engine in this process (class-level events) and records each transaction that
radtrace opened with ``BEGIN DEFERRED`` (so only Store engines) and that executes its first write (INSERT, UPDATE,
DELETE, REPLACE) after a read (SELECT): the ``doing`` of its ``Store.session`` when there is one, the radtrace line of
the first read and of the write, and a short radtrace stack. Offenders are kept in :data:`OFFENDERS` and, when a report
file is named, appended to it as JSON lines (several processes and xdist workers may share one file).

A whole test run (``tests/conftest.py``): ``SQLITE_UPGRADE_REPORT=/tmp/offenders.jsonl pytest ...``; the processes
the tests start (``radtrace listen``, ``serve``, ``api``) are watched too, through ``sqlite_upgrade_site``'s
``sitecustomize`` put on their PYTHONPATH. Summary: ``python tests/sqlite_upgrade_support.py /tmp/offenders.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

__all__ = ["OFFENDERS", "Offender", "expected", "in_production", "install", "summarize", "watching"]

REPORT_VARIABLE = "SQLITE_UPGRADE_REPORT"
SITE_DIRECTORY = Path(__file__).resolve().parent / "sqlite_upgrade_site"
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")  # DDL takes the write lock too
_STATE = "sqlite_upgrade_transaction"
_SEP = os.sep
#: Transactions begun here are not production's: radtrace.testing's seeding, and the migrations a test drives through
#: alembic itself (radtrace's upgrade() runs them in one BEGIN IMMEDIATE transaction: test_store_migrate_concurrent).
NOT_PRODUCTION = ("radtrace/testing/", "radtrace/store/migrations/")


@dataclass(frozen=True)
class Offender:
    """A deferred transaction's first write after a read."""

    doing: str | None
    read_at: str
    write_at: str
    statement: str
    stack: tuple[str, ...]
    test: str | None = None
    pid: int = field(default_factory=os.getpid)
    begun_at: str | None = None  # the innermost radtrace or test line that began the transaction

    @property
    def production(self) -> bool:
        """Whether radtrace code (not a test, not radtrace.testing, not a migration a test drives) began it."""
        where = self.begun_at or self.write_at
        return where.startswith("radtrace/") and not where.startswith(NOT_PRODUCTION)

    @property
    def key(self) -> tuple[str | None, str]:
        return self.doing, self.write_at


@dataclass
class _Transaction:
    doing: str | None
    begun_at: str | None = None
    read_at: str | None = None
    wrote: bool = False


OFFENDERS: list[Offender] = []
_installed: dict[str, Path | None] = {}


_SHORT_NAMES: dict[CodeType, str | None] = {}


def _short_name(code: CodeType) -> str | None:
    """radtrace/… or tests/… for radtrace's and the tests' code (not the store's engine module, not this one), else
    None; kept per code object (this runs at each BEGIN and first read of every transaction of the suite)."""
    try:
        return _SHORT_NAMES[code]
    except KeyError:
        pass
    filename, short = code.co_filename, None
    if not filename.endswith(("store/engine.py", "sqlite_upgrade_support.py")):
        for root in (f"{_SEP}radtrace{_SEP}", f"{_SEP}tests{_SEP}"):
            if root in filename:
                short = filename[filename.rindex(root) + 1 :]
                break
    _SHORT_NAMES[code] = short
    return short


def _radtrace_frames(frame: FrameType | None, limit: int = 6) -> list[str]:
    """file:line of the innermost radtrace (or test) frames, not the store's engine module, innermost first."""
    found: list[str] = []
    while frame is not None and len(found) < limit:
        short = _short_name(frame.f_code)
        if short is not None:
            found.append(f"{short}:{frame.f_lineno} ({frame.f_code.co_name})")
        frame = frame.f_back
    return found


def _beginning(frame: FrameType | None) -> tuple[str | None, str | None]:
    """The ``doing`` of the Store.session that is beginning (when BEGIN comes from one) and the innermost radtrace or
    test line that began it (the session's caller), in one walk up the stack."""
    from radtrace.store.engine import Store

    code = Store.session.__wrapped__.__code__  # type: ignore[attr-defined]
    doing = None
    while frame is not None:
        if frame.f_code is code:
            value = frame.f_locals.get("doing")
            doing = str(value) if value is not None else None
        else:
            short = _short_name(frame.f_code)
            if short is not None:
                return doing, f"{short}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return doing, None


def _first_word(statement: str) -> str:
    stripped = statement.lstrip().lstrip("(").lstrip()
    return stripped.split(None, 1)[0].upper() if stripped else ""


def _is_write(statement: str, word: str) -> bool:
    if word in _WRITES:
        return True
    if word == "WITH":  # a CTE: a write when its body is one
        upper = statement.upper()
        return any(f" {write} " in upper or f"\n{write} " in upper or f")\n{write}" in upper for write in _WRITES)
    return False


def _before_cursor_execute(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    if conn.dialect.name != "sqlite":
        return
    word = _first_word(statement)
    if word == "BEGIN":
        mode = statement.split()[1].upper() if len(statement.split()) > 1 else "DEFERRED"
        if mode == "DEFERRED":
            conn.info[_STATE] = _Transaction(*_beginning(sys._getframe(1)))
        else:
            conn.info.pop(_STATE, None)
        return
    transaction: _Transaction | None = conn.info.get(_STATE)
    if transaction is None or transaction.wrote:
        return
    if _is_write(statement, word):
        transaction.wrote = True
        if transaction.read_at is not None:
            stack = _radtrace_frames(sys._getframe(1))
            _record(
                Offender(
                    doing=transaction.doing,
                    read_at=transaction.read_at,
                    write_at=stack[0] if stack else "?",
                    statement=" ".join(statement.split())[:120],
                    stack=tuple(stack),
                    test=os.environ.get("PYTEST_CURRENT_TEST"),
                    begun_at=transaction.begun_at,
                )
            )
    elif word in ("SELECT", "WITH") and transaction.read_at is None:
        frames = _radtrace_frames(sys._getframe(1), limit=1)
        transaction.read_at = frames[0] if frames else "?"


def _end(conn: Any) -> None:
    if conn.invalidated:  # its DBAPI connection is gone (the server ended it): conn.info raised PendingRollbackError
        return  # in the rollback, which replaced the store's StoreUnavailableError with a PermanentError
    conn.info.pop(_STATE, None)


def _record(offender: Offender) -> None:
    OFFENDERS.append(offender)
    report = _installed.get("report")
    if report is not None:
        with report.open("a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(offender)) + "\n")


def install(report: Path | None = None) -> None:
    """Watch every engine of this process from now on (once; ``report`` receives each offender as a JSON line)."""
    if "done" in _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", _before_cursor_execute)
    event.listen(Engine, "commit", _end)
    event.listen(Engine, "rollback", _end)
    _installed["done"] = None
    _installed["report"] = report


def install_from_environment(*, always: bool = False) -> None:
    """Install when SQLITE_UPGRADE_REPORT names a report file, and have the processes this one starts do so too.

    ``always`` (tests/conftest.py): watch this process even without a report file (cheap: a check per statement)."""
    report = os.environ.get(REPORT_VARIABLE)
    if not report:
        if always:
            install(None)
        return
    install(Path(report))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(SITE_DIRECTORY) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(SITE_DIRECTORY), *[p for p in paths if p]])


@contextlib.contextmanager
def watching() -> Iterator[list[Offender]]:
    """The offenders recorded in this process while the block runs."""
    install(_installed.get("report"))
    start = len(OFFENDERS)
    seen: list[Offender] = []
    try:
        yield seen
    finally:
        seen.extend(OFFENDERS[start:])


def in_production(offenders: list[Offender]) -> list[str]:
    """The production offenders among ``offenders``, one line each (where it began, read and wrote)."""
    return [
        f"{o.write_at} ({o.doing}; begun at {o.begun_at}, read at {o.read_at}): {o.statement[:80]}"
        for o in offenders
        if o.production
    ]


@contextlib.contextmanager
def expected() -> Iterator[list[Offender]]:
    """Like :func:`watching`, for a test that makes offenders on purpose: what the block recorded is taken back out
    of :data:`OFFENDERS` (so the suite's guard, tests/conftest.py, does not count it) and given to the test."""
    with watching() as seen:
        yield seen
    del OFFENDERS[len(OFFENDERS) - len(seen) :]


def summarize(report: Path) -> list[tuple[int, dict[str, Any]]]:
    """Distinct offenders of a report file (by doing and write line), most frequent first, with one example each."""
    grouped: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for line in report.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            grouped.setdefault((row["doing"], row["write_at"]), []).append(row)
    return sorted(((len(rows), rows[0]) for rows in grouped.values()), key=lambda item: -item[0])


if __name__ == "__main__":
    for count, example in summarize(Path(sys.argv[1])):
        print(f"{count:5d}  doing={example['doing']!r}")
        print(f"       read  {example['read_at']}\n       write {example['write_at']}: {example['statement']}")
        print("       stack " + " <- ".join(example["stack"][1:4]))
        print(f"       test  {example['test']}")
        print(f"       begun {example.get('begun_at')}")
