"""pydicom's warnings about an instance it reads, logged once per instance and kind of warning in a process.

pydicom warns about what it reads (an unknown Specific Character Set) twice in each read, and about each value it
converts (an unknown escape sequence, a value too long for its VR), and radtrace reads an instance more than once in a
process (the listener's header and pixel checks, the worker's header and pixels): a read wrapped in
:func:`warnings_once_per_instance` (the parse and the conversion of its values: a context, or a decorator on the
reading function) has its ``pydicom`` records held back, then logged once per instance and kind in this process,
with how many there were, naming the study by :func:`~radtrace.logging.redaction.study_key`. Before, one instance
with control characters in each of its text values gave 57 identical lines in the listener and 114 in the worker.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from types import FrameType
from typing import Final

from radtrace.logging.redaction import study_key

__all__ = [
    "MAX_SAID_ONCE",
    "HeldWhileReading",
    "InstanceRead",
    "LoggedByPydicom",
    "warning_kind",
    "warnings_once_per_instance",
]


class LoggedByPydicom(logging.Filter):
    """On the ``py.warnings`` logger: drops a warning raised by pydicom's ``warn_and_log``.

    That function logs its message through the ``pydicom`` logger, then raises the same message as a warning, which
    :func:`logging.captureWarnings` would log a second time (as ``py.warnings``, with pydicom's file and line). The
    filter runs inside the ``warnings.warn`` call, so the caller's frames tell which warnings came that way. Other
    warnings, pydicom's own plain ones included, are logged as before.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        warn_and_log = getattr(sys.modules.get("pydicom.misc"), "warn_and_log", None)
        if warn_and_log is None:  # pydicom not imported (yet): none of its warnings can be passing
            return True
        code = warn_and_log.__code__
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_code is code:
                return False
            frame = frame.f_back
        return True


_held_records: contextvars.ContextVar[list[logging.LogRecord] | None] = contextvars.ContextVar(
    "radtrace_held_records", default=None
)
_reading: contextvars.ContextVar[InstanceRead | None] = contextvars.ContextVar("radtrace_reading", default=None)
#: (instance, kind of warning) pairs already logged by this process (hashed: both are a peer's text, of any length), the
#: oldest forgotten past this many
MAX_SAID_ONCE: Final = 4096
_said_once: OrderedDict[bytes, None] = OrderedDict()
_said_once_lock = threading.Lock()


class InstanceRead:
    """What :func:`warnings_once_per_instance` yields: the reader names the instance once it has read its UIDs."""

    def __init__(self) -> None:
        self.sop_instance_uid = ""
        self.study_instance_uid = ""

    def identify(self, sop_instance_uid: str, study_instance_uid: str) -> None:
        """The instance read (its SOP Instance UID: what a warning is said once for) and its study."""
        self.sop_instance_uid, self.study_instance_uid = sop_instance_uid, study_instance_uid


class HeldWhileReading(logging.Filter):
    """On the ``pydicom`` logger: a record logged inside :func:`warnings_once_per_instance` is held back for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        held = _held_records.get()
        if held is None:
            return True
        held.append(record)
        return False


#: What varies between two warnings of one kind: a quoted term (the peer's), a number (a value's length)
_VARYING: Final = re.compile(r"'[^']*'|\d+")


def warning_kind(message: str) -> str:
    """The kind of a pydicom warning: its message with the quoted terms and numbers left out (pydicom writes no
    value into these messages, but a length: ``The value length (111) exceeds ...``, one per element)."""
    return _VARYING.sub("_", message)


def _first_time(instance: str, kind: str) -> bool:
    """Whether this process has not logged a warning of ``kind`` for ``instance`` yet (and now has)."""
    key = hashlib.sha256(f"{instance}\0{kind}".encode("utf-8", "surrogatepass")).digest()
    with _said_once_lock:
        if key in _said_once:
            _said_once.move_to_end(key)
            return False
        _said_once[key] = None
        while len(_said_once) > MAX_SAID_ONCE:
            _said_once.popitem(last=False)
        return True


class _Kind:
    """The warnings of one kind in one read: the first (logged) and how many, all alike or not."""

    def __init__(self, record: logging.LogRecord, message: str) -> None:
        self.record, self.message, self.count, self.alike = record, message, 1, True

    def add(self, message: str) -> None:
        self.count += 1
        self.alike = self.alike and message == self.message


@contextlib.contextmanager
def warnings_once_per_instance() -> Iterator[InstanceRead]:
    """Around a read of one DICOM instance (and the conversion of its values, where pydicom warns about each one):
    pydicom's records are held back, then logged once per instance and kind (:func:`warning_kind`) in this process,
    the first of each kind with how many there were in this read and the study's :func:`study_key`; the reader calls
    :meth:`InstanceRead.identify`. An instance it could not name (a read that failed) has each kind logged once for
    that read. Inside another such read (a reading function that calls :func:`radtrace.dicom_deflated.read_bounded`,
    which has its own), the records and the instance's name are the outer read's. Also a decorator:
    ``@warnings_once_per_instance()``. Where :func:`configure_logging` did not run (a library use), nothing is
    held."""
    outer = _reading.get()
    if outer is not None:
        yield outer
        return
    read = InstanceRead()
    held: list[logging.LogRecord] = []
    token, reading = _held_records.set(held), _reading.set(read)
    try:
        yield read
    finally:
        _reading.reset(reading)
        _held_records.reset(token)
        _log_held(read, held)


def _log_held(read: InstanceRead, held: list[logging.LogRecord]) -> None:
    kinds: dict[str, _Kind] = {}
    for record in held:
        try:
            message = record.getMessage()
        except Exception:  # logged as it came: the handler's filter says it cannot be formatted
            message = str(record.msg)
        kind = warning_kind(message)
        if kind in kinds:
            kinds[kind].add(message)
        else:
            kinds[kind] = _Kind(record, message)
    for kind, said in kinds.items():
        if read.sop_instance_uid and not _first_time(read.sop_instance_uid, kind):
            continue
        record, text = said.record, said.message
        if read.study_instance_uid:
            text = f"{text} (study {study_key(read.study_instance_uid)})"
        if said.count > 1:
            text = f"{text} ({said.count} {'times' if said.alike else 'like it'} reading this instance)"
        if text != said.message:
            record.msg, record.args = text, None
        logging.getLogger(record.name).handle(record)
