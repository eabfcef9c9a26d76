"""A batch of several studies is prepared on the reader's thread pool (model/reader.py ``prepare_each``). Whatever
is logged there, a library quoting the study it prepares, is redacted with the values the worker registered for
the batch (:func:`radtrace.logging.redacting`): contextvars do not reach a ThreadPoolExecutor's threads unless each
task runs in a copy of the submitting context.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from radtrace.config import load_settings
from radtrace.logging import redacting
from radtrace.model.reader import StudyReader

pytestmark = pytest.mark.unit

LIBRARY = "pydicom.injected"  # a library's logger: radtrace's own code does not write these lines
STUDIES = {  # one study's patient values each: name, ID, birth date, accession (canary letters)
    "a": ("GHKAFAM^GHKAGIV", "GHKAPID", "18730417", "GHKAACC"),
    "b": ("QRSBFAM^QRSBGIV", "QRSBPID", "18810923", "QRSBACC"),
}


def test_a_study_prepared_on_the_pool_is_logged_with_its_values_redacted(
    tmp_path: Path, captured_log: io.StringIO
) -> None:
    reader = StudyReader(load_settings(data_dir=tmp_path / "radtrace").model)
    threads: list[str] = []

    def prepare(images: Sequence[Any]) -> Any:  # a library logging while a study's pictures are prepared
        [study] = images
        threads.append(threading.current_thread().name)
        name, patient_id, born, accession = STUDIES[study]
        library = logging.getLogger(LIBRARY)
        library.warning("could not decode %s (%s, born %s) for %s", name, patient_id, born, accession)
        return "prepared"

    reader.prepare = prepare  # type: ignore[method-assign]
    try:
        with redacting(*STUDIES["a"], *STUDIES["b"]):  # as the worker's batched read registers every study's values
            outcomes = list(reader.prepare_each([["a"], ["b"]]))
    finally:
        reader.close()

    assert outcomes == ["prepared", "prepared"]
    assert all(name.startswith("radtrace-prepare") for name in threads), threads  # the pool's threads
    lines = [line for line in captured_log.getvalue().splitlines() if LIBRARY in line]
    assert len(lines) == 2
    for line in lines:
        assert "could not decode <redacted> (<redacted>, born <redacted>) for <redacted>" in line, line
    for values in STUDIES.values():
        for value in (*values[0].split("^"), *values[1:]):
            assert value not in captured_log.getvalue(), f"{value!r} reached the log"
