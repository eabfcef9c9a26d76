"""Logging for radtrace's entry points: text or JSON, and never a patient identifier.

Library modules only call ``logging.getLogger(__name__)``. Entry points (the CLI) call
:func:`configure_logging` once. Every handler it installs carries a :class:`PatientDataFilter`, which
runs *after* the message is formatted, so patient names, IDs and birth dates are removed whatever
reached the log call: a pydicom dataset, a pynetdicom dump, an HL7 PID segment, an exception text or a
value registered with :func:`redacting`. Log lines identify a study by :func:`study_key`, a hash.

Much of what is logged comes from a peer (AE titles, UIDs, element values, PDU bytes, pynetdicom's and
pydicom's warnings about them): the same filter escapes every control character in the message as
``\\xNN`` (:func:`escape`), so that a newline or NUL in a calling AE title cannot forge a log line,
in text and JSON formats alike. The same holds for an exception's message and notes inside a traceback
(a traceback keeps its own lines, none of which a peer writes), for ``extra`` values (scrubbed too; an
extra named like a patient attribute is dropped), and for bidirectional controls. A message, extra or
exception message longer than :data:`MAX_MESSAGE_CHARS` is cut, saying how much was left out.

pydicom warns about what it reads (an unknown Specific Character Set) twice in each read, and radtrace reads an
instance more than once in a process (the listener's header and pixel checks, the worker's header and pixels): a
read wrapped in :func:`warnings_once_per_instance` (its values' conversion too, where pydicom warns once per value) has
its ``pydicom`` records held back, then logged once per instance and kind of warning in this process, with how many
there were, naming the study by :func:`study_key`.

The pieces, one module each: :mod:`.redaction` (what a line may hold: escaping, patient values, the study key),
:mod:`.tracebacks` (an exception's text), :mod:`.records` (the handler's filter and the JSON format),
:mod:`.pydicom_reads` (pydicom's warnings once per instance), :mod:`.pynetdicom_lines` (pynetdicom's identifiers,
non-conformant UID lines, and its and pydicom's lines about an A-ASSOCIATE-RQ the listener decodes) and
:mod:`.uncaught` (an exception that ends a thread or the process: one record, its type and place, not its message).
What other modules use is imported from here.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

from radtrace.logging.pydicom_reads import (
    HeldWhileReading,
    InstanceRead,
    LoggedByPydicom,
    warnings_once_per_instance,
)
from radtrace.logging.pynetdicom_lines import (
    NONCONFORMANT,
    REQUEST_LINES,
    nonconformant_uid_lines_ended,
    quiet_libraries,
)
from radtrace.logging.records import InterruptLoggedByALibrary, JsonFormatter, PatientDataFilter
from radtrace.logging.redaction import (
    MAX_MESSAGE_CHARS,
    REDACTED,
    escape,
    patient_values,
    redact_text,
    redacting,
    registered,
    study_key,
)
from radtrace.logging.uncaught import install_exception_hooks

__all__ = [
    "MAX_MESSAGE_CHARS",
    "REDACTED",
    "InstanceRead",
    "JsonFormatter",
    "PatientDataFilter",
    "configure_logging",
    "escape",
    "nonconformant_uid_lines_ended",
    "patient_values",
    "redact_text",
    "redacting",
    "registered",
    "study_key",
    "warnings_once_per_instance",
]


def configure_logging(fmt: str = "text", level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Install radtrace's single root handler (text or JSON) with the patient-data filter.

    Call only from entry points. Replaces handlers a previous call installed, so it is safe to
    call twice. Returns the handler (tests attach to its stream).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(InterruptLoggedByALibrary())  # first: PatientDataFilter turns exc_info into redacted text
    handler.addFilter(PatientDataFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_radtrace", False)]:
        root.removeHandler(old)
    handler._radtrace = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    quiet_libraries()
    install_exception_hooks()  # an exception nobody caught (any thread's) is one record here, not raw on stderr
    logging.captureWarnings(True)
    captured_warnings = logging.getLogger("py.warnings")
    if not any(isinstance(existing, LoggedByPydicom) for existing in captured_warnings.filters):
        captured_warnings.addFilter(LoggedByPydicom())
    pydicom_logger = logging.getLogger("pydicom")
    if not any(isinstance(existing, HeldWhileReading) for existing in pydicom_logger.filters):
        pydicom_logger.addFilter(HeldWhileReading())
    pydicom_logger.addFilter(REQUEST_LINES)  # the same object twice is kept once
    pydicom_logger.addFilter(NONCONFORMANT)  # after REQUEST_LINES, as on pynetdicom.utils
    utils_logger = logging.getLogger("pynetdicom.utils")
    if REQUEST_LINES not in utils_logger.filters:
        utils_logger.filters.insert(0, REQUEST_LINES)  # before NONCONFORMANT: what it drops is not counted there
    if NONCONFORMANT not in utils_logger.filters:
        utils_logger.addFilter(NONCONFORMANT)
    return handler
