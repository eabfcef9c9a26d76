"""Real films re-encoded by dcmtk the ways a PACS or a film digitiser sends them, which no other test decodes:
each reads to the picture its uncompressed form gives.

- the NEMA RG1 CR (15 bits, odd Rows and Columns 1955 x 1841) as JPEG Lossless Process 14 with selection value 6
  (``dcmcjpeg +el``, 1.2.840.10008.1.2.4.57, not the SV1 syntax the other tests use);
- the Fuji CR with signed pixels and a Rescale Intercept, JPEG Lossless SV1 (GDCM, in the decoding child);
- the NIH film as a two-frame Secondary Capture whose first frame is blank, JPEG Lossless with each frame split
  over 8 KB fragments and an empty Basic Offset Table (``+fs 8 -ot``);
- the NIH film as an RGB Secondary Capture in JPEG Baseline without the colour transform (``dcmcjpeg +eb +cr``:
  Photometric Interpretation RGB over a lossy JPEG).

Found passing by the real-input exploration (notes/report-realinput.md, with 70 more inputs sent by storescu and
Orthanc to ``radtrace serve``); kept so that they stay so.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radtrace.dicom_listener.dcmtk import dcmtk_env
from radtrace.model.image import display_values
from tests_support import dicom_tool

pytestmark = pytest.mark.unit

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"


def _native(name: str) -> Dataset:
    """A film decoded and written back uncompressed (explicit VR little endian), under new UIDs."""
    ds = pydicom.dcmread(REAL / name, force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pixels = ds.pixel_array
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = pixels.astype(np.uint16 if ds.BitsAllocated > 8 else np.uint8).tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    ds["PixelData"].is_undefined_length = False
    for tag in [element.tag for element in ds if element.tag.element == 0]:
        del ds[tag]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid())
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _encoded(ds: Dataset, tmp_path: Path, tool: str, *options: str) -> tuple[Dataset, Dataset]:
    """``ds`` saved, then encoded by a dcmtk tool: both read back."""
    plain, encoded = tmp_path / "plain.dcm", tmp_path / "encoded.dcm"
    ds.save_as(plain, enforce_file_format=True)
    done = subprocess.run([dicom_tool(tool), *options, str(plain), str(encoded)], env=dcmtk_env(),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return pydicom.dcmread(plain), pydicom.dcmread(encoded)


def test_rg1_in_jpeg_lossless_process_14_selection_value_6(tmp_path: Path) -> None:
    plain, encoded = _encoded(_native("nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm"), tmp_path, "dcmcjpeg", "+el")
    assert encoded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.57"
    assert (encoded.Rows, encoded.Columns, encoded.BitsStored) == (1955, 1841, 15)
    got, steps = display_values(encoded)
    want, _ = display_values(plain)
    assert np.array_equal(got, want)
    assert steps[0]["transfer_syntax"] == "1.2.840.10008.1.2.4.57"


def test_fuji_signed_in_jpeg_lossless(tmp_path: Path) -> None:
    ds = _native("fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm")
    signed = np.frombuffer(ds.PixelData, dtype="<u2").astype(np.int16) - 512
    ds.PixelRepresentation = 1
    ds.PixelData = signed.astype("<i2").tobytes()
    ds.RescaleIntercept, ds.RescaleSlope = 512, 1
    plain, encoded = _encoded(ds, tmp_path, "dcmcjpeg", "+e1")
    got, steps = display_values(encoded)
    want, _ = display_values(plain)
    assert np.array_equal(got, want)
    assert steps[0]["pixel_representation"] == 1
    assert got.std() > 0.1  # the chest, not a flat picture


def test_two_frames_blank_first_split_over_fragments_without_offsets(tmp_path: Path) -> None:
    ds = _native("nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm")
    film = np.frombuffer(ds.PixelData, dtype=np.uint8)
    ds.PixelData = bytes(len(film)) + film.tobytes()
    ds.NumberOfFrames = 2
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"  # Multi-frame Grayscale Byte Secondary Capture
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 1000
    _, encoded = _encoded(ds, tmp_path, "dcmcjpeg", "+e1", "+fs", "8", "-ot")
    assert len(list(pydicom.encaps.generate_fragments(encoded.PixelData))) > 4  # more fragments than frames
    got, steps = display_values(encoded)
    single = _native("nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm")
    want, _ = display_values(single)
    assert steps[0]["frames_passed_over"] == 1
    assert np.array_equal(got, want)


def test_an_rgb_secondary_capture_in_jpeg_baseline_without_the_colour_transform(tmp_path: Path) -> None:
    ds = _native("nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm")
    gray = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(ds.Rows, ds.Columns)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = np.repeat(gray[..., np.newaxis], 3, axis=2).tobytes()
    plain, encoded = _encoded(ds, tmp_path, "dcmcjpeg", "+eb", "+cr")
    assert (encoded.PhotometricInterpretation, encoded.file_meta.TransferSyntaxUID) == ("RGB", "1.2.840.10008.1.2.4.50")
    got, _ = display_values(encoded)
    want, _ = display_values(plain)
    # read as YCbCr, a gray film would come out tinted and its luminance off by far more than JPEG's rounding
    assert float(np.abs(got - want).mean()) * 255 < 2.0
    assert float(np.corrcoef(got.ravel(), want.ravel())[0, 1]) > 0.999
