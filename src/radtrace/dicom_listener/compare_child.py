"""Compare a re-sent instance with the held copy in a child process: the listener itself never decodes pixel data.

:func:`radtrace.dicom_listener.resend.compare_files` decodes both files. A codec is C code fed by a peer: a
codestream that crashes it, a 49-megapixel JPEG 2000 within ``listener.max_image_pixels`` that takes seconds and a
GiB, must not take the listener (every peer's associations) with it. :func:`compare_in_child` runs the comparison
in ``python -m radtrace.dicom_listener.compare_child`` with an address-space limit (:func:`memory_limit`, from the
pixel budget), a lower CPU priority and a deadline; one such child at a time per listener process. A child that
dies, runs out of memory or time, or is not started because another comparison holds the slot past the deadline,
gives :attr:`~radtrace.dicom_listener.resend.Likeness.NOT_COMPARED`: the re-sent instance is a new version, as
before the comparison existed. Starting the child costs about 0.3 s of CPU (Python, numpy, pydicom).

:func:`compare_versions_in_child` compares the re-sent instance with several held versions, newest first, at most
:data:`MAX_COMPARED_VERSIONS`, in one child under the same limits and deadline: the re-sent file is decoded once,
each held version in turn (two images at a time), and the child stops at the first version whose content it is.
A PACS that re-sends version 1's content (an old copy from another archive node) after a corrected version 2 is
then acknowledged as a duplicate of version 1, not kept as a version 3 that brings the old content back. The child
writes each comparison as it ends: one that dies on a later version keeps the verdicts on the earlier ones.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from radtrace.dicom_listener.resend import Comparison, Likeness, compare, read_content

__all__ = [
    "COMPARE_TIMEOUT_S",
    "MAX_COMPARED_VERSIONS",
    "VersionsCompared",
    "compare_in_child",
    "compare_versions_in_child",
    "memory_limit",
]

#: The longest a comparison may take, waiting for the slot included (a PACS waits this long for its answer).
COMPARE_TIMEOUT_S: Final = 30.0
#: The most held versions a re-sent instance is compared with (newest first); older ones are not looked at.
MAX_COMPARED_VERSIONS: Final = 4
_BASE_MEMORY: Final = 768 << 20  # the interpreter with numpy, pydicom and the codecs loaded: about 210 MiB
_slot = threading.BoundedSemaphore(1)


def memory_limit(max_pixels: int) -> int:
    """The child's address-space limit: the base plus 16 bytes a pixel of the largest image allowed (two images
    decoded, a codec's 32-bit working copy, the cleared copy)."""
    return _BASE_MEMORY + 16 * max_pixels


@dataclasses.dataclass(frozen=True)
class VersionsCompared:
    """A re-sent instance compared with held versions, newest first, up to the first whose content it is."""

    comparisons: tuple[tuple[int, Comparison], ...]
    """``(version, comparison)`` in the order compared; the last is the match, if any."""
    held: int
    """How many versions are held under the SOP Instance UID (more than were compared past the bound)."""
    seconds: float = 0.0
    """The whole comparison, starting the child and waiting for the slot included."""

    @property
    def match(self) -> tuple[int, Comparison] | None:
        """The version whose content the re-sent instance is (same content, or a lossy copy), if one was found."""
        return next(((v, c) for v, c in self.comparisons if c.duplicate), None)

    @property
    def comparison(self) -> Comparison:
        """The comparison that decides: with the matched version, else with the latest (the changes are its)."""
        found = self.match
        return found[1] if found is not None else self.comparisons[0][1]

    def payload(self) -> dict[str, object]:
        """The audit payload's fields: the deciding comparison's, the versions compared, and which one matched."""
        body: dict[str, object] = dict(self.comparison.payload())
        body["compare_ms"] = round(self.seconds * 1000, 1)
        body["compared_versions"] = [version for version, _ in self.comparisons]
        found = self.match
        latest = self.comparisons[0][0]
        if found is not None:
            body["matched_version"] = found[0]
            if found[0] != latest:
                body["content_reason"] = (
                    f"{found[1].reason()}; the content of version {found[0]}, not of the latest, version {latest}:"
                    " the latest is kept"
                )
        elif self.held > len(self.comparisons):
            body["content_reason"] = (
                f"{body['content_reason']} (compared with the latest {len(self.comparisons)} of {self.held} versions)"
            )
        return body


