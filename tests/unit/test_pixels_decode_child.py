"""JPEG Lossless and 12-bit JPEG Extended frames (GDCM alone reads them here) are decoded in a child process that
is kept for the next frame, not started again for each.

Before: every such frame started ``python -m radtrace.model.isolated_decode`` anew, its interpreter and imports
included: 0.5-1.2 s a frame on a loaded 2-core machine for films GDCM decodes in 0.005-0.3 s (the Fuji CR and
the NIH film re-encoded by dcmtk ``dcmcjpeg +e1``, the 3.6-megapixel NEMA RG1 film; notes/report-realinput.md),
and twice that for a multi-frame image whose first frame is blank. JPEG Lossless is the lossless syntax most PACS
send. What stays: a frame that aborts GDCM fails its study with the reason, and the next frame gets a new child.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLosslessSV1

from radtrace.config_sections import ModelSettings
from radtrace.errors import DicomInputError
from radtrace.model import isolated_decode
from radtrace.model.isolated_decode import close_idle_children, decode_in_child, idle_children, max_idle_children
from radtrace.model.reader import StudyReader
from radtrace.model.stored_pixels import decode_first_frame
from radtrace.testing.decode_abuse import NIH, REAL_FILMS, _nih_jpeg_lossless

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_waiting_children() -> Iterator[None]:
    """Each test starts with no child waiting (another test of this process may have left some)."""
    close_idle_children()
    yield
    close_idle_children()


@pytest.fixture(scope="module")
def nih_pixels() -> np.ndarray:
    return dcmread(REAL_FILMS / NIH).pixel_array


@pytest.fixture(scope="module")
def lossless() -> Dataset:
    """The NIH film in JPEG Lossless SV1 (GDCM's encoder)."""
    return _nih_jpeg_lossless(b"", b"")


def _decode(ds: Dataset) -> np.ndarray:
    pixels, _ = decode_in_child(ds, 0, "", str(JPEGLosslessSV1))
    return pixels


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_one_child_decodes_frame_after_frame(lossless: Dataset, nih_pixels: np.ndarray) -> None:
    assert np.array_equal(_decode(lossless), nih_pixels)
    [child] = idle_children()  # kept, waiting for the next frame
    assert np.array_equal(_decode(lossless), nih_pixels)
    pixels, steps = decode_first_frame(lossless)  # the worker's path
    assert np.array_equal(pixels, nih_pixels)
    assert steps[0]["transfer_syntax"] == JPEGLosslessSV1
    assert idle_children() == [child]


def test_an_abort_fails_its_frame_and_the_next_frame_gets_a_new_child(
    lossless: Dataset, nih_pixels: np.ndarray
) -> None:
    _decode(lossless)
    [before] = idle_children()
    damaged = _nih_jpeg_lossless(b"\xff\xc4", b"\xff\xff")  # its DHT marker lost: GDCM aborts the process
    with pytest.raises(DicomInputError, match=r"\(1\.2\.840\.10008\.1\.2\.4\.70\): the decoder aborted \(signal SIG"):
        _decode(damaged)
    assert np.array_equal(_decode(lossless), nih_pixels)
    [after] = idle_children()
    assert after != before  # the one that decoded the damaged frame has ended
    assert _gone(before)


def test_a_waiting_child_that_was_killed_is_replaced(lossless: Dataset, nih_pixels: np.ndarray) -> None:
    _decode(lossless)
    [waiting] = idle_children()
    os.kill(waiting, signal.SIGKILL)
    while Path(f"/proc/{waiting}/status").exists() and "zombie" not in Path(f"/proc/{waiting}/status").read_text():
        time.sleep(0.01)
    assert np.array_equal(_decode(lossless), nih_pixels)  # not failed: the frame went to a new child
    assert waiting not in idle_children()


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET / HTTP/1.1\r\n\r\n" + bytes(64), b"\x80\x05" + bytes(64)],
    ids=["not-a-pickle", "a-broken-bare-pickle"],
)
def test_a_child_refuses_what_is_not_a_request(request_bytes: bytes) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "radtrace.model.isolated_decode"],
        input=request_bytes,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"not a request of this radtrace release" in done.stderr


def test_a_child_answers_the_one_request_of_a_worker_started_before_kept_children(
    lossless: Dataset, nih_pixels: np.ndarray
) -> None:
    """A worker started from the release before (its code in memory) spawns this release's child from disk until it
    is restarted: its request is one bare pickle on stdin, its answer one bare pickle on stdout (that release's
    ``decode_in_child``). Before, the child refused it and each JPEG Lossless film that worker read failed."""
    done = subprocess.run(
        [sys.executable, "-m", "radtrace.model.isolated_decode"],
        input=pickle.dumps((lossless, 0, ""), protocol=pickle.HIGHEST_PROTOCOL),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-400:]
    answer = pickle.loads(done.stdout)  # noqa: S301  (our own child)
    assert answer[0] == "ok"
    assert np.array_equal(answer[1], nih_pixels)


@pytest.mark.parametrize("cores", [2, 16, 64])
def test_as_many_children_are_kept_as_the_worker_prepares_pictures_at_once(
    cores: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU node's worker prepares a batch's pictures on one thread a core (up to 16): with fewer children kept
    than threads, some were started again for every batch."""
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    reader = StudyReader(ModelSettings(batch_size=64))
    try:
        threads = reader._pool()._max_workers
    finally:
        reader.close()
    assert max_idle_children() == threads


def test_a_child_that_a_frame_left_large_is_not_kept(
    lossless: Dataset, nih_pixels: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame of tens of megapixels leaves its child holding hundreds of MB (293 MB after a 49-megapixel one):
    such a child ends instead of waiting, so a node's waiting children do not each hold their largest frame."""
    monkeypatch.setattr(isolated_decode, "MAX_IDLE_RSS_BYTES", 1 << 20)  # below any Python's resident memory
    assert np.array_equal(_decode(lossless), nih_pixels)
    assert idle_children() == []
    monkeypatch.setattr(isolated_decode, "MAX_IDLE_RSS_BYTES", 1 << 40)
    assert np.array_equal(_decode(lossless), nih_pixels)
    assert len(idle_children()) == 1


def test_a_frame_is_decoded_in_a_process_with_more_than_1024_files_open(
    lossless: Dataset, nih_pixels: np.ndarray
) -> None:
    """A worker that holds many files and sockets (systemd's LimitNOFILE is far above 1024) gets pipe descriptors
    above select()'s FD_SETSIZE: waiting on them must still work."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit on open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert np.array_equal(_decode(lossless), nih_pixels)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
