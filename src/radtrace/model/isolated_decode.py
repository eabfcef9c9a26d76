"""Decoding a frame in a child process, for the transfer syntaxes only GDCM reads here.

GDCM asserts what it expects of a codestream by throwing C++ exceptions its Python binding does not catch: the
process that decodes ends (std::terminate, SIGABRT). JPEG 2000, JPEG-LS and 8-bit JPEG have other decoders
(:func:`radtrace.model.stored_pixels.decode_first_frame` uses those); JPEG Lossless (Process 14) and 12-bit JPEG
Extended have none here (pylibjpeg-libjpeg is GPL), and a JPEG Lossless scan with a few bytes wrong before its
SOS marker ended the worker, its batch and, redelivered, the next worker. Such a frame is decoded here, in a
child process (``python -m radtrace.model.isolated_decode``): the dataset goes in on its stdin and the pixels come
back on its stdout (length-prefixed pickles, between this process and its own child only); an abort is a refusal
with a reason. The child inherits the worker's address-space ceiling (``model.worker_memory_limit_bytes``).

A child serves one request after another and is kept for the next frame: JPEG Lossless is the lossless syntax
most PACS send, and a child started for each frame cost its interpreter and imports every time (0.7-1.4 s a
frame where GDCM decodes a 440 x 440 one in 0.01 s and a 3.6-megapixel one in 0.2 s). A child that aborted, ran
past :data:`DECODE_TIMEOUT_S` or is found ended is dropped, and the next frame gets a new one; idle children wait
on their stdin and end when it closes (this process ending, even by ``kill -9``). At most :func:`max_idle_children`
wait at a time (the worker prepares pictures on one thread a core, each using one child at a time: fewer kept
would start some again for every batch), and a child is replaced after :data:`MAX_FRAMES_PER_CHILD` frames, or
at once when a large frame left it above :data:`MAX_IDLE_RSS_BYTES`, so that memory a decoder kept is given back.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from radtrace.errors import DicomInputError

__all__ = [
    "DECODE_TIMEOUT_S",
    "MAX_FRAMES_PER_CHILD",
    "MAX_IDLE_RSS_BYTES",
    "close_idle_children",
    "decode_in_child",
    "idle_children",
    "max_idle_children",
]

#: Longest a child may take for one frame (GDCM reads a 50-megapixel JPEG Lossless frame in a few seconds).
DECODE_TIMEOUT_S: Final = 300.0
#: Frames one child decodes before it is replaced.
MAX_FRAMES_PER_CHILD: Final = 256
#: A child whose resident memory is above this after a frame is not kept: a 49-megapixel JPEG Lossless frame left
#: one at 293 MB, which a 3.6-megapixel frame after it brought down to 140 MB only (about 95 MB after the first).
MAX_IDLE_RSS_BYTES = 256 << 20

_LENGTH: Final = struct.Struct("<Q")
#: The most children kept waiting, whatever the number of cores (the worker's picture threads are as many).
_MOST_IDLE: Final = 16
#: What each request starts with: a child started from another radtrace release on disk (an upgrade while the
#: worker runs) that reads requests otherwise says so and ends, instead of misreading one.
_MAGIC: Final = b"radtrace-decode-1\n"


class _ChildEndedError(Exception):
    """The child's pipes closed: it ended (killed, aborted) before it answered."""


class _ChildGoneError(_ChildEndedError):
    """The child had ended before the request was sent (its stdin has no reader)."""


