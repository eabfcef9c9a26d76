"""Variants of the real films in tests/data/real-cxr, each with what radtrace must make of it.

A variant rewrites a film's pixels and header the way real senders encode the same picture differently
(MONOCHROME1 for MONOCHROME2 with the pixels inverted, a VOI LUT for the window, a rescale, signed values, bits
above Bits Stored, colour, frames, padding). Each says what is expected of the model's picture against the
film's own (:data:`SAME`: equal up to rounding; :data:`SAME_INSIDE`: equal outside a padded border, which is
black; :data:`ALIKE`: another contrast of the same film, correlated and the right way round; :data:`NEGATIVE`:
the film's negative, which the header does not say, flagged as a suspected negative), or the named
failure (a :class:`radtrace.errors.DicomInputError` whose reason holds the element's text).

``tests/unit/test_realinput_variants.py`` runs them (a sample in CI, all with ``RADTRACE_FULL_VARIANTS=1``);
``bench/film_variants.py`` times them. The film on disk is never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from film_support import ALIKE, BORDER, FILMS, NEGATIVE, REAL, SAME, SAME_INSIDE, Variant, film, read_back
from film_variants_layout import (
    bits_above_stored,
    bits_stored_over_allocated,
    burned_in_annotation,
    frames,
    icon_image,
    jpeg_2000_high_bits,
    jpeg_2000_signed,
    jpeg_baseline,
    jpeg_ls_signed,
    large_matrix,
    lossy_marked,
    odd_width,
    one_row,
    overlay_in_pixel_data,
    overlay_plane,
    packed_12_bit,
    padded_border,
    padded_range,
    rescale_slope_zero,
    rgb,
    rgb_negative,
    rgb_planar,
    rle_signed,
    signed,
    signed_high_bits,
    signed_modality_lut,
    signed_padding,
    signed_voi_lut,
    signed_windowed,
    sixteen_allocated,
    three_frames,
    truncated,
    ybr_full,
)
from film_variants_values import (
    big_endian_modality_lut,
    big_endian_voi_lut,
    inverted_by_negative_slope,
    linear_exact,
    modality_lut_as_un,
    modality_lut_sequence,
    modality_lut_unusable,
    modality_lut_without_data,
    monochrome_flipped,
    monochrome_mislabelled,
    rescaled,
    sigmoid,
    two_windows,
    voi_lut_8_bit,
    voi_lut_8_bit_packed,
    voi_lut_beside_window,
    voi_lut_depth_overstated,
    voi_lut_instead_of_window,
)
from radtrace.model.image_marks import BURNED_IN_ANNOTATION, LOSSY_COMPRESSION, WINDOW_NOT_APPLIED

__all__ = [
    "ALIKE",
    "BORDER",
    "FILMS",
    "MARKED",
    "NEGATIVE",
    "REAL",
    "SAME",
    "SAME_INSIDE",
    "VARIANTS",
    "Variant",
    "big_endian_modality_lut",
    "big_endian_voi_lut",
    "bits_above_stored",
    "bits_stored_over_allocated",
    "burned_in_annotation",
    "film",
    "frames",
    "icon_image",
    "inverted_by_negative_slope",
    "jpeg_2000_high_bits",
    "jpeg_2000_signed",
    "jpeg_baseline",
    "jpeg_ls_signed",
    "large_matrix",
    "linear_exact",
    "lossy_marked",
    "modality_lut_as_un",
    "modality_lut_sequence",
    "modality_lut_unusable",
    "modality_lut_without_data",
    "monochrome_flipped",
    "monochrome_mislabelled",
    "odd_width",
    "one_row",
    "overlay_in_pixel_data",
    "overlay_plane",
    "packed_12_bit",
    "padded_border",
    "padded_range",
    "read_back",
    "rescale_slope_zero",
    "rescaled",
    "rgb",
    "rgb_negative",
    "rgb_planar",
    "rle_signed",
    "sigmoid",
    "signed",
    "signed_high_bits",
    "signed_modality_lut",
    "signed_padding",
    "signed_voi_lut",
    "signed_windowed",
    "sixteen_allocated",
    "three_frames",
    "truncated",
    "two_windows",
    "voi_lut_8_bit",
    "voi_lut_8_bit_packed",
    "voi_lut_beside_window",
    "voi_lut_depth_overstated",
    "voi_lut_instead_of_window",
    "ybr_full",
]


#: The variants whose picture the draft must flag (beside what the film's own header says: the RG1 films are
#: lossy): :func:`radtrace.model.image_marks.image_marks`' flags.
MARKED: Final = {
    "burned_in_annotation": {BURNED_IN_ANNOTATION},
    "lossy_marked": {LOSSY_COMPRESSION},
    "jpeg_baseline": {LOSSY_COMPRESSION},
    "modality_lut_unusable": {WINDOW_NOT_APPLIED},
    "modality_lut_without_data": {WINDOW_NOT_APPLIED},
}


VARIANTS: Final[dict[str, Callable[[Dataset, NDArray[np.int64]], Variant]]] = {
    fn.__name__: fn
    for fn in (
        monochrome_flipped,
        monochrome_mislabelled,
        voi_lut_instead_of_window,
        voi_lut_beside_window,
        voi_lut_8_bit,
        voi_lut_8_bit_packed,
        voi_lut_depth_overstated,
        big_endian_voi_lut,
        big_endian_modality_lut,
        two_windows,
        sigmoid,
        linear_exact,
        rescaled,
        inverted_by_negative_slope,
        modality_lut_sequence,
        modality_lut_as_un,
        modality_lut_unusable,
        modality_lut_without_data,
        padded_border,
        padded_range,
        bits_above_stored,
        overlay_in_pixel_data,
        signed,
        signed_windowed,
        signed_voi_lut,
        signed_modality_lut,
        signed_padding,
        packed_12_bit,
        bits_stored_over_allocated,
        signed_high_bits,
        sixteen_allocated,
        rgb,
        rgb_planar,
        rgb_negative,
        ybr_full,
        frames,
        three_frames,
        odd_width,
        one_row,
        overlay_plane,
        icon_image,
        truncated,
        rescale_slope_zero,
        burned_in_annotation,
        lossy_marked,
        jpeg_baseline,
        rle_signed,
        jpeg_ls_signed,
        jpeg_2000_signed,
        jpeg_2000_high_bits,
        large_matrix,
    )
}
