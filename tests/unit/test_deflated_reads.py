"""A deflated instance is parsed as it is inflated: its large private values are never held, its header and pixels
are what pydicom reads whole, and one inflating beyond the worker's bound is refused naming (0002,0010).

Input: the NIH real film saved Deflated Explicit VR Little Endian, as is and with a private OB of zeros (the
listener accepts it: it inflates under its limit), written by radtrace.testing.decode_abuse.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radtrace.config import load_settings
from radtrace.errors import DicomInputError
from radtrace.model.study import (
    Skipped,
    StudyImage,
    StudyInput,
    prepare_study,
    spooled_as_received,
    spooled_image,
    study_image,
)
from radtrace.testing.decode_abuse import NIH, REAL_FILMS, deflated_with_private_zeros

pytestmark = pytest.mark.unit

BUDGET = {"min_pixels": 128 * 128, "max_pixels": 476 * 476}
ZEROS = 64 << 20


def _film(tmp_path: Path, zero_bytes: int, *, sequence: bool = False) -> Path:
    ds = pydicom.dcmread(REAL_FILMS / NIH)
    if sequence:  # undefined lengths: pydicom rewinds while parsing them
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        ds.ReferencedImageSequence = Sequence([item])
        ds["ReferencedImageSequence"].is_undefined_length = True
        ds.ReferencedImageSequence[0].is_undefined_length_sequence_item = True
    return deflated_with_private_zeros(ds, tmp_path / f"deflated-{zero_bytes}.dcm", zero_bytes)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepared_peak(path: Path) -> tuple[StudyInput | Skipped, StudyImage, int]:
    """The worker's path (the spooled header, then the chosen view's whole instance) and Python's peak allocation."""
    tracemalloc.start()
    try:
        image = spooled_image(path, _digest(path))
        prepared = prepare_study([image], **BUDGET, accept_unknown_view=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return prepared, image, peak


def test_a_deflated_film_with_a_large_private_value_is_read_without_holding_it(tmp_path: Path) -> None:
    """pydicom inflated the whole data set in memory, for the header and again for the pixel data: a 1.0 MB film
    with 250 MiB of private zeros cost the worker 565 MB of RSS (measured in a fresh process). Here 64 MiB of
    zeros: the film costs what it costs without them (the 1-megapixel picture's preparation), within 8 MiB."""
    plain, _, plain_peak = _prepared_peak(_film(tmp_path, 0))
    prepared, image, peak = _prepared_peak(_film(tmp_path, ZEROS))
    assert peak < plain_peak + (8 << 20), (peak >> 20, plain_peak >> 20)
    assert isinstance(prepared, StudyInput)
    assert isinstance(plain, StudyInput)
    assert np.array_equal(prepared.pictures[0].pixels, plain.pictures[0].pixels)
    assert 0x00091011 not in image.dataset  # left out of the header, never read


def test_a_deflated_film_reads_as_pydicom_reads_it_whole(tmp_path: Path) -> None:
    """The streamed parse gives the elements pydicom's whole-inflating read gives, nested sequences of undefined
    length included; the pixel data is the same bytes."""
    path = _film(tmp_path, 3 << 20, sequence=True)
    expected = pydicom.dcmread(path)
    header = spooled_image(path, _digest(path))
    whole = header.whole() if header.whole is not None else header
    for image in (header, whole):
        for element in expected:
            if element.tag == 0x00091011:
                assert element.tag not in image.dataset  # over 1 MiB, not pixel data: left out
            elif element.tag.group == 0x7FE0 and image is header:
                assert image.dataset[element.tag].value in (b"", None)
            else:
                assert image.dataset[element.tag] == element, element.tag
    assert whole.dataset.ReferencedImageSequence[0].ReferencedSOPInstanceUID == expected.SOPInstanceUID
    assert np.array_equal(whole.dataset.pixel_array, expected.pixel_array)


def test_a_deflated_film_inflating_beyond_the_bound_is_refused_naming_the_transfer_syntax(tmp_path: Path) -> None:
    path = _film(tmp_path, 8 << 20)
    with pytest.raises(DicomInputError, match=r"\(0002,0010\) Transfer Syntax UID: deflated data set inflates beyond"):
        spooled_image(path, _digest(path), max_inflated_bytes=4 << 20)
    with pytest.raises(DicomInputError, match=r"\(0002,0010\)"):
        study_image(path.read_bytes(), max_inflated_bytes=4 << 20)


def test_a_deflated_film_whose_stream_is_not_deflate_is_refused(tmp_path: Path) -> None:
    path = _film(tmp_path, 0)
    data = bytearray(path.read_bytes())
    start = data.index(b"1.2.840.10008.1.2.1.99") + 24
    garbage = bytes(range(256)) * (len(data) // 256)
    data[start + 200 :] = garbage[: len(data) - start - 200]
    with pytest.raises(DicomInputError):
        study_image(bytes(data))


def test_a_deflated_film_cut_short_is_refused_naming_the_transfer_syntax(tmp_path: Path) -> None:
    """pydicom refused a cut deflate stream ('Error -5 while decompressing data'); the streamed parse must too,
    not read it as a short data set ('the number of bytes of pixel data is less than expected')."""
    path = _film(tmp_path, 0)
    data = path.read_bytes()
    with pytest.raises(
        DicomInputError, match=r"^\(0002,0010\) Transfer Syntax UID: the deflated data set is cut short"
    ):
        prepare_study([study_image(data[: len(data) // 2])], **BUDGET, accept_unknown_view=True)


def test_the_worker_reads_a_deflated_film_up_to_what_the_sites_listener_accepted(tmp_path: Path) -> None:
    """spooled_as_received bounds inflation by listener.max_image_pixels, as the listener does: before, the worker's
    bound was the default's (267,108,864 bytes) whatever the site set, so a site that raised max_image_pixels had the
    worker refuse deflated films its listener had stored."""
    path = _film(tmp_path, 280 << 20)  # 293,601,280 bytes of zeros: past the default bound, within 60 M pixels'
    default = load_settings(data_dir=tmp_path / "var").listener
    with pytest.raises(DicomInputError, match=r"\(0002,0010\) Transfer Syntax UID: deflated data set inflates beyond"):
        spooled_as_received(path, _digest(path), default)
    raised = default.model_copy(update={"max_image_pixels": 60_000_000})
    image = spooled_as_received(path, _digest(path), raised)
    assert image.dataset.PatientID == pydicom.dcmread(REAL_FILMS / NIH).PatientID
