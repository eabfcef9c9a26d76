"""12-bit JPEG Extended from real films: radtrace's GDCM plugin decodes what dcmtk decodes, pixel for pixel.

Each real film in ``tests/data/real-cxr`` is brought to 12 bits stored (the 10-bit Fuji CR as it is; the 8-bit
films shifted up, the 15-bit NEMA RG1 shifted down and cropped to odd sizes), written Explicit VR Little Endian,
and encoded by dcmtk's ``dcmcjpeg +ee`` (JPEG Extended, Process 4, 12-bit precision), as a Fuji or Konica CR
archive sends lossy films. The reference is dcmtk's own decoder, ``dcmdjpeg``, on the same file.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, JPEGExtended12Bit

from radtrace.decoders import PLUGIN, decodes_12_bit, decoding_plugin, register
from radtrace.dicom_listener.dcmtk import dcmtk_env
from radtrace.model.image import prepare_picture
from reporting_support import REAL_FILMS
from tests_support import dicom_tool

pytestmark = pytest.mark.integration

BUDGET = {"min_pixels": 128 * 128, "max_pixels": 476 * 476}


def _twelve_bit(name: str, shift: int, crop: tuple[int, int] | None = None) -> Dataset:
    ds = pydicom.dcmread(REAL_FILMS / name, force=True)
    if "TransferSyntaxUID" not in ds.get("file_meta", Dataset()):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    pixels = ds.pixel_array.astype(np.int64)
    pixels = pixels << shift if shift >= 0 else pixels >> -shift
    if crop is not None:
        pixels = pixels[: crop[0], : crop[1]]
    pixels = np.clip(pixels, 0, 4095).astype(np.uint16)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel = 1
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTSequence", "SmallestImagePixelValue",
                    "LargestImagePixelValue", "NumberOfFrames"):  # fmt: skip
        if keyword in ds:
            delattr(ds, keyword)
    ds.PixelData = pixels.tobytes()
    return ds


FILMS = {
    "fuji-10bit": ("fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm", 0, None),
    "nih-8bit-shifted-up": ("nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm", 4, None),
    "canine-8bit-odd-columns": ("canine-dx-thorax-lateral-mono1-small.dcm", 4, None),
    "rg1-15bit-shifted-down-odd-crop": ("nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm", -3, (1001, 777)),
}


def _encode_and_reference(ds: Dataset, directory: Path) -> tuple[Path, Path]:
    source, encoded, decoded = directory / "le.dcm", directory / "jpeg12.dcm", directory / "dcmdjpeg.dcm"
    ds.save_as(source, enforce_file_format=True)
    for command in ([dicom_tool("dcmcjpeg"), "+ee", str(source), str(encoded)],
                    [dicom_tool("dcmdjpeg"), str(encoded), str(decoded)]):  # fmt: skip
        done = subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    return encoded, decoded


@pytest.mark.parametrize("film", sorted(FILMS))
def test_a_real_film_as_12_bit_jpeg_extended_decodes_as_dcmtk_decodes_it(
    film: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name, shift, crop = FILMS[film]
    encoded, reference = _encode_and_reference(_twelve_bit(name, shift, crop), tmp_path)
    compressed = pydicom.dcmread(encoded)
    assert compressed.file_meta.TransferSyntaxUID == JPEGExtended12Bit
    assert compressed.BitsStored == 12
    assert decoding_plugin(compressed.file_meta.TransferSyntaxUID, compressed.BitsStored) == PLUGIN

    ours = pixel_array(compressed, decoding_plugin=PLUGIN)
    theirs = pydicom.dcmread(reference).pixel_array

    assert ours.shape == theirs.shape == (int(compressed.Rows), int(compressed.Columns))
    assert np.array_equal(ours, theirs)
    assert int(ours.max()) > 255, "the decoded film uses more than 8 bits: it was not read as an 8-bit image"
    # what the model is shown is the same picture as from dcmtk's decoded copy, and the decoder is on record
    caplog.set_level(logging.INFO)
    picture = prepare_picture(compressed, **BUDGET)
    assert np.array_equal(picture.pixels, prepare_picture(pydicom.dcmread(reference), **BUDGET).pixels)
    [decode] = [step for step in picture.steps if step["step"] == "decode"]
    assert decode["decoder"] == PLUGIN
    # pydicom's own plugins were not tried first (each would have logged an ERROR with a traceback)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_plugin_comes_after_pydicoms_own_and_is_added_once() -> None:
    from pydicom.pixels.decoders.base import get_decoder

    register()
    register()
    plugins = list(get_decoder(JPEGExtended12Bit).available_plugins)
    assert plugins.count(PLUGIN) == 1
    assert plugins[-1] == PLUGIN, "8-bit JPEG Extended is still decoded by pydicom's own plugins first"
    assert decodes_12_bit()
    assert decoding_plugin(JPEGExtended12Bit, 8) == "", "an 8-bit JPEG Extended image is left to pydicom's plugins"
    assert decoding_plugin(ExplicitVRLittleEndian, 12) == ""
