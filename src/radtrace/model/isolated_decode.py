"""Decoding a frame in a child process, for the transfer syntaxes only GDCM reads here.

GDCM asserts what it expects of a codestream by throwing C++ exceptions its Python binding does not catch: the
process that decodes ends (std::terminate, SIGABRT). JPEG 2000, JPEG-LS and 8-bit JPEG have other decoders
(:func:`radtrace.model.stored_pixels.decode_first_frame` uses those); JPEG Lossless (Process 14) and 12-bit JPEG
Extended have none here (pylibjpeg-libjpeg is GPL), and a JPEG Lossless scan with a few bytes wrong before its
SOS marker ended the worker, its batch and, redelivered, the next worker. Such a frame is decoded here, in a
child process (``python -m radtrace.model.isolated_decode``): the dataset goes in on stdin and the pixels come
back on stdout (pickle, between this process and its own child only); an abort is a refusal with a reason. The
child inherits the worker's address-space ceiling (``model.worker_memory_limit_bytes``).
"""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
import warnings
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from radtrace.errors import DicomInputError

__all__ = ["DECODE_TIMEOUT_S", "decode_in_child"]

#: Longest a child may take for one frame (GDCM reads a 50-megapixel JPEG Lossless frame in a few seconds).
DECODE_TIMEOUT_S: Final = 300.0


def decode_in_child(source: Dataset, frame: int, plugin: str, syntax: str) -> tuple[NDArray[Any], list[str]]:
    """The frame's pixels as pydicom's ``pixel_array`` gives them (``plugin``: "" for pydicom's search) and the
    decoder's warnings, decoded in a child process.

    Raises:
        DicomInputError: the decoder refused the frame, aborted, or did not finish in :data:`DECODE_TIMEOUT_S`.
    """
    request = pickle.dumps((source, frame, plugin), protocol=pickle.HIGHEST_PROTOCOL)
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__],
            input=request,
            capture_output=True,
            timeout=DECODE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DicomInputError(
            f"cannot decode the pixel data ({syntax}): the decoder did not finish in {DECODE_TIMEOUT_S:.0f} s"
        ) from exc
    if done.returncode != 0 or not done.stdout:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        how = f"signal {signal.Signals(-done.returncode).name}" if done.returncode < 0 else f"status {done.returncode}"
        last = f": {said[-1][:200]}" if said else ""
        raise DicomInputError(f"cannot decode the pixel data ({syntax}): the decoder aborted ({how}){last}")
    answer = pickle.loads(done.stdout)  # noqa: S301  (written by our own child)
    if answer[0] != "ok":
        raise DicomInputError(f"cannot decode the pixel data ({syntax}): {answer[1]}")
    return answer[1], answer[2]


def main() -> None:
    """The child: a pickled (dataset, frame, plugin) on stdin, a pickled answer on stdout."""
    from pydicom.pixels.utils import pixel_array

    from radtrace.decoders import PLUGIN, register

    source, frame, plugin = pickle.loads(sys.stdin.buffer.read())  # noqa: S301  (written by our parent)
    if plugin == PLUGIN:
        register()
    answer: tuple[Any, ...]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            pixels = pixel_array(source, index=frame, allow_excess_frames=False, decoding_plugin=plugin)
        except Exception as exc:  # decoders raise anything from RuntimeError to their own types
            answer = ("error", str(exc))
        else:
            answer = ("ok", np.ascontiguousarray(pixels), [str(w.message)[:200] for w in caught[:4]])
    sys.stdout.buffer.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
