"""Compare a re-sent instance with the held copy in a child process: the listener itself never decodes pixel data.

:func:`radtrace.dicom_listener.resend.compare_files` decodes both files. A codec is C code fed by a peer: a
codestream that crashes it, a 49-megapixel JPEG 2000 within ``listener.max_image_pixels`` that takes seconds and a
GiB, must not take the listener (every peer's associations) with it. :func:`compare_in_child` runs the comparison
in ``python -m radtrace.dicom_listener.compare_child`` with an address-space limit (:func:`memory_limit`, from the
pixel budget), a lower CPU priority and a deadline; one such child at a time per listener process. A child that
dies, runs out of memory or time, or is not started because another comparison holds the slot past the deadline,
gives :attr:`~radtrace.dicom_listener.resend.Likeness.NOT_COMPARED`: the re-sent instance is a new version, as
before the comparison existed. Starting the child costs about 0.3 s of CPU (Python, numpy, pydicom).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Final

from radtrace.dicom_listener.resend import Comparison, Likeness, compare_files

__all__ = ["COMPARE_TIMEOUT_S", "compare_in_child", "memory_limit"]

#: The longest a comparison may take, waiting for the slot included (a PACS waits this long for its answer).
COMPARE_TIMEOUT_S: Final = 30.0
_BASE_MEMORY: Final = 768 << 20  # the interpreter with numpy, pydicom and the codecs loaded: about 210 MiB
_slot = threading.BoundedSemaphore(1)


def memory_limit(max_pixels: int) -> int:
    """The child's address-space limit: the base plus 16 bytes a pixel of the largest image allowed (two images
    decoded, a codec's 32-bit working copy, the cleared copy)."""
    return _BASE_MEMORY + 16 * max_pixels


def compare_in_child(
    held: Path, resent: Path, *, max_pixels: int, timeout_s: float = COMPARE_TIMEOUT_S, memory: int | None = None
) -> Comparison:
    """:func:`~radtrace.dicom_listener.resend.compare_files` in a child process; never raises."""
    started = time.monotonic()

    def not_compared(problem: str) -> Comparison:
        return Comparison(Likeness.NOT_COMPARED, "", "", problem=problem, seconds=time.monotonic() - started)

    if not _slot.acquire(timeout=timeout_s):
        return not_compared(f"another comparison held the slot for {timeout_s:g} s")
    try:
        command = [sys.executable, "-m", __name__, str(held), str(resent), str(memory or memory_limit(max_pixels))]
        left = max(timeout_s - (time.monotonic() - started), 0.1)
        # one BLAS thread: the address space the child starts with does not grow with the host's cores
        environment = os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, capture_output=True, timeout=left, check=False, env=environment)
    except subprocess.TimeoutExpired:  # run() has killed the child
        return not_compared(f"took longer than {timeout_s:g} s")
    except OSError as exc:
        return not_compared(f"could not start the comparing process ({exc.strerror or type(exc).__name__})")
    finally:
        _slot.release()
    if done.returncode != 0:
        ended = f"signal {-done.returncode}" if done.returncode < 0 else f"status {done.returncode}"
        return not_compared(f"the comparing process ended with {ended}")
    try:
        fields = json.loads(done.stdout)
        fields["likeness"] = Likeness(fields["likeness"])
        fields["changed_attributes"] = tuple(fields["changed_attributes"])
        fields["seconds"] = time.monotonic() - started
        return Comparison(**fields)
    except (ValueError, TypeError, KeyError):
        return not_compared("the comparing process answered something else")


def main(argv: list[str]) -> int:
    """The child: limit its own memory and priority, compare, print the comparison as JSON."""
    held, resent, limit = argv
    resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    os.nice(10)
    comparison = compare_files(Path(held), Path(resent))
    print(json.dumps(dataclasses.asdict(comparison)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
