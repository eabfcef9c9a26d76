"""Multi-frame DX: the first frame is read; where it holds one value (a dark or offset frame first), the first of
the next frames that shows something.

Before (found by the real-input exploration, notes/report-realinput.md) a two-frame film whose first frame was
dark failed its study ('every pixel holds the same value: the image shows nothing to read') although its second
frame was the film. An image whose frames all hold one value is still refused with that reason, and a first
frame that shows something is read whatever the others hold.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from radtrace.errors import DicomInputError
from radtrace.model.image import display_values
from radtrace.model.study import study_image
from tests_support import as_part10

pytestmark = pytest.mark.unit

FUJI = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"


def _frames(*frames: np.ndarray) -> Dataset:
    ds = study_image(FUJI.read_bytes()).dataset
    ds.PixelData = np.concatenate(frames).astype(ds.pixel_array.dtype).tobytes()
    ds.NumberOfFrames = len(frames)
    as_part10(ds)
    return ds


def _film() -> np.ndarray:
    return study_image(FUJI.read_bytes()).dataset.pixel_array


@pytest.mark.parametrize("compressed", [False, True], ids=["native", "jpeg-ls"])
def test_a_dark_first_frame_gives_way_to_the_film_in_the_next(tmp_path: Path, compressed: bool) -> None:
    film = _film()
    expected, _ = display_values(study_image(FUJI.read_bytes()).dataset)
    ds = _frames(np.zeros_like(film), film, film // 2)
    if compressed:
        ds.save_as(tmp_path / "native.dcm", enforce_file_format=True)
        subprocess.run(
            ["dcmcjpls", "+el", str(tmp_path / "native.dcm"), str(tmp_path / "jls.dcm")],
            check=True,
            capture_output=True,
        )
        ds = dcmread(tmp_path / "jls.dcm")
    shown, steps = display_values(ds)  # before: DicomInputError, every pixel holds the same value
    assert np.array_equal(shown, expected)
    assert (steps[0]["frame"], steps[0]["frames"], steps[0]["frames_passed_over"]) == (1, 3, 1)


def test_an_image_whose_frames_all_hold_one_value_is_still_refused() -> None:
    film = _film()
    with pytest.raises(DicomInputError, match="every pixel holds the same value"):
        display_values(_frames(np.zeros_like(film), np.full_like(film, 7)))


def test_a_first_frame_that_shows_something_is_read_whatever_the_others_hold() -> None:
    film = _film()
    shown, steps = display_values(_frames(film, np.zeros_like(film)))
    expected, _ = display_values(study_image(FUJI.read_bytes()).dataset)
    assert np.array_equal(shown, expected)
    assert steps[0]["frame"] == 0
    assert "frames_passed_over" not in steps[0]
