"""pynetdicom's logging, kept within bounds: never an identifier, one non-conformant UID line per association, and
no unbounded line of pynetdicom's or pydicom's per A-ASSOCIATE-RQ a peer sends the listener."""

from __future__ import annotations

import importlib.abc
import logging
import sys
import threading
import weakref
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, Final

from radtrace.logging.pydicom_reads import warning_kind

__all__ = ["NONCONFORMANT", "REQUEST_LINES", "nonconformant_uid_lines_ended", "quiet_libraries"]


#: pydicom's WARNING for a UI value that breaks PS3.5 9.1, as pynetdicom decodes a C-STORE request's command set and
#: the listener reads its data set: nine per instance whose SOP Instance UID has a leading zero in a component.
_PYDICOM_UID: Final = "Invalid value for VR UI"


def _uid_kind(record: logging.LogRecord) -> str | None:
    """Which per-association UID warning ``record`` is: pynetdicom's, pydicom's, or neither (``None``)."""
    if not isinstance(record.msg, str):
        return None
    if record.msg.startswith("Non-conformant "):
        return "pynetdicom"
    if record.name.startswith("pydicom") and record.msg.startswith(_PYDICOM_UID):
        return "pydicom"
    return None


class _NonconformantOncePerAssociation(logging.Filter):
    """pynetdicom.utils' WARNING ``Non-conformant '<name>' value '<uid>'`` (a peer's UID that breaks PS3.5 9.1, e.g.
    a leading zero: written as pynetdicom decodes each C-STORE request) and pydicom's ``Invalid value for VR UI`` for
    the same UIDs (nine per instance: the command set's and the data set's UIDs, each read more than once): the
    first of each per association, the others counted, the count logged in one line when the association ends
    (:func:`nonconformant_uid_lines_ended`). Before, a 300-instance association of such UIDs wrote 2,700 of
    pydicom's lines (pynetdicom's were bounded already): a peer could fill the log at the rate it sends. Lines
    logged outside an association's threads pass."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._counts: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = _uid_kind(record)
        if kind is None:
            return True
        association = _association_of(threading.current_thread())
        if association is None:
            return True
        with self._lock:
            counts = self._counts.setdefault(association, {})
            seen = counts.get(kind, 0)
            counts[kind] = seen + 1
        return seen == 0

    def ended(self, association: Any) -> int:
        """Forget the association; how many of its lines were not logged."""
        with self._lock:
            counts = self._counts.pop(association, {})
        return sum(max(seen - 1, 0) for seen in counts.values())


def _association_of(thread: threading.Thread) -> Any:
    """The pynetdicom association a thread serves: the association's own thread, or its DUL's (duck-typed, so that
    this module does not import pynetdicom)."""
    if hasattr(thread, "acse") and hasattr(thread, "dimse"):
        return thread
    return getattr(thread, "assoc", None)


NONCONFORMANT: Final = _NonconformantOncePerAssociation()


def nonconformant_uid_lines_ended(association: Any) -> int:
    """The association has ended: how many of pynetdicom's non-conformant UID lines of it were not logged (the first
    was); it is forgotten."""
    return NONCONFORMANT.ended(association)


#: The states of pynetdicom's state machine while a connection's A-ASSOCIATE-RQ is decoded (Sta1 until the DUL has
#: taken the connection's own event, Sta2 after: the DUL's thread) and negotiated (Sta3: the association's thread)
_NEGOTIATING: Final = frozenset({"Sta1", "Sta2", "Sta3"})


class _RequestLinesOfTheListener(logging.Filter):
    """pynetdicom's and pydicom's records about a peer's A-ASSOCIATE-RQ as the listener decodes and negotiates it (in
    the DUL's or the association's thread of a connection the listener accepted, before the association is
    established or refused): within the listener's own bounds.

    - An ERROR in the DUL's thread (``Invalid 'Calling AE Title' value '...' - must not contain control
      characters``, an AE title or UID not in ASCII) precedes the ``ValueError`` that refuses the request, and the
      listener's line for it (``undecodable PDU ... from <address>: ValueError: <the same message>``,
      :mod:`radtrace.dicom_listener.fast_path`) quotes it and is limited per source: pynetdicom's is dropped.
      Before, each bad request wrote both, and a stranger could write the first as fast as it connects.
    - A WARNING (``Non-conformant 'Implementation Class UID' value '...'``, pydicom's ``Invalid value for VR UI``,
      two to six per request), or an ERROR in the association's thread, is logged once per source and kind per
      ``listener.refusal_audit_interval_s``, as the listener's own lines are (its
      :class:`~radtrace.dicom_listener.peer_log.PeerLog`): the next says how many were left out.

    Other records, and these anywhere else (an SCU's association, a file read, an established association's
    C-STORE: :data:`NONCONFORMANT`), pass. The listener's connection is known by duck typing (this package does not
    import the listener): a DUL (the thread, or the association thread's ``dul``) with an ``admission`` holding a
    ``peer_log`` (:mod:`radtrace.dicom_listener.fast_path`), and pynetdicom's ``state_machine``."""

    def filter(self, record: logging.LogRecord) -> bool:
        thread: Any = threading.current_thread()
        dul = thread if hasattr(thread, "admission") else getattr(thread, "dul", None)
        peer_log = getattr(getattr(dul, "admission", None), "peer_log", None)
        if peer_log is None or getattr(getattr(dul, "state_machine", None), "current_state", None) not in _NEGOTIATING:
            return True
        if record.levelno >= logging.ERROR and dul is thread:
            return False  # the DUL's decode raises next, and the listener's line says it
        host = str(
            getattr(getattr(dul, "connection", None), "host", None)
            or getattr(getattr(getattr(dul, "assoc", None), "requestor", None), "address", None)
            or "?"
        )
        try:
            message = record.getMessage()
        except Exception:  # logged as it came: the handler's filter says it cannot be formatted
            return True
        suffix = peer_log.admit(host, f"{record.name} on a request: {warning_kind(message)}")
        if suffix is None:
            return False
        if suffix:
            record.msg, record.args = f"{message}{suffix}", None
        return True


#: On ``pynetdicom.utils`` (before :data:`NONCONFORMANT`, so that what it drops is not counted there too) and on
#: ``pydicom``: :class:`_RequestLinesOfTheListener`.
REQUEST_LINES: Final = _RequestLinesOfTheListener()


_PYNETDICOM_CONFIG: Final = "pynetdicom._config"


def _pynetdicom_identifiers_off(config: ModuleType) -> None:
    """pynetdicom logs full C-STORE/C-FIND identifiers (patient data) at DEBUG unless told not to."""
    vars(config).update(LOG_REQUEST_IDENTIFIERS=False, LOG_RESPONSE_IDENTIFIERS=False)


class _TurnsIdentifiersOff(importlib.abc.Loader):
    """pynetdicom's own loader of ``pynetdicom._config``, which then turns identifier logging off."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _pynetdicom_identifiers_off(module)

    def __getattr__(self, name: str) -> Any:  # get_source and the rest: the wrapped loader's
        return getattr(self._loader, name)


class _WhenPynetdicomIsImported(importlib.abc.MetaPathFinder):
    """Turns pynetdicom's identifier logging off as pynetdicom is imported, before it can log anything.

    Many radtrace commands (config, audit, db, each command's --help) never import pynetdicom; importing it (and
    pydicom) in :func:`configure_logging` only to set two flags cost each of them about 0.3 s of CPU.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != _PYNETDICOM_CONFIG:
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec: ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _TurnsIdentifiersOff(spec.loader)
                return spec
        return None


def quiet_libraries() -> None:
    if (config := sys.modules.get(_PYNETDICOM_CONFIG)) is not None:
        _pynetdicom_identifiers_off(config)
    elif not any(isinstance(finder, _WhenPynetdicomIsImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WhenPynetdicomIsImported())
    # highdicom logs at INFO the SOP Instance UID of every data set it copies the patient and study from.
    for name in (
        "pynetdicom",
        "highdicom",
        "celery",
        "kombu",
        "urllib3",
        "httpx",
        "filelock",
        "transformers",
        "alembic",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
