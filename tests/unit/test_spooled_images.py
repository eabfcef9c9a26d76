"""A GPU worker holds spooled studies as headers: only the chosen views' pixel data is read, and what the model
is shown is the same as from the whole instances.

Inputs: the real films of ``tests/data/real-cxr`` (five transfer syntaxes and layouts) and a factory study, each
spooled as the listener spools (Part 10); and a hostile study, the Fuji CR film enlarged to 2,200 x 2,200
(9.7 MB uncompressed) and sent 24 times under new SOP Instance UIDs.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from radtrace.errors import DicomInputError
from radtrace.model.study import StudyImage, StudyInput, prepare_study, spooled_image, study_image
from radtrace.testing.studies import StudySpec, make_study, write_study
from reporting_support import REAL_FILMS

pytestmark = pytest.mark.unit

BUDGET = {"min_pixels": 128 * 128, "max_pixels": 476 * 476}


def _spool(dataset: Dataset, path: Path) -> Path:
    """Written as Part 10, as the listener spools what it receives (a file without meta gets one)."""
    if "TransferSyntaxUID" not in getattr(dataset, "file_meta", Dataset()):
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(path, enforce_file_format=True)
    return path


def _both(paths: list[Path]) -> tuple[list[StudyImage], list[StudyImage]]:
    whole = [study_image(path.read_bytes()) for path in paths]
    return whole, [spooled_image(path, image.sha256) for path, image in zip(paths, whole, strict=True)]


def _same(a: StudyInput, b: StudyInput) -> None:
    assert a.sources == b.sources
    assert len(a.pictures) == len(b.pictures)
    for one, other in zip(a.pictures, b.pictures, strict=True):
        assert np.array_equal(one.pixels, other.pixels)


def _real_studies(tmp_path: Path) -> dict[str, list[Path]]:
    studies = {}
    for film in sorted(REAL_FILMS.glob("*.dcm")):
        studies[film.stem] = [_spool(pydicom.dcmread(film, force=True), tmp_path / f"{film.stem}.dcm")]
    studies["factory PA + lateral"] = write_study(make_study(StudySpec(seed=7)), tmp_path / "factory")
    return studies


def test_a_spooled_study_is_prepared_as_the_whole_study_is(tmp_path: Path) -> None:
    for name, paths in _real_studies(tmp_path).items():
        whole, headers = _both(paths)
        for image in headers:
            assert "PixelData" in image.dataset, name  # the choice of views still sees pixel data
            assert image.dataset["PixelData"].value == b"", name  # but none of it is held
        expected = prepare_study(whole, want_lateral=True, **BUDGET)
        got = prepare_study(headers, want_lateral=True, **BUDGET)
        if isinstance(expected, StudyInput):
            assert isinstance(got, StudyInput), name
            _same(expected, got)
        else:  # the canine lateral: skipped for the same reason
            assert got == expected, name


def _large_study(tmp_path: Path, count: int) -> list[Path]:
    film = pydicom.dcmread(REAL_FILMS / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm", force=True)
    film.file_meta = FileMetaDataset()
    film.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # the film has no meta: its encoding
    pixels = np.tile(film.pixel_array, (5, 5))  # 2,200 x 2,200, 16 bits allocated
    film.Rows, film.Columns = pixels.shape
    film.PixelData = pixels.astype(np.uint16).tobytes()
    film.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    paths = []
    for number in range(count):
        film.SOPInstanceUID = generate_uid()
        film.InstanceNumber = number + 1
        paths.append(_spool(film, tmp_path / f"{number:03d}.dcm"))
    return paths


def _peak(work: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_study_of_many_large_images_costs_the_memory_of_one(tmp_path: Path) -> None:
    paths = _large_study(tmp_path, 24)
    digests = [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]
    outcome: dict[str, StudyInput] = {}

    def prepare(name: str, read: list[StudyImage] | None = None, count: int = len(paths)) -> None:
        images = read or [spooled_image(path, digest) for path, digest in zip(paths[:count], digests, strict=False)]
        prepared = prepare_study(images, **BUDGET)
        assert isinstance(prepared, StudyInput)
        outcome[name] = prepared

    one = _peak(lambda: prepare("one", count=1))
    spooled = _peak(lambda: prepare("spooled"))
    whole = _peak(lambda: prepare("whole", [study_image(path.read_bytes()) for path in paths]))

    # the peak is one image read, decoded and converted for the model, plus 24 headers: not 24 images
    assert spooled < one + 8_000_000, f"{spooled / 1e6:.0f} MB for 24 images, {one / 1e6:.0f} MB for one"
    assert whole > one + 20 * 2200 * 2200 * 2  # what a worker held before: every image of the study at once
    _same(outcome["whole"], outcome["spooled"])
    _same(outcome["one"], outcome["spooled"])


def test_an_instance_changed_on_disk_after_its_header_was_read_is_refused_when_read_whole(tmp_path: Path) -> None:
    [path] = _real_studies(tmp_path)["fuji-cr-chest-pa-mono1-10bit-no-filemeta"]
    image = spooled_image(path, hashlib.sha256(path.read_bytes()).hexdigest())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one pixel byte
    path.write_bytes(bytes(data))
    assert image.whole is not None
    with pytest.raises(DicomInputError, match="does not match its recorded SHA-256"):
        image.whole()
    with pytest.raises(DicomInputError, match="does not match its recorded SHA-256"):
        prepare_study([image], **BUDGET)


def test_a_spooled_file_that_is_not_dicom_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(DicomInputError):
        spooled_image(path, "0" * 64)
