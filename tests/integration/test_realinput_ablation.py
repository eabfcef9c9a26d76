"""Real-film variants through the whole pipeline (listener header rule, recording, completion, worker, SR / HL7 /
FHIR checked by the ablation harness): the variants a PACS really sends, each with what a radiologist expects.

Derived in memory from the films in tests/data/real-cxr (nothing on disk changes): windows a viewer would pass
over, thumbnails, multi-word and Iberian body parts, trailing pixel bytes, signed pixels and garbage high bits,
multi-frame, Specific Character Sets, transfer syntaxes. Each ends as expected: a draft whose SR passes dciodvfy
and whose HL7 parses, a skip with its reason, or a refusal naming the element. Before the real-input fixes
(notes/report-realinput.md) the window, thumbnail, body-part and trailing-bytes cases ended failed, or in a
draft of a blank or upscaled picture. CI runs a seeded sample of ``SAMPLE`` variants
(``RADTRACE_ABLATION_SEED`` picks another); ``RADTRACE_FULL_ABLATION=1`` runs them all.
"""

from __future__ import annotations

import copy
import io
import os
import random
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames, itemize_fragment
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

from ablation_support import AblationHarness, running_harness
from radtrace.testing.ablation import load_film
from tests_support import as_part10

pytestmark = pytest.mark.integration

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
FILMS = {
    "fuji": REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm",  # CR, MONOCHROME1, 10 bit, window 550 / 1024
    "nih": REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm",  # SC with Modality DX, MONOCHROME2, 8 bit
}
SEED = int(os.environ.get("RADTRACE_ABLATION_SEED", "20261204"))  # read at collection (see test_ablation.py)
FULL = os.environ.get("RADTRACE_FULL_ABLATION") == "1"
SAMPLE = 10
TOO_SMALL = ("skipped", "no frontal chest image large enough to read")
DRAFT = ("draft", "")

Change = Callable[[Dataset], Dataset]


def _window(center: object, width: object) -> Change:
    def change(ds: Dataset) -> Dataset:
        ds.WindowCenter, ds.WindowWidth = center, width
        return ds

    return change


def _set(**values: object) -> Change:
    def change(ds: Dataset) -> Dataset:
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        return ds

    return change


def _crop(rows: int, columns: int) -> Change:
    def change(ds: Dataset) -> Dataset:
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:rows, :columns]).tobytes()
        ds.Rows, ds.Columns = rows, columns
        return ds

    return change


def _native(ds: Dataset) -> Dataset:
    ds.PixelData = ds.pixel_array.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    return as_part10(ds)


def _bits(bits: int, *, signed: bool = False, garbage: bool = False) -> Change:
    """The stored values scaled to ``bits`` in 16 (window scaled too), signed, or with random bits above."""

    def change(ds: Dataset) -> Dataset:
        values = ds.pixel_array.astype(np.int64) << (bits - int(ds.BitsStored))
        window = [float(ds.WindowCenter), float(ds.WindowWidth)] if "WindowCenter" in ds else None
        if window is not None:
            window = [v * 2 ** (bits - int(ds.BitsStored)) for v in window]
        if signed:
            values -= 2 ** (bits - 1)
            if window is not None:
                window[0] -= 2 ** (bits - 1)
        words = values & 0xFFFF
        if garbage:
            words = (words & (2**bits - 1)) | (
                np.random.default_rng(7).integers(0, 2**16, words.shape) & ~(2**bits - 1)
            )
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, int(signed)
        ds.PixelData = (words & 0xFFFF).astype("<u2").tobytes()
        ds["PixelData"].VR = "OW"
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        return ds

    return change


def _left_aligned(ds: Dataset) -> Dataset:
    """16 bits allocated, the values in the top Bits Stored bits (High Bit 15), as some archives store them."""
    values = ds.pixel_array.astype(np.int64) << (16 - int(ds.BitsStored))
    ds.BitsAllocated, ds.HighBit = 16, 15
    ds.PixelData = values.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def _trailing_bytes(ds: Dataset) -> Dataset:
    ds.PixelData = bytes(ds.PixelData) + b"\x00" * (2 * len(ds.PixelData) + 6)
    return ds


def _two_frames(ds: Dataset) -> Dataset:
    ds.PixelData = bytes(ds.PixelData) * 2
    ds.NumberOfFrames = 2
    return ds


