"""A source's headers that make a "library" talk inside a draft process (radtrace.worker.drafting).

A monkeypatch in the test process does not reach a spawned draft process; a pickled object does. These headers,
unpickled there, log the patient's values as free text (no keyword beside them, so only the values registered
with :func:`radtrace.logging.redacting` can catch them) when the drafts read the Patient's Name, as a library
quoting the data set in hand would.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from typing import Any

from pydicom.dataset import Dataset

# A library's logger: radtrace's own code does not write these lines. highdicom's, because highdicom (like hl7apy)
# gives its loggers no handler: unconfigured, Python writes their warnings to stderr as they are (pydicom's have a
# NullHandler, so there they were dropped).
LIBRARY = "highdicom.injected"


class TalkativeHeaders(Dataset):
    """A :class:`Dataset` that, read in a child process, has a library log its patient's values."""

    def get(self, key: Any, default: Any = None) -> Any:
        if key == "PatientName" and multiprocessing.parent_process() is not None:
            logging.getLogger(LIBRARY).warning(
                "drafting in process %d: could not match %s (%s, born %s) to order %s",
                os.getpid(),
                str(super().get("PatientName")),
                str(super().get("PatientID")),
                str(super().get("PatientBirthDate")),
                str(super().get("AccessionNumber")),
            )
        return super().get(key, default)


def talkative(ds: Dataset) -> Dataset:
    """``ds`` itself, made a :class:`TalkativeHeaders` (same elements, meta and encoding)."""
    ds.__class__ = TalkativeHeaders
    return ds