def compare_in_child(
    held: Path, resent: Path, *, max_pixels: int, timeout_s: float = COMPARE_TIMEOUT_S, memory: int | None = None
) -> Comparison:
    """:func:`~radtrace.dicom_listener.resend.compare_files` in a child process; never raises."""
    compared = compare_versions_in_child([(1, held)], resent, max_pixels=max_pixels, timeout_s=timeout_s, memory=memory)
    return dataclasses.replace(compared.comparison, seconds=compared.seconds)


def compare_versions_in_child(
    held: Sequence[tuple[int, Path]],
    resent: Path,
    *,
    max_pixels: int,
    timeout_s: float = COMPARE_TIMEOUT_S,
    memory: int | None = None,
) -> VersionsCompared:
    """Compare ``resent`` with the ``held`` versions (``(version, path)``, newest first; at most
    :data:`MAX_COMPARED_VERSIONS` of them) in one child process; never raises.

    Each version the child did not answer for (it died, ran out of memory or time) is
    :attr:`~radtrace.dicom_listener.resend.Likeness.NOT_COMPARED` with the reason; the comparisons it finished
    before stand.
    """
    started = time.monotonic()
    versions = list(held)[:MAX_COMPARED_VERSIONS]

    def outcome(answered: list[Comparison], problem: str | None) -> VersionsCompared:
        comparisons = [(version, comparison) for (version, _), comparison in zip(versions, answered, strict=False)]
        if problem is not None and len(answered) < len(versions) and not any(c.duplicate for c in answered):
            # the version it was comparing with when it stopped (the first, where it answered nothing)
            seconds = time.monotonic() - started
            failed = Comparison(Likeness.NOT_COMPARED, "", "", problem=problem, seconds=seconds)
            comparisons.append((versions[len(answered)][0], failed))
        return VersionsCompared(tuple(comparisons), len(held), time.monotonic() - started)

    if not versions:
        raise ValueError("no held version to compare with")
    if not _slot.acquire(timeout=timeout_s):
        return outcome([], f"another comparison held the slot for {timeout_s:g} s")
    answered: list[Comparison] = []
    try:
        limit = str(memory or memory_limit(max_pixels))
        command = [sys.executable, "-m", __name__, str(resent), limit, *(str(path) for _, path in versions)]
        left = max(timeout_s - (time.monotonic() - started), 0.1)
        # one BLAS thread: the address space the child starts with does not grow with the host's cores
        environment = os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        try:
            done = subprocess.run(command, capture_output=True, timeout=left, check=False, env=environment)
        except subprocess.TimeoutExpired as exc:  # run() has killed the child; what it wrote before stands
            answered = _answers(exc.stdout)
            return outcome(answered, f"took longer than {timeout_s:g} s")
    except OSError as exc:
        return outcome([], f"could not start the comparing process ({exc.strerror or type(exc).__name__})")
    finally:
        _slot.release()
    answered = _answers(done.stdout)
    if done.returncode != 0:
        ended = f"signal {-done.returncode}" if done.returncode < 0 else f"status {done.returncode}"
        return outcome(answered, f"the comparing process ended with {ended}")
    if len(answered) < len(versions) and not any(c.duplicate for c in answered):
        return outcome(answered, "the comparing process answered something else")
    return outcome(answered, None)


def _answers(stdout: bytes | str | None) -> list[Comparison]:
    """The comparisons the child wrote, one JSON line each, up to the first line that is not one."""
    text = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout or ""
    answered: list[Comparison] = []
    for line in text.splitlines():
        try:
            fields = json.loads(line)
            fields["likeness"] = Likeness(fields["likeness"])
            fields["changed_attributes"] = tuple(fields["changed_attributes"])
            answered.append(Comparison(**fields))
        except (ValueError, TypeError, KeyError):
            break
    return answered


def main(argv: list[str]) -> int:
    """The child: limit its own memory and priority; compare the re-sent file with each held one in turn, newest
    first, writing each comparison as one JSON line, until one is a duplicate."""
    resent, limit, *held = argv
    resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    os.nice(10)
    started = time.perf_counter()
    sent = read_content(Path(resent))
    for path in held:
        kept = read_content(Path(path))
        comparison = compare(kept, sent)
        del kept  # two images at a time: the next held version is decoded without this one
        comparison = dataclasses.replace(comparison, seconds=time.perf_counter() - started)
        print(json.dumps(dataclasses.asdict(comparison)), flush=True)
        if comparison.duplicate:
            break
        started = time.perf_counter()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