def _palette(*, drop: str | None = None) -> Change:
    """PALETTE COLOR with a gray palette running white to black over the stored range; ``drop``: one of its
    elements left out."""

    def change(ds: Dataset) -> Dataset:
        entries = 2 ** int(ds.BitsStored)
        table = np.rint((1.0 - np.arange(entries) / (entries - 1)) * 65535).astype("<u2").tobytes()
        for colour in ("Red", "Green", "Blue"):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [entries, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", table)
        ds.PhotometricInterpretation = "PALETTE COLOR"
        if drop is not None:
            delattr(ds, drop)
        return ds

    return change


def _padded_border(*, declared: bool) -> Change:
    """No window, the top quarter and left fifth at the highest stored value: Pixel Padding Value if
    ``declared``, else an undeclared collimation border."""

    def change(ds: Dataset) -> Dataset:
        values = ds.pixel_array.copy()
        top = 2 ** int(ds.BitsStored) - 1
        values[: values.shape[0] // 4] = top
        values[:, : values.shape[1] // 5] = top
        ds.PixelData = values.tobytes()
        for keyword in ("WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
        if declared:
            ds.PixelPaddingValue = top
        return ds

    return change


def _modality_lut(entries: int) -> Change:
    """A Modality LUT Sequence of ``entries`` entries (x 4), fewer than the stored values need."""

    def change(ds: Dataset) -> Dataset:
        item = Dataset()
        item.LUTDescriptor = [entries, 0, 16]
        item.add_new(0x00283006, "OW", (np.arange(entries, dtype="<u2") * 4).tobytes())
        ds.ModalityLUTSequence = [item]
        return ds

    return change


def _dark_first_frame(ds: Dataset) -> Dataset:
    ds.PixelData = bytes(len(ds.PixelData)) + bytes(ds.PixelData)
    ds.NumberOfFrames = 2
    return ds


def _name(charset: object, raw: bytes) -> Change:
    def change(ds: Dataset) -> Dataset:
        ds.SpecificCharacterSet = charset
        ds.add_new(0x00100010, "PN", raw)
        return ds

    return change


def _compressed(syntax: str) -> Change:
    def change(ds: Dataset) -> Dataset:
        ds.compress(syntax)
        return ds

    return change


def _dcmtk(*command: str) -> Change:
    def change(ds: Dataset) -> Dataset:
        with tempfile.TemporaryDirectory() as folder:
            source, target = Path(folder) / "in.dcm", Path(folder) / "out.dcm"
            ds.save_as(source, enforce_file_format=True)
            subprocess.run([*command, str(source), str(target)], check=True, capture_output=True, timeout=60)
            return pydicom.dcmread(target)

    return change


def _soi_alone_in_the_first_fragment(compress: Change) -> Change:
    """Compressed by ``compress``, the frame re-encapsulated with its SOI marker alone in the first fragment."""

    def change(ds: Dataset) -> Dataset:
        ds = compress(ds)
        [frame] = list(generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + itemize_fragment(frame[:2]) + itemize_fragment(frame[2:])
        return ds

    return change


def _offset_table_pointing_elsewhere(ds: Dataset) -> Dataset:
    """JPEG-LS lossless with a Basic Offset Table whose one offset points into the middle of the frame."""
    ds = _dcmtk("dcmcjpls", "+el")(ds)
    [frame] = list(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = b"\xfe\xff\x00\xe0\x04\x00\x00\x00\xe7\x03\x00\x00" + itemize_fragment(frame)
    return ds


#: name -> (change applied to the native film, expected outcome kind, text the reason starts with)
VARIANTS: dict[str, tuple[Change, tuple[str, str]]] = {
    "window-width-0": (_window(100, 0), DRAFT),
    "window-width-negative": (_window(100, -5), DRAFT),
    "window-far-above-the-data": (_window(1e7, 100), DRAFT),
    "window-absurdly-wide": (_window(0, 1e9), DRAFT),
    "windows-first-unusable": (_window([100, 550], [0, 1024]), DRAFT),
    "thumbnail-8x8": (_crop(8, 8), TOO_SMALL),
    "strip-4x400": (_crop(4, 400), TOO_SMALL),
    "body-part-chest-pa": (_set(BodyPartExamined="CHEST PA"), DRAFT),
    "body-part-ribs": (_set(BodyPartExamined="RIBS"), DRAFT),
    "body-part-knee": (_set(BodyPartExamined="KNEE"), ("skipped", "not a chest radiograph (body part KNEE)")),
    "pixels-twice-as-tall": (_set(PixelAspectRatio=[2, 1]), DRAFT),
    "imager-spacing-anisotropic": (_set(ImagerPixelSpacing=[0.1, 0.15]), DRAFT),
    "trailing-pixel-bytes": (_trailing_bytes, DRAFT),
    "two-frames": (_two_frames, DRAFT),
    "two-frames-the-first-dark": (_dark_first_frame, DRAFT),
    "bits-12-garbage-high-bits": (_bits(12, garbage=True), DRAFT),
    "bits-14-signed": (_bits(14, signed=True), DRAFT),
    "bits-15-signed-garbage": (_bits(15, signed=True, garbage=True), DRAFT),
    "bits-12-garbage-high-bits-jpeg-ls": (lambda ds: _dcmtk("dcmcjpls", "+el")(_bits(12, garbage=True)(ds)), DRAFT),
    "high-bit-15-left-aligned": (_left_aligned, DRAFT),
    "monochrome1-inverse": (_set(PresentationLUTShape="INVERSE"), DRAFT),
    "charset-latin1": (_name("ISO_IR 100", "Müller^Jürgen".encode("latin-1")), DRAFT),
    "charset-iso2022-jp": (_name(["", "ISO 2022 IR 87"], b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"), DRAFT),
    "charset-gb18030": (_name("GB18030", "王^小明".encode("gb18030")), DRAFT),
    "charset-bogus": (_name("ISO_IR 999", "Müller^Jürgen".encode("latin-1")), DRAFT),
    "charset-utf8-invalid-bytes": (_name("ISO_IR 192", b"M\xfcller^J\xfcrgen"), DRAFT),
    "palette-gray-white-to-black": (_palette(), DRAFT),
    "palette-without-its-data": (
        _palette(drop="GreenPaletteColorLookupTableData"),
        ("refused", "(0028,0004) Photometric Interpretation: no Green palette data"),
    ),
    "padding-border-declared": (_padded_border(declared=True), DRAFT),
    "collimation-border-undeclared": (_padded_border(declared=False), DRAFT),
    "modality-lut-of-16-entries": (_modality_lut(16), DRAFT),
    "modality-lut-sequence-empty": (_set(ModalityLUTSequence=[]), DRAFT),
    "huge-declared": (_set(Rows=65535, Columns=65535), ("refused", "(7FE0,0010) Pixel Data")),
    "jpeg-2000-lossless": (_compressed(JPEG2000Lossless), DRAFT),
    "rle": (_compressed(RLELossless), DRAFT),
    "deflate": (_dcmtk("dcmconv", "+td"), DRAFT),
    "jpeg-ls-near-lossless": (_dcmtk("dcmcjpls", "+en"), DRAFT),
    "jpeg-lossless": (_dcmtk("dcmcjpeg", "+e1"), DRAFT),
    "jpeg-lossless-4kb-fragments": (_dcmtk("dcmcjpeg", "+e1", "+fs", "4"), DRAFT),
    "explicit-big-endian": (_dcmtk("dcmconv", "+tb"), DRAFT),
    "basic-offset-table-pointing-elsewhere": (_offset_table_pointing_elsewhere, DRAFT),
    "jpeg-ls-soi-alone-in-first-fragment": (_soi_alone_in_the_first_fragment(_dcmtk("dcmcjpls", "+el")), DRAFT),
}
CASES = [(film, name) for film in FILMS for name in VARIANTS]


def _study(film: str, name: str) -> list[Dataset]:
    with warnings.catch_warnings():  # pydicom warns about the invalid values the variants hold on purpose
        warnings.simplefilter("ignore", UserWarning)
        return _changed_study(film, name)


def _changed_study(film: str, name: str) -> list[Dataset]:
    [ds] = load_film(FILMS[film])
    ds = _native(ds)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid(entropy_srcs=[film, name, keyword]))
    as_part10(ds)
    changed = VARIANTS[name][0](copy.deepcopy(ds))
    buffer = io.BytesIO()
    changed.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return [pydicom.dcmread(buffer)]


@pytest.fixture(scope="module")
def harness(tiny_model_dir: Path) -> Iterator[AblationHarness]:
    with running_harness(tiny_model_dir, "radtrace-realinput-") as made:
        yield made


def test_real_film_variants_end_as_a_radiologist_expects(harness: AblationHarness) -> None:
    chosen = CASES if FULL else random.Random(SEED).sample(CASES, SAMPLE)
    unexpected = []
    for start in range(0, len(chosen), 8):
        batch = chosen[start : start + 8]
        outcomes = harness.run_many([(f"{film}:{name}", _study(film, name)) for film, name in batch])
        for film, name in batch:
            outcome = outcomes[f"{film}:{name}"]
            kind, reason = VARIANTS[name][1]
            if outcome.kind != kind or not outcome.detail.startswith(reason) or outcome.problems:
                unexpected.append(f"{film}:{name}: {outcome.kind} {outcome.detail!r} {outcome.problems}")
    assert unexpected == []
