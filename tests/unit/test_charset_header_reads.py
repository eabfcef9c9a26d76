"""Deciding a header's character set reads no pixel data: a GPU worker holds a batch's studies as headers whose
pixel data stays on disk (``spooled_image``), and the decision looks only at the text values.

Input: the real NEMA RG1 CR film, JPEG-LS (2.7 MB of pixel data, over the 1 MiB a header read leaves on disk),
with (0008,0005) as it came (ISO_IR 100), removed, and ISO_IR 100 over a UTF-8 name (the text is read as UTF-8).
"""

from __future__ import annotations

import hashlib
import tracemalloc
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement

from radtrace.dicom_charset import read_text_as
from radtrace.model.study import spooled_image

pytestmark = pytest.mark.unit

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nema-rg1-cr-chest-pa-mono1-jpegls-near-lossless.dcm"
PIXEL_DATA = 0x7FE00010

CASES = [
    # (case, (0008,0005) or None, PatientName's bytes or None (as the film has it), the name read)
    ("ISO_IR 100 as sent", "ISO_IR 100", None, "CompressedSamples^RG1"),
    ("none declared", None, None, "CompressedSamples^RG1"),
    ("utf-8 under ISO_IR 100", "ISO_IR 100", "Müller^Jürgen".encode(), "Müller^Jürgen"),
]


def _film(folder: Path, charset: str | None, name: bytes | None) -> Path:
    ds = dcmread(FILM)
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert len(ds.PixelData) > 2 << 20
    del ds[0x00080005]
    if charset is not None:
        ds.add(DataElement(0x00080005, "CS", charset))
    if name is not None:
        ds.add(DataElement(0x00100010, "PN", name))
    path = folder / "film.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(("case", "charset", "name", "read"), CASES, ids=[c[0] for c in CASES])
def test_reading_a_header_in_its_character_set_leaves_the_pixel_data_on_disk(
    case: str, charset: str | None, name: bytes | None, read: str, tmp_path: Path
) -> None:
    """Before, an undeclared header's decision read and converted the deferred pixel data (2.8 MB peak for this
    film's header; a 50-megapixel film's 100 MB)."""
    path = _film(tmp_path, charset, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own, about the film's values: not the point here
        full = dcmread(path, defer_size=1 << 20)
    read_text_as(full)
    pixel = full.get_item(PIXEL_DATA, keep_deferred=True)
    assert isinstance(pixel, RawDataElement)
    assert pixel.value is None

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    tracemalloc.start()
    try:
        image = spooled_image(path, digest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(image.dataset.PatientName) == read
    assert peak < 1_000_000, f"{peak / 1e6:.2f} MB to read a header"
