"""The data set file of the C-STORE being received, written fragment by fragment and hashed on another thread.

:class:`_Stream` writes each data set fragment the fast path (:mod:`radtrace.dicom_listener.fast_path`) takes
straight to the file pynetdicom streams the data set to; :class:`_Hasher` hashes what was written on a second core,
so that the handler has the file's SHA-256 without reading it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

from radtrace.dicom_listener.spool import FileDigest

__all__ = ["_Hasher", "_Stream"]

log = logging.getLogger(__name__)


class _Hasher:
    """A thread that hashes data set fragments while the DUL thread goes on receiving.

    One per association, started with its first data set; :meth:`close` (at connection close)
    ends it. ``hashlib`` releases the GIL while it hashes, so this runs on a second core.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, memoryview] | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def update(self, digest: Any, chunk: memoryview) -> None:
        """Queue ``chunk`` for ``digest`` (the chunk's buffer must not change until :meth:`wait`)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="radtrace-hasher", daemon=True)
            self._thread.start()
        self._queue.put((digest, chunk))

    def wait(self) -> None:
        """Return once every chunk queued so far has been hashed."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def close(self) -> None:
        """Stop the thread once it has hashed what is queued."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
            else:
                item[0].update(item[1])


class _Stream:
    """The data set file of the C-STORE being received, and the hash of what was written to it."""

    __slots__ = ("digest", "error", "file", "hasher", "message", "path", "size")

    def __init__(self, message: Any, hasher: _Hasher) -> None:
        self.message = message  # the DIMSE message being received (pynetdicom makes one per message)
        self.path = Path(message._data_set_path)
        self.file = message._data_set_file.file  # the BufferedWriter under NamedTemporaryFile's wrapper
        self.hasher = hasher
        self.error: OSError | None = None
        try:
            self.file.flush()
        except OSError as exc:
            self._failed(exc)
        self.size = self.file.tell()
        # pynetdicom has written the preamble and file meta: they are part of the file and of its hash.
        self.digest = hashlib.sha256(os.pread(self.file.fileno(), self.size, 0))

    def write(self, chunk: memoryview) -> None:
        """Write a fragment; after a failed write (disk full) the rest of the data set is read and dropped."""
        if self.error is not None:
            return
        try:
            self.file.write(chunk)
        except OSError as exc:
            self._failed(exc)
            return
        self.hasher.update(self.digest, chunk)
        self.size += len(chunk)

    def _failed(self, exc: OSError) -> None:
        self.error = exc
        log.warning("could not write a received data set (%s): the rest of it is dropped", exc.strerror or exc)
        with contextlib.suppress(OSError):
            os.ftruncate(self.file.fileno(), 0)  # give the space back now; the handler removes the file

    def finish(self) -> FileDigest:
        """Flush the file and wait for its hash (the digest carries the write error, if any)."""
        if self.error is None:
            try:
                self.file.flush()
            except OSError as exc:
                self._failed(exc)
        self.hasher.wait()
        return FileDigest(self.digest.hexdigest(), self.size, self.error)