class _Child:
    """One decoding child process: its pipes, and a file (append-only, emptied before each frame) for what the
    decoder wrote to stderr, whose last line an abort's reason quotes."""

    def __init__(self) -> None:
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  (open as long as the child runs)
        flags = fcntl.fcntl(self.stderr.fileno(), fcntl.F_GETFL)
        # O_APPEND: the child writes at the end after each truncation, not at its old offset (a sparse file)
        fcntl.fcntl(self.stderr.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        self.frames = 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def resident_bytes(self) -> int:
        """The child's resident memory now (0 where /proc cannot say)."""
        try:
            pages = int(Path(f"/proc/{self.process.pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return 0
        return pages * resource.getpagesize()

    def ask(self, request: bytes, timeout: float) -> Any:
        """Send one request, wait for its answer (raises TimeoutError, :class:`_ChildEndedError`)."""
        os.ftruncate(self.stderr.fileno(), 0)
        self.frames += 1
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        try:
            stdin.write(_MAGIC + _LENGTH.pack(len(request)))
            stdin.write(request)
            stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise _ChildGoneError from exc
        deadline = time.monotonic() + timeout
        (size,) = _LENGTH.unpack(self._read(stdout.fileno(), _LENGTH.size, deadline))
        return pickle.loads(self._read(stdout.fileno(), size, deadline))  # noqa: S301  (written by our own child)

    @staticmethod
    def _read(fd: int, size: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        left = size
        ready = select.poll()  # not select(): a worker's descriptors may be above its FD_SETSIZE of 1024
        ready.register(fd, select.POLLIN)
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0 or not ready.poll(wait * 1000):
                raise TimeoutError
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise _ChildEndedError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def ended(self) -> tuple[int, str]:
        """A child whose pipes closed: its exit status (negative: the signal) once reaped, and the last line it
        wrote to stderr ("" when none)."""
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # its stdout closed, yet it runs: end it
            self.process.kill()
            code = self.process.wait()
        said = os.pread(self.stderr.fileno(), 1 << 16, 0).decode("utf-8", "replace").strip().splitlines()
        return code, said[-1][:200] if said else ""

    def close(self, *, kill: bool = False) -> None:
        """End the child: its stdin closed (it exits), or killed; and reaped."""
        if kill and self.alive():
            self.process.kill()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a broken pipe while flushing
                    pipe.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


_lock = threading.Lock()
_idle: list[_Child] = []


def _take() -> _Child:
    """An idle child that is still running, else a new one."""
    with _lock:
        while _idle:
            child = _idle.pop()
            if child.alive():
                return child
            child.close()
    return _Child()


def _give_back(child: _Child) -> None:
    with _lock:
        if (
            len(_idle) < max_idle_children()
            and child.frames < MAX_FRAMES_PER_CHILD
            and child.alive()
            and child.resident_bytes() <= MAX_IDLE_RSS_BYTES
        ):
            _idle.append(child)
            return
    child.close()


@atexit.register
def close_idle_children() -> None:
    """End the children waiting for a frame (at exit; a later frame starts a new one)."""
    with _lock:
        children, _idle[:] = list(_idle), []
    for child in children:
        child.close()


def max_idle_children() -> int:
    """Children kept waiting for the next frame, at most: as many as the worker's picture threads decode at once
    (:class:`radtrace.model.reader.StudyReader`'s pool: one a core, up to 16), 70-150 MB each while they wait.
    Fewer would start some again for every batch."""
    return max(1, min(os.cpu_count() or 1, _MOST_IDLE))


def idle_children() -> list[int]:
    """The process ids of the children waiting for a frame (for status and tests)."""
    with _lock:
        return [child.process.pid for child in _idle if child.alive()]


def decode_in_child(source: Dataset, frame: int, plugin: str, syntax: str) -> tuple[NDArray[Any], list[str]]:
    """The frame's pixels as pydicom's ``pixel_array`` gives them (``plugin``: "" for pydicom's search) and the
    decoder's warnings, decoded in a child process (a waiting one where there is one).

    Raises:
        DicomInputError: the decoder refused the frame, aborted, or did not finish in :data:`DECODE_TIMEOUT_S`.
    """
    request = pickle.dumps((source, frame, plugin), protocol=pickle.HIGHEST_PROTOCOL)
    child = _take()
    reused, kept = child.frames > 0, False
    try:
        try:
            answer = child.ask(request, DECODE_TIMEOUT_S)
        except _ChildGoneError:
            if not reused:
                raise
            # a waiting child that ended since its last frame (killed by an operator, the OOM killer): a new one
            child.close(kill=True)
            child = _Child()
            answer = child.ask(request, DECODE_TIMEOUT_S)
        kept = True
    except TimeoutError as exc:
        raise DicomInputError(
            f"cannot decode the pixel data ({syntax}): the decoder did not finish in {DECODE_TIMEOUT_S:.0f} s"
        ) from exc
    except _ChildEndedError as exc:
        code, last = child.ended()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        raise DicomInputError(
            f"cannot decode the pixel data ({syntax}): the decoder aborted ({how}){f': {last}' if last else ''}"
        ) from exc
    finally:
        if kept:
            _give_back(child)
        else:
            child.close(kill=True)
    if answer[0] != "ok":
        raise DicomInputError(f"cannot decode the pixel data ({syntax}): {answer[1]}")
    return answer[1], answer[2]


def _decode(source: Dataset, frame: int, plugin: str) -> tuple[Any, ...]:
    from pydicom.pixels.utils import pixel_array

    from radtrace.decoders import PLUGIN, register

    if plugin == PLUGIN:
        register()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            pixels = pixel_array(source, index=frame, allow_excess_frames=False, decoding_plugin=plugin)
        except Exception as exc:  # decoders raise anything from RuntimeError to their own types
            return ("error", str(exc))
        return ("ok", np.ascontiguousarray(pixels), [str(w.message)[:200] for w in caught[:4]])


#: How a request of the release before kept children begins: its whole stdin is one pickle (protocol 2 or later).
_PREVIOUS_RELEASE: Final = b"\x80"


def _answer_previous_release(request: bytes, answers: IO[bytes]) -> None:
    """One request of a worker started before the kept children (its code in memory, this release on disk, until it
    is restarted): the whole stdin is the pickled (dataset, frame, plugin), the answer one bare pickle, then exit.
    Without this, every JPEG Lossless film such a worker read in that interval failed as undecodable."""
    try:
        source, frame, plugin = pickle.loads(request)  # noqa: S301  (written by our parent)
    except Exception:  # a truncated or foreign pickle: any unpickling error
        sys.stderr.write("radtrace.model.isolated_decode: not a request of this radtrace release or the one before\n")
        sys.exit(2)
    answers.write(pickle.dumps(_decode(source, frame, plugin), protocol=pickle.HIGHEST_PROTOCOL))
    answers.flush()


def main() -> None:
    """The child: pickled (dataset, frame, plugin) requests on stdin, each after :data:`_MAGIC` and its length,
    one length-prefixed pickled answer each on stdout, until stdin closes; the previous release's one request (a
    bare pickle) is answered as it expects; exit status 2 for bytes that are neither."""
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever a decoder prints goes to stderr, not the answers
    while True:
        head = requests.read(len(_MAGIC) + _LENGTH.size)
        if not head:
            return
        if head.startswith(_PREVIOUS_RELEASE) and not head.startswith(_MAGIC):
            _answer_previous_release(head + requests.read(), answers)
            return
        if len(head) < len(_MAGIC) + _LENGTH.size or not head.startswith(_MAGIC):
            sys.stderr.write(
                f"radtrace.model.isolated_decode: not a request of this radtrace release ({head[: len(_MAGIC)]!r})\n"
            )
            sys.exit(2)
        (size,) = _LENGTH.unpack(head[len(_MAGIC) :])
        body = requests.read(size)
        if len(body) < size:
            return
        source, frame, plugin = pickle.loads(body)  # noqa: S301  (written by our parent)
        answer = pickle.dumps(_decode(source, frame, plugin), protocol=pickle.HIGHEST_PROTOCOL)
        answers.write(_LENGTH.pack(len(answer)) + answer)
        answers.flush()


if __name__ == "__main__":
    main()
