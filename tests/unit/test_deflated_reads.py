"""A deflated instance is parsed as it is inflated: its large private values are never held, its header and pixels
are what pydicom reads whole, and one inflating beyond the worker's bound is refused naming (0002,0010).

Input: the NIH real film saved Deflated Explicit VR Little Endian, as is and with a private OB of zeros (the
listener accepts it: it inflates under its limit), written by radtrace.testing.decode_abuse.
"""

from __future__ import annotations

import hashlib
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radtrace.config import load_settings
from radtrace.dicom_deflated import MAX_DEPTH, MAX_ELEMENTS, MAX_ITEMS, NestingLimitError, read_deflated
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
from radtrace.testing.deflate_abuse import VIEW_CODE, deflated_with, shape_film

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


# --- values and bombs inside sequences (radtrace.testing.deflate_abuse) ------------------------------------------


def _header_peak(path: Path) -> tuple[StudyImage, int]:
    tracemalloc.start()
    try:
        image = spooled_image(path, _digest(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return image, peak


@pytest.mark.parametrize("lengths", ["undefined", "defined"])
def test_a_huge_private_value_in_a_view_code_item_is_dropped_and_the_view_code_kept(
    tmp_path: Path, lengths: str
) -> None:
    """pydicom read a sequence of undefined length with every nested value whole: a View Code Sequence item carrying
    250 MiB of private zeros cost the worker +1,050 MB (bench/deflate_nested.py); of defined length, the whole
    sequence was left out as one large value, so the worker lost the view code. Here 64 MiB: the header costs what
    the film's without the zeros costs, within 8 MiB, the view code is read and the zeros are not."""
    shape = f"huge-in-item-{lengths}"
    _, plain_peak = _header_peak(shape_film(shape, 0, tmp_path / "plain.dcm"))
    image, peak = _header_peak(shape_film(shape, ZEROS, tmp_path / "zeros.dcm"))
    assert peak < plain_peak + (8 << 20), (peak >> 20, plain_peak >> 20)
    [item] = image.dataset.ViewCodeSequence
    assert (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) == VIEW_CODE
    assert 0x00091011 not in item
    assert item[0x00090010].value == "RADTRACE TEST"
    prepared = prepare_study([image], **BUDGET)  # the view code alone says frontal
    assert isinstance(prepared, StudyInput), prepared
    whole = study_image(shape_film(shape, 3 << 20, tmp_path / "whole.dcm").read_bytes())
    assert whole.dataset.ViewCodeSequence[0].CodeValue == VIEW_CODE[0]
    assert 0x00091011 not in whole.dataset.ViewCodeSequence[0]


@pytest.mark.parametrize(
    ("shape", "size", "reason"),
    [
        ("deep", MAX_DEPTH + 1, rf"sequences nested more than {MAX_DEPTH} deep, in \(0009,1012\)>\(0009,1012\)>"),
        ("deep", 5000, rf"sequences nested more than {MAX_DEPTH} deep"),  # was pydicom's RecursionError
        ("items-undefined", MAX_ITEMS + 1, rf"more than {MAX_ITEMS} sequence items in the data set, in \(0009,1012\)"),
        ("items-defined", MAX_ITEMS + 1, rf"more than {MAX_ITEMS} sequence items in the data set, in \(0009,1012\)"),
        ("elements-in-item", MAX_ELEMENTS, rf"more than {MAX_ELEMENTS} elements in the data set, in \(0009,1012\)"),
        ("cut-in-item", 0, r"the data set ends inside a sequence item, in \(0009,1012\)"),
    ],
)
def test_a_nesting_bomb_is_refused_naming_the_sequence(tmp_path: Path, shape: str, size: int, reason: str) -> None:
    """Sequences nested past MAX_DEPTH, items past MAX_ITEMS, elements past MAX_ELEMENTS, a data set ending inside an
    item: each refused naming the private sequence (0009,1012) and its tag path. Before, 200,000 empty items in a
    0.8 MB film cost the worker +311 MB and 9.5 s and were read; 64 nested sequences were read, 5,000 failed with
    'maximum recursion depth exceeded'; a data set ending in an item failed with 'No tag to read at file position'."""
    path = shape_film(shape, size, tmp_path / f"{shape}.dcm")
    with pytest.raises(
        NestingLimitError if "more than" in reason else DicomInputError, match=rf"^\(0009,1012\) private: {reason}"
    ):
        spooled_image(path, _digest(path))
    with pytest.raises(DicomInputError, match=rf"^\(0009,1012\) private: {reason}"):
        study_image(path.read_bytes())


def test_a_film_within_the_nesting_bounds_is_read(tmp_path: Path) -> None:
    """The bounds refuse only past them: MAX_DEPTH sequences deep and MAX_ITEMS items are read."""
    deep = shape_film("deep", MAX_DEPTH, tmp_path / "deep.dcm")
    level = spooled_image(deep, _digest(deep)).dataset
    for _ in range(MAX_DEPTH):
        [level] = level[0x00091012].value
    assert 0x00091012 not in level
    items = shape_film("items-undefined", MAX_ITEMS - 1, tmp_path / "items.dcm")
    image = spooled_image(items, _digest(items))
    assert len(image.dataset[0x00091012].value) == MAX_ITEMS - 1
    assert image.dataset.ViewCodeSequence[0].CodeValue == VIEW_CODE[0]


def test_nested_sequences_read_as_pydicom_reads_them_whole(tmp_path: Path) -> None:
    """Sequences of defined and undefined length, items of both, sequences in items, an item with its own Specific
    Character Set, and a private sequence sent as UN of undefined length (its items implicit VR, PS3.5 6.2.2): the
    streamed parse gives what pydicom's whole read gives."""
    ds = pydicom.dcmread(REAL_FILMS / NIH)
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "RPID2", "RADLEX", "XR chest PA"
    ds.ProcedureCodeSequence = Sequence([code])
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", "1.2.3.4"
    ds.ReferencedStudySequence = Sequence([study])
    ds["ReferencedStudySequence"].is_undefined_length = True
    study.is_undefined_length_sequence_item = True
    request = Dataset()
    request.SpecificCharacterSet = "ISO_IR 100"
    request.RequestedProcedureID = "RP\xe91"
    request.RequestedProcedurePriority = "STAT"
    request.ScheduledProtocolCodeSequence = Sequence([code])
    ds.RequestAttributesSequence = Sequence([request, Dataset()])
    implicit_item = struct.pack("<HHL", 0x0008, 0x0100, 8) + b"R-10214 " + struct.pack("<HHL", 0x0009, 0x0010, 14)
    un_sequence = (
        struct.pack("<HH", 0x0009, 0x0010) + b"LO" + struct.pack("<H", 14) + b"RADTRACE TEST "
        + struct.pack("<HH", 0x0009, 0x1013) + b"UN\0\0" + struct.pack("<L", 0xFFFFFFFF)
        + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + implicit_item[:16] + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    )  # fmt: skip
    path = deflated_with(ds, tmp_path / "nested.dcm", 0x00090010, iter([un_sequence]))
    expected = pydicom.dcmread(path)
    with path.open("rb") as handle:
        read = read_deflated(handle, keep_bulk=True, defer_bytes=1 << 20, max_inflated_bytes=1 << 30)
    assert sorted(read.keys()) == sorted(expected.keys())
    for element in expected:
        assert read[element.tag] == element, element.tag
    assert read.RequestAttributesSequence[0].RequestedProcedureID == "RP\xe91"
    assert read[0x00091013].VR == "SQ"
    assert read[0x00091013].value[0].CodeValue == "R-10214"


def test_a_value_of_undefined_length_that_is_not_a_sequence_is_skipped_to_its_delimiter(tmp_path: Path) -> None:
    """Only pixel data may have an undefined length besides a sequence: a private OB sent so (2 MiB, then its sequence
    delimiter) is inflated and dropped, not held (pydicom reads it whole), and the data set after it is read."""
    blob = (
        struct.pack("<HH", 0x0009, 0x0010) + b"LO" + struct.pack("<H", 14) + b"RADTRACE TEST "
        + struct.pack("<HH", 0x0009, 0x1014) + b"OB\0\0" + struct.pack("<L", 0xFFFFFFFF)
        + b"\x01" * (2 << 20) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    )  # fmt: skip
    path = deflated_with(pydicom.dcmread(REAL_FILMS / NIH), tmp_path / "undefined.dcm", 0x00090010, iter([blob]))
    image = study_image(path.read_bytes())
    expected = pydicom.dcmread(REAL_FILMS / NIH)
    assert 0x00091014 not in image.dataset
    assert image.dataset.PatientID == expected.PatientID
    assert image.dataset.PixelData == expected.PixelData


def test_a_deflated_film_cut_short_inside_a_sequence_item_is_refused_naming_the_transfer_syntax(tmp_path: Path) -> None:
    """The file ends in the middle of the deflate stream, inside the View Code Sequence item's private zeros (64 MiB
    of zeros deflate to about 64 KB, after a header of under 2 KB: byte 20,000 is among them)."""
    path = shape_film("huge-in-item-undefined", ZEROS, tmp_path / "whole.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:20_000])
    with pytest.raises(
        DicomInputError, match=r"^\(0002,0010\) Transfer Syntax UID: the deflated data set is cut short"
    ):
        spooled_image(cut, _digest(cut))
