"""One reader of what an image's inversion step recorded against its polarity (model/polarity.py
``polarity_records``), for ``radtrace model read``, the drafts and the console alike.

``radtrace model read`` (model/presentation.py) and the drafts (reporting/sr.py) each read the step's keys on their
own before; model/ may not import reporting/, so the reader lives in model/. These tests hold the two to the same
answer on the steps the real chain records, in process and as JSON read back.
"""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
from pydicom.dataset import Dataset
from rich.console import Console

from radtrace.model.image import display_values
from radtrace.model.polarity import (
    POLARITY_CONTRADICTION,
    SUSPECTED_NEGATIVE,
    PolarityRecord,
    polarity_records,
)
from radtrace.model.presentation import reading_view
from radtrace.model.reading import Reading
from radtrace.reporting.sr import polarity_notes
from reporting_support import reading, shown, source_study

pytestmark = pytest.mark.unit

SOURCES = source_study()


def _steps(ds: Dataset, **header: str) -> list[dict[str, Any]]:
    changed = copy.deepcopy(ds)
    for keyword, value in header.items():
        setattr(changed, keyword, value)
    return display_values(changed)[1]


def _other(photometric: str) -> str:
    return "MONOCHROME2" if photometric == "MONOCHROME1" else "MONOCHROME1"


def _view(preparation: tuple[dict[str, Any], ...]) -> str:
    [image] = shown(SOURCES)
    read: Reading = reading(SOURCES, images=(image.model_copy(update={"preparation": preparation, "role": "frontal"}),))
    out = io.StringIO()
    Console(file=out, width=220, color_system=None, force_terminal=False).print(reading_view(read))
    return " ".join(out.getvalue().split())


@pytest.mark.parametrize("shape", [None, "IDENTITY", "INVERSE"])
@pytest.mark.parametrize("swapped", [False, True], ids=["as-made", "swapped"])
def test_model_read_and_the_drafts_find_the_same_things_in_the_steps_the_chain_records(
    swapped: bool, shape: str | None
) -> None:
    ds = SOURCES[0]
    header = {
        "PhotometricInterpretation": _other(ds.PhotometricInterpretation) if swapped else ds.PhotometricInterpretation
    }
    if shape:
        header["PresentationLUTShape"] = shape
    steps = _steps(ds, **header)
    [inversion] = [step for step in steps if step["step"] == "inversion"]
    records = polarity_records(steps)
    assert polarity_records(json.loads(json.dumps(steps))) == records  # the audit's JSON reads the same
    assert [record.kind for record in records] == [note.kind for note in polarity_notes(steps)]
    expected = [SUSPECTED_NEGATIVE] if swapped else []
    if "contradiction" in inversion:
        expected.append(POLARITY_CONTRADICTION)
    assert [record.kind for record in records] == expected
    view = _view(tuple(steps))
    assert ("probably inverted" in view) is swapped
    for record in records:
        assert record.recorded is not None
        assert f"frontal: {record.recorded}" in view  # model read says the step's own words
        assert record.photometric == inversion["photometric"]
    if swapped:
        check = inversion["polarity_check"]
        assert records[0] == PolarityRecord(
            SUSPECTED_NEGATIVE,
            inversion["suspected_inversion"],
            inversion["photometric"],
            inversion["presentation_lut_shape"],
            score=check["score"],
            mediastinum_over_lungs=check["mediastinum_over_lungs"],
            centre_over_border=check["centre_over_border"],
        )


def test_steps_that_are_not_what_the_chain_records_are_passed_over_by_model_read_too() -> None:
    """A preparation holding something other than a step (pydantic validates a reading read from JSON, but not one
    made with ``model_copy(update=...)``): ``radtrace model read``'s view failed on it (AttributeError: 'str'
    object has no attribute 'get'), the drafts passed it over; both read it alike now."""
    preparation: tuple[Any, ...] = ("not a step", None, {"step": "inversion", "suspected_inversion": "looks negative"})
    assert [record.kind for record in polarity_records(preparation)] == [SUSPECTED_NEGATIVE]
    view = _view(preparation)
    assert "probably inverted" in view
    assert "frontal: looks negative" in view


def test_measures_that_are_not_finite_numbers_and_header_values_that_are_not_code_strings_are_left_out() -> None:
    forged = {
        "step": "inversion",
        "photometric": "MONOCHROME1\r\n<script>",
        "presentation_lut_shape": "INVERSE",
        "polarity_check": {"verdict": "probably inverted", "score": "-0.9", "mediastinum_over_lungs": True,
                           "centre_over_border": float("nan")},
        "suspected_inversion": 7,
        "contradiction": "<b>x</b>",
    }  # fmt: skip
    negative, contradiction = polarity_records([forged])
    assert negative == PolarityRecord(SUSPECTED_NEGATIVE, None, None, "INVERSE")
    assert contradiction == PolarityRecord(POLARITY_CONTRADICTION, "<b>x</b>", None, "INVERSE")
    assert polarity_records([{"step": "voi"}, {"step": "inversion", "applied": False}]) == ()
