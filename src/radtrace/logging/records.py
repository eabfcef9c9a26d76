"""What radtrace's log handler does to each record: patient data out, one line per message, text or JSON.

:class:`PatientDataFilter` runs *after* the message is formatted, so patient names, IDs and birth dates are removed
whatever reached the log call: a pydicom dataset, a pynetdicom dump, an HL7 PID segment, an exception text or a value
registered with :func:`~radtrace.logging.redaction.redacting`. The same holds for an exception's message and notes
inside a traceback (a traceback keeps its own lines, none of which a peer writes), for ``extra`` values (scrubbed
too; an extra named like a patient attribute is dropped), and for bidirectional controls.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

from radtrace.logging.redaction import (
    _CONTROL_BUT_NEWLINE,
    _PATIENT_KEY,
    MAX_MESSAGE_CHARS,
    REDACTED,
    _bounded,
    _dataset_values,
    _hex,
    _one_line,
    escape,
    redact_text,
    redacting,
)
from radtrace.logging.tracebacks import format_exception

__all__ = ["InterruptLoggedByALibrary", "JsonFormatter", "PatientDataFilter"]


def _template_on_one_line(record: logging.LogRecord) -> None:
    """A library's own multi-line message template (a string constant of the module that logs it, such as Celery's
    ``CONNECTION_ERROR``, 'consumer: Cannot connect to %s: %s.\\n%s\\n') joined into one line before formatting,
    so its lines read 'refused.. Trying again in 2.00 seconds' instead of '\\x0aTrying again'. Only the template's
    newlines: the code wrote them, not a peer, and the arguments formatted into it are escaped as any message is."""
    template = record.msg
    if not isinstance(template, str) or "\n" not in template or not record.args:
        return
    module = sys.modules.get(record.name)
    if module is not None and any(template is value for value in vars(module).values()):
        record.msg = " ".join(part.strip() for part in template.splitlines() if part.strip())


class PatientDataFilter(logging.Filter):
    """Handler filter that formats each record's message, then scrubs patient identifiers from it."""

    def filter(self, record: logging.LogRecord) -> bool:
        _template_on_one_line(record)
        extra_values = _dataset_values(record.args)
        with redacting(*extra_values):
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not lose the line, nor leak its arguments
                message = f"{record.msg!s} <unformattable arguments>"
            record.msg = _one_line(message)
            record.args = None
            # Another handler may already have cached an unredacted exc_text: always rebuild it.
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = format_exception(record.exc_info)
            elif record.exc_text:
                record.exc_text = _bounded(record.exc_text, 4 * MAX_MESSAGE_CHARS)
            if record.exc_text:  # a traceback keeps its lines; other controls are escaped
                record.exc_text = _CONTROL_BUT_NEWLINE.sub(_hex, redact_text(record.exc_text))
            record.exc_info = None
            if record.stack_info:
                record.stack_info = redact_text(record.stack_info)
            for key, value in list(vars(record).items()):  # extras (the JSON format writes them out)
                if key in _STANDARD_ATTRS or key.startswith("_"):
                    continue
                if _PATIENT_KEY.match(key):
                    setattr(record, key, REDACTED)
                elif isinstance(value, str) or not isinstance(value, (int, float, bool, type(None))):
                    setattr(record, key, _one_line(value if isinstance(value, str) else repr(value)))
        return True


_STANDARD_ATTRS: Final = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = escape(value) if isinstance(value, str) else value
                if not isinstance(value, (str, int, float, bool, type(None))):
                    entry[key] = escape(repr(value))
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class InterruptLoggedByALibrary(logging.Filter):
    """Drops a library's record of a Ctrl-C passing through it (SQLAlchemy's pool logs 'Exception closing
    connection' with the KeyboardInterrupt's traceback when the signal lands while it closes a connection): radtrace
    says the interrupt once itself ('radtrace: interrupted (Ctrl-C) ...'); its own records are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        interrupted = bool(record.exc_info) and isinstance(record.exc_info[1], KeyboardInterrupt)  # type: ignore[index]
        return not interrupted or record.name.startswith("radtrace")
