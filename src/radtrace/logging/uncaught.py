"""An exception that ends a thread or the process, logged as one record of radtrace's handler instead of Python's raw
traceback on stderr.

Python prints an exception nobody caught (``threading.excepthook`` for a thread: pynetdicom's reactor, a Celery or
SQLAlchemy thread, one of radtrace's own; ``sys.excepthook`` for the main thread; ``sys.unraisablehook`` for one
raised in a ``__del__`` or a finalizer, with the object's repr) straight to stderr, outside the log's escaping and
redaction: its message may hold a peer's bytes (a CR/LF and a forged line), a pydicom data set's repr or an HL7
segment (a patient's name). An object's repr is left out too (its type is named). :func:`install_exception_hooks`
(called by :func:`~radtrace.logging.configure_logging`, so in every process that sets up logging) logs it instead, on
``radtrace.uncaught``: the thread, the exception's type and where it was raised, and the frames (the code's own
lines). The exception's message and notes are left out, and so are those of the exceptions it was raised from or
during (their types are named): nothing a peer or a data set wrote reaches the line. A ``SystemExit`` in a thread
stays silent, as Python keeps it; a Ctrl-C in the main thread is left to Python's own hook (the CLI says it). A hook
another program installed first (pytest's, which reports a thread's exception in the test that raised it) is kept.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import BuiltinFunctionType, FunctionType, MethodType, TracebackType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sys import UnraisableHookArgs

__all__ = ["MAX_CHAIN_NAMED", "describe_uncaught", "install_exception_hooks"]

log = logging.getLogger("radtrace.uncaught")

MAX_CHAIN_NAMED: Final = 10  # earlier exceptions of the chain named by type, newest first; more are counted


def _type_name(exception: BaseException) -> str:
    kind = type(exception)
    return (
        kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    )


def _where(traceback_: TracebackType | None) -> str:
    frames = traceback.extract_tb(traceback_)
    if not frames:
        return "an unknown place"
    last = frames[-1]
    return f"{last.name} ({last.filename}:{last.lineno})"


def _earlier(exception: BaseException) -> list[str]:
    """The types of the exceptions ``exception`` was raised from or during, newest first."""
    names: list[str] = []
    seen = {id(exception)}
    current: BaseException | None = exception
    while current is not None:
        earlier = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
        if earlier is None or id(earlier) in seen:
            break
        seen.add(id(earlier))
        names.append(_type_name(earlier))
        current = earlier
    if len(names) > MAX_CHAIN_NAMED:
        names = [*names[:MAX_CHAIN_NAMED], f"{len(names) - MAX_CHAIN_NAMED} more"]
    return names


def describe_uncaught(exception: BaseException, traceback_: TracebackType | None) -> tuple[str, str]:
    """The record's first line (the type and where it was raised, its chain's types) and its frames' text."""
    summary = f"{_type_name(exception)} raised in {_where(traceback_)}"
    if earlier := _earlier(exception):
        summary += f", after {', '.join(earlier)}"
    frames = "".join(traceback.format_tb(traceback_)) if traceback_ is not None else ""
    note = "(the exception's message is not logged: it may hold a peer's bytes or patient data)"
    return summary, f"Traceback (most recent call last):\n{frames}{_type_name(exception)} {note}"


def _log(level: int, who: str, exception: BaseException, traceback_: TracebackType | None) -> None:
    summary, frames = describe_uncaught(exception, traceback_)
    message = "%s: %s" if who.startswith("an exception ignored") else "%s ended on an exception nobody caught: %s"
    record = log.makeRecord(log.name, level, __file__, 0, message, (who, summary), None)
    record.exc_text = frames  # escaped and scrubbed by PatientDataFilter as any traceback
    log.handle(record)


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    who = f"thread {args.thread.name}" if args.thread is not None else "a thread"
    try:
        _log(logging.ERROR, who, args.exc_value, args.exc_traceback)
    except Exception:  # the hook must not raise; say the least that is safe
        sys.stderr.write(f"radtrace: a thread ended on {args.exc_type.__name__} (not logged: the log failed)\n")


def _process_hook(kind: type[BaseException], exception: BaseException, traceback_: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exception, traceback_)
        return
    try:
        _log(logging.CRITICAL, "radtrace", exception, traceback_)
    except Exception:
        sys.stderr.write(f"radtrace: ended on {kind.__name__} (not logged: the log failed)\n")


def _unraisable_hook(unraisable: UnraisableHookArgs) -> None:
    """An exception Python could not raise (in a ``__del__``, a finalizer, a generator closed by the collector): the
    object's type, never its repr (a data set's, a peer's bytes)."""
    if unraisable.exc_value is None:
        return
    found = unraisable.object
    if isinstance(found, FunctionType | MethodType | BuiltinFunctionType):
        where = found.__qualname__  # code's name ('PeerBuffer.__del__'), not a value
    else:
        where = f"an object of type {type(found).__qualname__}" if found is not None else "Python"
    try:
        _log(logging.WARNING, f"an exception ignored in {where}", unraisable.exc_value, unraisable.exc_traceback)
    except Exception:
        sys.stderr.write(
            f"radtrace: an exception ignored ({unraisable.exc_type.__name__}; not logged: the log failed)\n"
        )


def install_exception_hooks() -> None:
    """Route exceptions nobody caught (any thread's, the main thread's) through radtrace's log handler, where Python's
    own hook is in place: one another program installed (a test runner's, a debugger's) is kept."""
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _thread_hook
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _process_hook
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _unraisable_hook
