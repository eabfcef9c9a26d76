"""Hostile sequences in a data set that is not deflated (Explicit and Implicit VR Little Endian, Explicit VR Big
Endian) are bounded as the deflated ones are (radtrace.dicom_deflated.read_bounded, one parser for every syntax).

Before, the listener's header read and the worker's spooled read gave these to pydicom's dcmread(defer_size=...),
which holds a sequence of undefined length with its every item and nested value: the plain NIH film with 200,000
empty items cost the listener +138 MB and 17 s and the worker +314 MB and 19 s per receive, and was accepted; a View
Code Sequence item carrying a private OB of zeros was held whole (bench/deflate_nested.py --syntax explicit).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from radtrace.dicom_deflated import MAX_DEPTH, MAX_ELEMENTS, MAX_ITEMS, read_bounded
from radtrace.dicom_listener import headers
from radtrace.dicom_listener.headers import read_header, refused_identity
from radtrace.dicom_listener.pixel_budget import check_file
from radtrace.errors import DicomInputError
from radtrace.model.study import is_bulk, spooled_image, study_image
from radtrace.testing.decode_abuse import NIH, REAL_FILMS
from radtrace.testing.deflate_abuse import VIEW_CODE, shape_film

pytestmark = pytest.mark.unit

SYNTAXES = ("explicit", "implicit")
#: the sequence the bombs are written in: private in explicit VR, Referenced Image Sequence in implicit VR
SEQUENCE = {"explicit": "(0009,1012) private", "implicit": "(0008,1140) Referenced Image Sequence"}
BOMBS = {
    "items-undefined": (MAX_ITEMS + 1, f"more than {MAX_ITEMS} sequence items in the data set"),
    "items-defined": (MAX_ITEMS + 1, f"more than {MAX_ITEMS} sequence items in the data set"),
    "elements-in-item": (MAX_ELEMENTS + 1, f"more than {MAX_ELEMENTS} elements in the data set"),
    "deep": (MAX_DEPTH + 1, f"sequences nested more than {MAX_DEPTH} deep"),
    "cut-in-item": (0, "the data set ends inside a sequence item"),
}


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("shape", sorted(BOMBS))
def test_a_sequence_bomb_in_a_plain_file_is_refused_by_the_listener_and_the_worker_naming_the_sequence(
    tmp_path: Path, syntax: str, shape: str
) -> None:
    size, says = BOMBS[shape]
    path = shape_film(shape, size, tmp_path / "bomb.dcm", syntax=syntax)
    expected = "^" + re.escape(f"{SEQUENCE[syntax]}: {says}, in (")
    with pytest.raises(DicomInputError, match=expected):
        read_header(path)
    with pytest.raises(DicomInputError, match=expected):
        spooled_image(path, "0" * 64)
    with pytest.raises(DicomInputError, match=expected):
        study_image(path.read_bytes())


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("lengths", ["undefined", "defined"])
def test_a_large_private_value_in_a_plain_file_s_sequence_item_is_dropped_and_the_item_kept(
    tmp_path: Path, syntax: str, lengths: str
) -> None:
    """The View Code Sequence item keeps its code; its 24 MiB private OB is not held (pydicom held it whole)."""
    path = shape_film(f"huge-in-item-{lengths}", 24 << 20, tmp_path / "huge.dcm", syntax=syntax)
    plain = shape_film(f"huge-in-item-{lengths}", 2, tmp_path / "plain.dcm", syntax=syntax)
    peaks = []
    for film in (plain, path):
        tracemalloc.start()
        try:
            header = read_header(film)
            check_file(film, 50_000_000)
            image = spooled_image(film, "0" * 64)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        peaks.append(peak)
        [item] = image.dataset.ViewCodeSequence
        assert (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) == VIEW_CODE
        assert header.study_uid
    assert peaks[1] < peaks[0] + (4 << 20), [p >> 20 for p in peaks]
    assert 0x00091011 not in image.dataset.ViewCodeSequence[0]  # dropped, not held
    whole = study_image(path.read_bytes())  # the chosen view's whole read: pixels, the item's value dropped too
    assert whole.dataset.ViewCodeSequence[0].CodeValue == VIEW_CODE[0]
    assert 0x00091011 not in whole.dataset.ViewCodeSequence[0]


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_within_the_bounds_a_plain_file_s_sequences_read_as_pydicom_reads_them(tmp_path: Path, syntax: str) -> None:
    path = shape_film("items-undefined", MAX_ITEMS - 10, tmp_path / "many.dcm", syntax=syntax)
    deep = shape_film("deep", MAX_DEPTH - 1, tmp_path / "deep.dcm", syntax=syntax)
    for film in (path, deep):
        expected = pydicom.dcmread(film)
        with film.open("rb") as handle:
            read = read_bounded(handle, keep_bulk=True, defer_bytes=1 << 20, max_inflated_bytes=1 << 30)
        assert read == expected
        assert read.original_encoding == expected.original_encoding
        assert read_header(film).study_uid == expected.StudyInstanceUID


def _big_endian(source: Path, target: Path) -> Path:
    """``source`` as Explicit VR Big Endian, converted by dcmtk's dcmconv (not by the code under test)."""
    done = subprocess.run(["dcmconv", "+te", "+tb", str(source), str(target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert pydicom.dcmread(target, stop_before_pixels=True).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    return target


def _real_films(tmp_path: Path) -> list[Path]:
    """The real films (implicit VR, explicit VR, JPEG 2000, JPEG-LS, legacy without File Meta), and the NIH and
    canine films converted to Explicit VR Big Endian."""
    films = sorted(REAL_FILMS.glob("*.dcm"))
    assert len(films) == 5
    if shutil.which("dcmconv") is None:
        pytest.fail("dcmtk's dcmconv is needed for the big endian films")
    canine = REAL_FILMS / "canine-dx-thorax-lateral-mono1-small.dcm"
    big = [_big_endian(REAL_FILMS / NIH, tmp_path / "nih-be.dcm"), _big_endian(canine, tmp_path / "canine-be.dcm")]
    return films + big


def test_every_real_film_reads_exactly_as_pydicom_reads_it_whole(tmp_path: Path) -> None:
    """Worker: the whole read equals pydicom's (attributes, encoding, pixels) and the spooled header holds every
    attribute but the pixel data as pydicom reads it; listener: the same ReceivedHeader as from pydicom's read."""
    for film in _real_films(tmp_path):
        legacy = "no-filemeta" in film.name
        expected = pydicom.dcmread(film, force=legacy)
        image = study_image(film.read_bytes())
        assert image.dataset == expected, film.name
        assert image.dataset.original_encoding == expected.original_encoding, film.name
        if legacy:  # what study_image says of a bare data set (pydicom found implicit VR little endian)
            assert image.dataset.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
            expected.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        assert np.array_equal(image.dataset.pixel_array, expected.pixel_array), film.name
        if legacy:  # the listener and the spool only hold Part 10 files: refused as before
            with pytest.raises(DicomInputError, match="not a readable DICOM file"):
                spooled_image(film, "0" * 64)
            continue
        header = spooled_image(film, "0" * 64).dataset
        assert [e.tag for e in header] == [e.tag for e in expected], film.name
        assert all(header[e.tag] == e for e in expected if not is_bulk(e.tag)), film.name
        assert header.file_meta == expected.file_meta, film.name


def test_every_real_part_10_film_has_the_listener_header_pydicom_s_read_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    films = [f for f in _real_films(tmp_path) if "no-filemeta" not in f.name]
    now = [read_header(film) for film in films]
    monkeypatch.setattr(
        headers, "read_bounded", lambda handle, **_: pydicom.dcmread(handle.name, defer_size=headers._DEFER_BYTES)
    )
    assert now == [read_header(film) for film in films]


def _big_endian_bomb(tmp_path: Path, items: int) -> Path:
    """The canine film with a Referenced Image Sequence of ``items`` empty items, saved Explicit VR Big Endian."""
    ds = pydicom.dcmread(REAL_FILMS / "canine-dx-thorax-lateral-mono1-small.dcm")
    ds.ReferencedImageSequence = Sequence([Dataset() for _ in range(items)])
    little = tmp_path / f"little-{items}.dcm"
    ds.save_as(little, enforce_file_format=True)
    return _big_endian(little, tmp_path / f"big-{items}.dcm")


def test_a_sequence_bomb_in_a_big_endian_file_is_refused_and_within_the_bounds_read(tmp_path: Path) -> None:
    bomb = _big_endian_bomb(tmp_path, MAX_ITEMS + 1)
    expected = rf"^\(0008,1140\) Referenced Image Sequence: more than {MAX_ITEMS} sequence items"
    with pytest.raises(DicomInputError, match=expected):
        read_header(bomb)
    with pytest.raises(DicomInputError, match=expected):
        spooled_image(bomb, "0" * 64)
    within = _big_endian_bomb(tmp_path, 50)
    assert len(spooled_image(within, "0" * 64).dataset.ReferencedImageSequence) == 50
    assert study_image(within.read_bytes()).dataset == pydicom.dcmread(within)


def test_a_refused_film_names_its_study_when_its_study_instance_uid_came_before_the_bad_sequence(
    tmp_path: Path,
) -> None:
    """The bomb in Request Attributes Sequence (0040,0275), after (0020,000D): the refusal's audit names the study;
    one before it (a private sequence in group 0009) names none, as a file that cannot be parsed."""
    ds = pydicom.dcmread(REAL_FILMS / NIH)
    ds.AccessionNumber = "ACC-BOMB"
    ds.RequestAttributesSequence = Sequence([Dataset() for _ in range(MAX_ITEMS + 1)])
    after = tmp_path / "after.dcm"
    ds.save_as(after, enforce_file_format=True)
    with pytest.raises(DicomInputError, match=r"^\(0040,0275\) Request Attributes Sequence: more than"):
        read_header(after)
    identity = refused_identity(after)
    assert (identity.study_uid, identity.accession, identity.patient_id) == (ds.StudyInstanceUID, "ACC-BOMB", "1")
    before = shape_film("items-undefined", MAX_ITEMS + 1, tmp_path / "before.dcm", syntax="explicit")
    assert refused_identity(before).study_uid is None


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_the_worker_s_whole_read_of_a_chosen_view_holds_its_pixels_not_its_file(tmp_path: Path, syntax: str) -> None:
    """A stored film (within the listener's bounds) with 48 MiB of private zeros in its View Code item: the chosen
    view's whole read hashed the file's bytes read whole, then gave them to pydicom, which held the item's value too;
    now the file is hashed streamed and parsed in place, at the cost of the film without the zeros."""
    plain = shape_film("huge-in-item-undefined", 2, tmp_path / "plain.dcm", syntax=syntax)
    huge = shape_film("huge-in-item-undefined", 48 << 20, tmp_path / "huge.dcm", syntax=syntax)
    peaks, pixels = [], []
    for film in (plain, huge):
        image = spooled_image(film, hashlib.sha256(film.read_bytes()).hexdigest())
        assert image.whole is not None
        tracemalloc.start()
        try:
            whole = image.whole()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        pixels.append(whole.dataset.pixel_array)
        assert whole.dataset.ViewCodeSequence[0].CodeValue == VIEW_CODE[0]
    assert peaks[1] < peaks[0] + (4 << 20), [p >> 20 for p in peaks]
    assert np.array_equal(pixels[0], pixels[1])
    with pytest.raises(DicomInputError, match="does not match its recorded SHA-256"):
        spooled_image(huge, "0" * 64).whole()
