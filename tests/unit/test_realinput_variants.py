"""The real films encoded the other ways senders encode them must give the model the film's own picture.

Each variant (tests/film_variants_support.py) rewrites a real film in tests/data/real-cxr: MONOCHROME1 for
MONOCHROME2 with the pixels inverted, a VOI LUT for the window, a rescale or Modality LUT, signed values, bits set
above Bits Stored, padding round the film, colour, several frames, an odd width, compressed signed values. The
picture radtrace makes of it is compared with the film's own: equal up to rounding, equal inside the padding
(shown black), or another contrast of the same film (correlated, the right way round); or the named refusal.

CI runs every variant on one of the three small films (a sample, deterministic); ``RADTRACE_FULL_VARIANTS=1``
runs every variant on every film, the 15-bit RG1 CR film and the 4,280 x 3,520 matrix included.

Found by this matrix (before the fixes, on the Fuji CR film): a signed film whose VOI LUT Descriptor's first
value mapped was negative, written US as its two's complement (64512 for -1024, as many writers send it), had
its LUT passed over as blank and was shown over its full range (mean difference 0.059 from the film); one whose
Modality LUT was written so was shown with the LUT dropped and its window clipping half the film (mean
difference 0.41, 108 gray levels); one whose Pixel Padding Value was written so had its padded border shown
white as anatomy and the film flagged as a suspected negative; a colour capture of the film's negative was not
checked for polarity at all; a VOI LUT given as OW in a big-endian file was read little endian (correlation 0.14);
a Modality LUT of 65,536 entries, which pydicom writes UN, was dropped (mean difference 0.25); an 8-bit VOI LUT
packed one entry a byte was read as 16-bit words (mean difference 0.35); a VOI LUT of 12-bit entries whose
descriptor says 16 bits showed the film in its darkest sixteenth, 16 gray levels (mean difference 0.43).
Later: a Modality LUT that could not be applied left its windows (in the LUT's units) on the rescaled values, 40-46
gray levels; a Rescale Slope of 0 was read as 1; short native pixel data was refused without naming (7FE0,0010);
and a lossy (JPEG Baseline, or Lossy Image Compression 01) or annotated film left no flag for the drafts.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from numpy.typing import NDArray

from film_variants_support import ALIKE, BORDER, MARKED, NEGATIVE, SAME, SAME_INSIDE, VARIANTS, film, read_back
from radtrace.errors import DicomInputError
from radtrace.model.image import display_values, prepare_picture
from radtrace.model.image_marks import image_marks

pytestmark = pytest.mark.unit

BUDGET = {"min_pixels": 128 * 128, "max_pixels": 476 * 476}
SMALL_FILMS = ("fuji", "canine", "nih")
FULL = os.environ.get("RADTRACE_FULL_VARIANTS") == "1"
_HEAVY = {"large_matrix"}  # seconds a film: in the full run only


def _cases() -> list[tuple[str, str]]:
    if FULL:
        return [(name, variant) for name in (*SMALL_FILMS, "rg1") for variant in VARIANTS]
    light = [variant for variant in VARIANTS if variant not in _HEAVY]
    return [(SMALL_FILMS[i % len(SMALL_FILMS)], variant) for i, variant in enumerate(light)]


def _verdict(steps: list[dict[str, object]]) -> object:
    inversion = next((step for step in steps if step["step"] == "inversion"), None)
    check = inversion.get("polarity_check") if inversion else None
    return check.get("verdict") if isinstance(check, dict) else None


def _resized(display: NDArray[np.float64], shape: tuple[int, ...]) -> NDArray[np.float64]:
    from PIL import Image

    picture = Image.fromarray(np.rint(display * 255).astype(np.uint8)).resize((shape[1], shape[0]))
    return np.asarray(picture, dtype=np.float64) / 255


@pytest.mark.parametrize(("name", "variant"), _cases())
def test_a_variant_of_a_real_film_gives_the_films_picture_or_a_named_refusal(name: str, variant: str) -> None:
    ds, stored = film(name)
    reference, reference_steps = display_values(film(name)[0])
    made = VARIANTS[variant](ds, stored)
    if made.expect.startswith("refused: "):
        with pytest.raises(DicomInputError) as refused:
            prepare_picture(read_back(made.dataset), **BUDGET)
        assert made.expect.removeprefix("refused: ") in refused.value.reason
        return
    shown, steps = display_values(read_back(made.dataset))
    picture = prepare_picture(read_back(made.dataset), **BUDGET)
    # lossy compression and burned-in text are recorded for the draft; a lossless syntax is not flagged
    flagged = {mark.flag for mark in image_marks(steps)}
    assert flagged == {mark.flag for mark in image_marks(reference_steps)} | MARKED.get(variant, set())
    assert len(np.unique(picture.pixels)) >= 64, "a few grays: clipped or flattened"
    if made.expect == NEGATIVE:  # shown as the header says, and flagged
        assert float(np.corrcoef(shown.ravel(), reference.ravel())[0, 1]) <= -0.99
        assert _verdict(steps) == "probably inverted"
        return
    assert _verdict(steps) == _verdict(reference_steps), "the variant's polarity is not the film's"
    if variant == "odd_width":
        reference = reference[:, : shown.shape[1]]
    if shown.shape != reference.shape:
        shown = _resized(shown, reference.shape)
    inside = np.ones(reference.shape, dtype=bool)
    if made.expect == SAME_INSIDE:
        inside[BORDER:-BORDER, BORDER:-BORDER] = False
        assert float(shown[inside].max()) == 0.0, "padding is not shown black"
        inside = ~inside
    difference = np.abs(shown - reference)[inside]
    correlation = float(np.corrcoef(shown[inside], reference[inside])[0, 1])
    if made.expect == SAME:
        assert float(difference.max()) <= 0.005
        assert float(difference.mean()) <= 0.003
    elif made.expect == SAME_INSIDE:  # with no window, the range of the image without its border
        assert correlation >= 0.999
        assert float(difference.mean()) <= 0.03
    else:
        assert made.expect == ALIKE
        assert correlation >= 0.99


@pytest.mark.parametrize("name", ["fuji", "canine"])
def test_a_negative_first_value_mapped_written_us_is_read_as_signed(name: str) -> None:
    for variant in ("signed_voi_lut", "signed_modality_lut"):
        ds, stored = film(name)
        half = 2 ** (int(ds.BitsStored) - 1)
        first = int(stored.min()) - half
        shown, steps = display_values(read_back(VARIANTS[variant](ds, stored).dataset))
        reference, _ = display_values(film(name)[0])
        assert float(np.abs(shown - reference).max()) <= 0.005, variant
        if variant == "signed_voi_lut":
            voi = next(step for step in steps if step["step"] == "voi")
            assert (voi["kind"], voi["first_mapped"], voi["first_mapped_written"]) == ("lut", first, 65536 + first)
        else:
            modality = next(step for step in steps if step["step"] == "modality_lut")
            assert (modality["kind"], modality["first_mapped_as_signed"]) == ("lut", -half)


@pytest.mark.parametrize("name", ["fuji", "canine"])
def test_a_signed_films_negative_padding_written_us_is_padding_shown_black(name: str) -> None:
    ds, stored = film(name)
    shown, steps = display_values(read_back(VARIANTS["signed_padding"](ds, stored).dataset))
    padding = next(step for step in steps if step["step"] == "padding")
    assert padding["range"] == [-(2 ** (int(ds.BitsStored) - 1))] * 2  # the film's own Bits Stored
    assert padding["share"] > 0.05
    assert float(shown[:BORDER].max()) == 0.0
    assert _verdict(steps) == "normal"


@pytest.mark.parametrize(
    "variant",
    [
        "big_endian_voi_lut",
        "big_endian_modality_lut",
        "modality_lut_as_un",
        "voi_lut_8_bit_packed",
        "voi_lut_depth_overstated",
    ],
)
def test_lut_data_is_read_as_the_file_holds_it(variant: str) -> None:
    """OW words in a big-endian file are big endian; a LUT too long for US arrives UN (bytes): before, the Fuji
    film's big-endian VOI LUT was read little endian (correlation 0.14 with the film) and its UN Modality LUT was
    dropped, its window then clipping half the film (mean difference 0.25, 111 gray levels); an 8-bit VOI LUT
    packed one entry a byte was read as words (mean difference 0.35; the canine film's correlation -0.69); a VOI LUT
    of 12-bit entries whose descriptor says 16 bits showed the film in 16 grays (mean difference 0.43)."""
    ds, stored = film("fuji")
    made = VARIANTS[variant](ds, stored)
    shown, steps = display_values(read_back(made.dataset))
    reference, _ = display_values(film("fuji")[0])
    assert float(np.abs(shown - reference).max()) <= 0.005
    kinds = {step["step"]: step.get("kind") for step in steps}
    assert kinds["modality_lut" if "modality" in variant else "voi"] == "lut"
