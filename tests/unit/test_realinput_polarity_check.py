"""A film whose Photometric Interpretation is wrong (MONOCHROME1 written over MONOCHROME2 pixels, or the reverse)
is flagged as probably inverted, not flipped (model/polarity.py).

Each real film is measured as stored and deliberately inverted (its Photometric Interpretation swapped, the pixels
untouched: what such a vendor sends). Before, both reached the model and the radiologist without a word: the
inversion step had no check. ``-s`` prints each film's scores (the margin from the threshold).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset

from radtrace.model.image import display_values
from radtrace.model.polarity import SCORE_MARGIN, polarity_plausibility
from radtrace.model.study import StudyImage, StudyInput, prepare_study
from radtrace.testing.ablation import load_film
from radtrace.testing.studies import VALID_VARIANTS, StudySpec, make_image

pytestmark = pytest.mark.unit

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FILMS = sorted(REAL.glob("*.dcm"))
#: The real films' smallest score is 0.185 (NEMA RG1); this leaves them a margin past SCORE_MARGIN.
REAL_FILM_MIN_SCORE = 0.15


def _film(path: Path) -> Dataset:
    with warnings.catch_warnings():  # the Fuji film's legacy header (a one-valued Pixel Aspect Ratio)
        warnings.simplefilter("ignore", UserWarning)
        [ds] = load_film(path)
        ds.pixel_array  # noqa: B018 - decoded here, under the filter
    return ds


def _swapped(ds: Dataset) -> Dataset:
    """The same pixels under the other Photometric Interpretation: the film a wrong header makes a negative."""
    wrong = copy.deepcopy(ds)
    wrong.PhotometricInterpretation = "MONOCHROME2" if ds.PhotometricInterpretation == "MONOCHROME1" else "MONOCHROME1"
    return wrong


def _inversion(ds: Dataset) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, steps = display_values(ds)
    [step] = [s for s in steps if s["step"] == "inversion"]
    return step


@pytest.mark.parametrize("path", FILMS, ids=[p.stem for p in FILMS])
def test_every_real_film_is_normal_as_stored_and_probably_inverted_with_its_interpretation_swapped(
    path: Path,
) -> None:
    film = _film(path)
    stored, swapped = _inversion(film), _inversion(_swapped(film))
    check, wrong = stored["polarity_check"], swapped["polarity_check"]
    print(f"{path.stem}: as stored {check}; swapped {wrong}")
    assert check["verdict"] == "normal"
    assert check["score"] >= REAL_FILM_MIN_SCORE
    assert "suspected_inversion" not in stored
    assert wrong["verdict"] == "probably inverted"
    assert wrong["score"] <= -REAL_FILM_MIN_SCORE
    assert swapped["applied"] is not stored["applied"]  # the header is still followed: flagged, not flipped
    photometric = swapped["photometric"]
    assert str(swapped["suspected_inversion"]).startswith("the picture looks like a negative")
    assert f"Photometric Interpretation {photometric} may be wrong" in str(swapped["suspected_inversion"])


def test_no_false_positive_on_the_factory_studies_and_each_swapped_one_is_flagged() -> None:
    verdicts: dict[str, list[str]] = {"stored": [], "swapped": []}
    for spec in VALID_VARIANTS.values():
        ds = make_image(StudySpec(), spec)
        verdicts["stored"].append(_inversion(ds)["polarity_check"]["verdict"])
        verdicts["swapped"].append(_inversion(_swapped(ds))["polarity_check"]["verdict"])
    print({kind: {v: found.count(v) for v in set(found)} for kind, found in verdicts.items()})
    assert verdicts["stored"] == ["normal"] * len(VALID_VARIANTS)
    assert verdicts["swapped"] == ["probably inverted"] * len(VALID_VARIANTS)


def test_the_flag_reaches_the_source_image_record_the_audit_keeps() -> None:
    film = _swapped(_film(REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"))
    prepared = prepare_study(
        [StudyImage(dataset=film, sha256="0" * 64)],
        min_pixels=128 * 128,
        max_pixels=256 * 256,
        accept_unknown_view=True,
    )
    assert isinstance(prepared, StudyInput)
    [source] = prepared.sources
    [inversion] = [step for step in source.preparation if step["step"] == "inversion"]
    assert inversion["polarity_check"]["verdict"] == "probably inverted"
    assert "suspected_inversion" in inversion


def test_padding_is_not_measured() -> None:
    """A padded frame (shown black whatever the polarity) must not make a negative look normal."""
    rng = np.random.default_rng(0)
    picture = np.full((200, 160), 0.8) + rng.normal(0, 0.01, (200, 160))  # a negative: white lungs ...
    picture[:, 68:92] = 0.2  # ... dark mediastinum
    padding = np.zeros(picture.shape, dtype=bool)
    padding[:, :30] = padding[:, -30:] = padding[:20] = padding[-20:] = True
    assert polarity_plausibility(np.where(padding, 0.0, picture), padding)["verdict"] == "probably inverted"
    # Measured with the padding as pixels, the black frame outweighs the rest: the reason it is left out.
    assert polarity_plausibility(np.where(padding, 0.0, picture))["score"] > -SCORE_MARGIN
    tiny = polarity_plausibility(np.zeros((8, 8)))
    assert tiny["verdict"] == "undecided"
