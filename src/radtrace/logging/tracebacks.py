"""A traceback for a log record whose exception messages cannot add a line: each message and note on one escaped
line, patient values removed; a long chain or group cut, saying so."""

from __future__ import annotations

import traceback
from typing import Any, Final

from radtrace.logging.redaction import _one_line

__all__ = ["MAX_CHAIN", "MAX_GROUP_MEMBERS", "format_exception"]

_CAUSE: Final = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT: Final = "\nDuring handling of the above exception, another exception occurred:\n\n"
MAX_GROUP_MEMBERS: Final = 15  # as the traceback module shows at most
MAX_CHAIN: Final = 20  # causes and contexts shown, newest last; a longer chain is cut, saying so


def format_exception(exc_info: tuple[type[BaseException], BaseException, Any]) -> str:
    """The traceback, with every exception's message and notes on one escaped line each.

    A traceback's own lines come from our code; an exception's message often echoes a peer's bytes (a NAK's
    text, an element value). Built from public pieces (``traceback.format_tb`` for the frames, the exception's
    own ``str``, ``__notes__`` and chain) so that no message can add a line that reads as a record, whatever
    the Python version keeps inside ``TracebackException``.
    """
    return "".join(_exception_text(exc_info[1], set(), 0)).rstrip()


def _exception_text(exception: BaseException, seen: set[int], depth: int) -> list[str]:
    seen.add(id(exception))
    parts: list[str] = []
    cause, context = exception.__cause__, exception.__context__
    earlier, joint = (cause, _CAUSE) if cause is not None else (context, _CONTEXT)
    if cause is None and exception.__suppress_context__:
        earlier = None
    if earlier is not None and id(earlier) not in seen:
        if depth >= MAX_CHAIN:
            parts.append(f"[earlier exceptions of the chain left out after {MAX_CHAIN}]\n{joint}")
        else:
            parts += [*_exception_text(earlier, seen, depth + 1), joint]
    if exception.__traceback__ is not None:
        parts.append("Traceback (most recent call last):\n")
        parts += traceback.format_tb(exception.__traceback__)
    parts += _exception_lines(exception)
    if isinstance(exception, BaseExceptionGroup):
        members = exception.exceptions
        for index, member in enumerate(members[:MAX_GROUP_MEMBERS], start=1):
            parts.append(f"+---------------- {index} ----------------\n")
            member_text = "".join(_exception_text(member, seen, depth + 1)) if id(member) not in seen else ""
            parts += [f"| {line}\n" for line in member_text.splitlines()]
        if len(members) > MAX_GROUP_MEMBERS:
            parts.append(f"+---------------- ... ----------------\nand {len(members) - MAX_GROUP_MEMBERS} more\n")
    return parts


def _exception_lines(exception: BaseException) -> list[str]:
    """``Type: message`` and each note, one escaped line each (a SyntaxError's place and text too)."""
    kind = type(exception)
    name = (
        kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    )
    lines = []
    message: object
    if isinstance(exception, SyntaxError):
        if exception.filename is not None or exception.lineno is not None:
            lines.append(f'  File "{_one_line(str(exception.filename))}", line {exception.lineno}\n')
        if exception.text:
            lines.append(f"    {_one_line(exception.text.strip())}\n")
        message = exception.msg
    else:
        try:
            message = str(exception)
        except Exception:  # a broken __str__ must not lose the record
            message = "<exception str() failed>"
    text = _one_line(str(message)) if message else ""
    lines.append(f"{name}: {text}\n" if text else f"{name}\n")
    notes = getattr(exception, "__notes__", None)
    if isinstance(notes, list | tuple):
        lines += [f"{_one_line(str(note))}\n" for note in notes]
    return lines
