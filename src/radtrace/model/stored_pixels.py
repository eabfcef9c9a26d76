"""The stored pixels of a DICOM image's first frame, as a decoder gives them and as DICOM says to read them.

- :func:`decode_first_frame`: the first frame only, whatever the transfer syntax (pydicom with GDCM, CharLS,
  OpenJPEG and the RLE plugins; 12-bit JPEG Extended with :mod:`radtrace.decoders`), checked against the pixel
  budget before decoding; a Basic or Extended Offset Table that does not point at the fragments is not trusted
  (the frames are found without it); values past Bits Stored are cleared;
- :func:`padding_mask`: the pixels that are padding, not image (PS3.3 C.7.5.1.1.2);
- :func:`palette_luminance`: a PALETTE COLOR image through its palette, as luminance.

Each returns the plain-data step it records for :class:`radtrace.model.image.PreparedPicture`.
"""

from __future__ import annotations

import itertools
import math
import struct
import warnings
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian

from radtrace.decoders import PLUGIN, decoding_plugin
from radtrace.dicom_listener.attributes import (
    PALETTE_COLOURS,
    palette_descriptor,
    palette_problem,
    pixel_padding_range,
)
from radtrace.dicom_listener.codestream import SizeError, codestream_size, first_fragment
from radtrace.dicom_listener.pixel_budget import CODESTREAM_SYNTAXES, PixelMismatchError, check_dataset
from radtrace.errors import DicomInputError
from radtrace.model.isolated_decode import decode_in_child

__all__ = ["MAX_SOURCE_PIXELS", "decode_first_frame", "padding_mask", "palette_luminance"]

#: Largest source image decoded (rows x columns x samples x frames), as ``listener.max_image_pixels``' default.
MAX_SOURCE_PIXELS: Final = 50_000_000

FloatImage = NDArray[np.float64]
Step = dict[str, Any]

_ITEM: Final = b"\xfe\xff\x00\xe0"  # (FFFE,E000) Item, little endian
_PIXEL_DATA: Final = 0x7FE00010
_BITS_STORED: Final = 0x00280101
#: Extended Offset Table and its Lengths: part of the Pixel Data's encoding (PS3.5 A.4), not a header attribute.
_EXTENDED_OFFSET_TABLE: Final = (0x7FE00001, 0x7FE00002)
#: pydicom decoding plugins used only where no other reads the syntax (see ``_decoding_plugins``).
_DISTRUSTED_PLUGINS: Final = frozenset({"gdcm", "pydicom"})
_ONE_SAMPLE: Final = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"})
_THREE_SAMPLES: Final = frozenset(
    {
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_420",
        "YBR_PARTIAL_422",
        "YBR_ICT",
        "YBR_RCT",
    }
)


def decode_first_frame(
    ds: Dataset, max_source_pixels: int = MAX_SOURCE_PIXELS, *, frame: int = 0
) -> tuple[NDArray[Any], list[Step]]:
    """The first frame's stored values (rows x columns, or x 3 for colour, which pydicom gives as RGB) and the
    decode step; ``frame``: another frame (0-based) instead.

    Raises:
        DicomInputError: no pixel data, a transfer syntax no installed decoder handles, corrupt pixel data, an
            image over ``max_source_pixels`` (header or codestream, checked before decoding).
    """
    if "PixelData" not in ds:
        if "FloatPixelData" in ds:  # parametric maps and the like: a radiograph's values are integers (PS3.3 C.7.6.3)
            raise DicomInputError("(7FE0,0008) Float Pixel Data: not a radiograph's pixel data (no X-ray IOD has it)")
        if "DoubleFloatPixelData" in ds:
            raise DicomInputError(
                "(7FE0,0009) Double Float Pixel Data: not a radiograph's pixel data (no X-ray IOD has it)"
            )
        raise DicomInputError("the instance has no pixel data")
    try:
        bits_stored = int(ds.get("BitsStored", 1))
    except (TypeError, ValueError):
        bits_stored = 1  # pydicom refuses it, naming the element
    if bits_stored < 1:  # pydicom reads 0 bits as all zeros: a black picture, or "every pixel holds one value"
        raise DicomInputError(f"(0028,0101) Bits Stored is {bits_stored}: the pixels hold no value")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and not UID(str(syntax)).is_transfer_syntax:
        # JPEG XL, Deflated Image Frame Compression, a private syntax: pydicom knows none (its UID raised
        # ValueError "UID is not a transfer syntax" wherever it was asked whether the data is encapsulated)
        raise DicomInputError(f"cannot decode the pixel data ({syntax}): a transfer syntax no installed decoder knows")
    ds, distrusted = _without_untrusted_offset_tables(ds)
    source, shift = _aligned_at_high_bit(ds)
    try:
        check_dataset(ds, max_source_pixels)  # a decoder believes the codestream's size: a bomb stops here
    except PixelMismatchError as exc:
        raise DicomInputError(f"cannot decode the pixel data ({syntax or 'unknown'}): {exc.reason}") from exc
    if (problem := _samples_problem(ds) or _short_native(ds)) is not None:
        raise DicomInputError(f"cannot decode the pixel data ({syntax or 'unknown'}): {problem}")
    # A 12-bit JPEG Extended image is given to the one plugin that reads it (radtrace.decoders), not to pydicom's
    # search, where each plugin that refuses it first logs an ERROR with a traceback.
    plugin = decoding_plugin(str(syntax or ""), int(ds.get("BitsStored", 0) or 0))
    names = [plugin] if plugin else _decoding_plugins(str(syntax or ""))
    pixels = None
    errors: list[str] = []
    warned: list[str] = []
    if _encapsulated(ds) and (plugin == PLUGIN or names == [""]):  # GDCM alone reads it: never in this process
        pixels, warned = decode_in_child(source, frame, names[0], str(syntax))
    # The first frame only: a multi-frame image is not decoded whole, and pixel data longer than the header
    # declares (trailing bytes a modality left) is not read as extra frames.
    with warnings.catch_warnings(record=True) as caught:  # about lengths and padding, never values
        warnings.simplefilter("always", UserWarning)
        for name in names if pixels is None else []:
            try:
                pixels = pixel_array(source, index=frame, allow_excess_frames=False, decoding_plugin=name)
                break
            except Exception as exc:  # decoders raise anything from RuntimeError to their own types
                errors.append(str(exc))  # pydicom's message names the plugin
    if pixels is None:
        raise DicomInputError(
            f"cannot decode the pixel data ({syntax or 'unknown transfer syntax'}): {'; '.join(errors)}"
        )
    warned += [str(w.message)[:200] for w in caught]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if pixels.ndim != (3 if samples > 1 else 2):
        raise DicomInputError(f"unexpected pixel array shape {pixels.shape}")
    step: Step = {
        "step": "decode",
        "transfer_syntax": str(syntax) if syntax else None,
        "frame": frame,
        "frames": frames,
        "rows": int(pixels.shape[0]),
        "columns": int(pixels.shape[1]),
        "bits_stored": int(ds.get("BitsStored", 0) or 0),
        "pixel_representation": int(ds.get("PixelRepresentation", 0) or 0),
    }
    if plugin:
        step["decoder"] = plugin
    if distrusted:
        step["offset_tables_ignored"] = distrusted
    if shift:
        pixels = np.right_shift(pixels, shift)  # arithmetic for signed values: the sign stays
        step["high_bit"] = int(ds.HighBit)
    if warned:
        step["decoder_warnings"] = warned[:4]
    if pixels.ndim == 2:
        pixels, masked = _to_bits_stored(pixels, int(ds.get("BitsStored", 0) or 0), step["pixel_representation"])
        if masked:
            step["masked_to_bits_stored"] = masked
    return pixels, [step]


def _decoding_plugins(syntax: str) -> list[str]:
    """The pydicom plugins to try, in pydicom's order, for encapsulated pixel data: all but GDCM and pydicom's own
    RLE decoder where another reads the syntax; [""] (pydicom's own search) for native pixel data and where those
    are the only ones.

    GDCM asserts what it expects of a codestream by throwing C++ exceptions that its Python binding does not
    catch: a damaged JPEG, JPEG-LS or JPEG 2000 header ends the whole worker process (std::terminate, SIGABRT)
    where the other plugins raise an error. For JPEG 2000 and JPEG-LS the others wrap the very libraries GDCM
    uses (OpenJPEG, CharLS); 8-bit JPEG is read by Pillow's libjpeg. JPEG Lossless and 12-bit JPEG Extended
    have no other decoder here (pylibjpeg-libjpeg is GPL): GDCM still reads them.

    pydicom's RLE decoder expands a segment whole before it compares its length with the frame's: replicate runs
    decode to 64 times their bytes (8 MiB to 512 MiB for a 1-megapixel frame). pylibjpeg-rle stops at the frame's
    length; pydicom's search fell back to the unbounded one wherever pylibjpeg-rle refused the header (a first
    segment offset of 68 instead of 64, PS3.5 G.5).
    """
    try:
        uid = UID(syntax)
        if not uid.is_encapsulated:
            return [""]
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError):
        return [""]
    available = set(decoder.available_plugins)
    ordered = [name for name in getattr(decoder, "_available", {}) if name in available] or sorted(available)
    others = [name for name in ordered if name not in _DISTRUSTED_PLUGINS]
    return others or [""]


def _samples_problem(ds: Dataset) -> str | None:
    """Why the samples the decoder would be told disagree with the image, or None: Samples per Pixel against the
    Photometric Interpretation (one for monochrome and palette, three for colour, PS3.3 C.7.6.3.1.2) and against
    the components of the first frame's codestream (JPEG, JPEG-LS, JPEG 2000).

    GDCM, pydicom's first decoder for those syntaxes, asserts both and throws a C++ exception nothing catches:
    the process ends (std::terminate, SIGABRT), whichever thread decodes. The listener refuses a contradicting
    Photometric Interpretation but compares only a codestream's rows and columns with the header.
    """
    try:
        samples = int(ds.get("SamplesPerPixel", 1))
    except (TypeError, ValueError):
        return None  # pydicom refuses it, naming the element
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    needed = 1 if photometric in _ONE_SAMPLE else 3 if photometric in _THREE_SAMPLES else samples
    if samples != needed:
        return (
            f"(0028,0002) Samples per Pixel is {samples}, (0028,0004) Photometric Interpretation {photometric} "
            f"has {needed}"
        )
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    data = ds.get("PixelData")
    if syntax not in CODESTREAM_SYNTAXES or not isinstance(data, bytes):
        return None
    try:
        components = codestream_size(first_fragment(data)).components
    except SizeError:
        return None  # the budget check has said what is wrong with it
    if components != samples:
        return f"(0028,0002) Samples per Pixel is {samples}, the codestream has {components} components"
    return None


def _short_native(ds: Dataset) -> str | None:
    """Why native pixel data cannot hold the image its header declares (shorter than Rows x Columns x Samples per
    Pixel x Number of Frames x Bits Allocated), naming (7FE0,0010) as the listener does; else None. pydicom's own
    refusal names no element ("the number of bytes of pixel data is less than expected")."""
    data = ds.get("PixelData")
    if _encapsulated(ds) or not isinstance(data, bytes):
        return None
    try:
        counts = [int(ds.get(k, 1) or 1) for k in ("Rows", "Columns", "SamplesPerPixel", "NumberOfFrames")]
        allocated = int(ds.get("BitsAllocated", 0) or 0)
    except (TypeError, ValueError):
        return None  # pydicom refuses it, naming the element
    need = math.ceil(math.prod(counts) * allocated / 8)
    if allocated not in (1, 8, 16, 32, 64) or len(data) >= need:  # pydicom refuses other depths, naming them
        return None
    return (
        f"(7FE0,0010) Pixel Data holds {len(data)} bytes, the header's image needs {need} (Rows x Columns x "
        "Samples per Pixel x Number of Frames x Bits Allocated): cut short"
    )


def _aligned_at_high_bit(ds: Dataset) -> tuple[Dataset, int]:
    """Native pixels whose High Bit is above Bits Stored - 1 (the values left-aligned in their word, PS3.5 8.1.1):
    ``ds`` as decoded up to High Bit (a copy with Bits Stored = High Bit + 1) and the shift that then brings the
    values down, as dcmtk reads them; else ``ds`` and 0. pydicom takes High Bit to be Bits Stored - 1 and would
    keep the low bits of such values, noise. Compressed pixel data holds the values themselves: never shifted."""
    try:
        high, bits, allocated = (int(ds.get(k)) for k in ("HighBit", "BitsStored", "BitsAllocated"))
    except (TypeError, ValueError):
        return ds, 0
    if not bits - 1 < high < allocated or _encapsulated(ds):
        return ds, 0
    copy = Dataset(dict(ds.items()))  # a new element dict, the same elements
    copy.file_meta = ds.file_meta
    copy[_BITS_STORED] = DataElement(_BITS_STORED, "US", high + 1)
    return copy, high + 1 - bits


def _without_untrusted_offset_tables(ds: Dataset) -> tuple[Dataset, list[str]]:
    """``ds``, or a copy of it without the offset tables that do not point at its fragments, and which those were.

    A Basic Offset Table's first offset is 0 and each is the start of a fragment item, one per frame (PS3.5
    A.4); an Extended Offset Table's likewise, with lengths that end within the pixel data. Some archives write
    offsets that point elsewhere (counted from the wrong item, or left from another encoding): pydicom trusts
    them and the decode fails, or reads the wrong bytes. Without the tables pydicom finds the frames from the
    fragments themselves (one per frame, or split at each JPEG end-of-image marker), as dcmtk does. The copy
    shares every other element; ``ds`` is not changed.
    """
    data = ds.get("PixelData")
    if not isinstance(data, bytes) or data[:4] != _ITEM or len(data) < 8 or not _encapsulated(ds):
        return ds, []
    (table_length,) = struct.unpack_from("<L", data, 4)
    first = 8 + table_length
    starts: set[int] = set()
    offset = first
    while offset + 8 <= len(data) and data[offset : offset + 4] == _ITEM:
        starts.add(offset - first)
        offset += 8 + struct.unpack_from("<L", data, offset + 4)[0]
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    distrusted = []
    if table_length and not _offsets_fit(data[8:first], "<L", starts, frames, None, len(data) - first):
        distrusted.append("basic")
    extended, lengths = (ds[tag].value if tag in ds else None for tag in _EXTENDED_OFFSET_TABLE)
    if extended is not None and not _offsets_fit(extended, "<Q", starts, frames, lengths, len(data) - first):
        distrusted.append("extended")
    if not distrusted:
        return ds, []
    copy = Dataset(dict(ds.items()))  # a new element dict, the same elements
    copy.file_meta = ds.file_meta
    if "basic" in distrusted:
        copy[_PIXEL_DATA] = DataElement(_PIXEL_DATA, "OB", _ITEM + bytes(4) + data[first:], is_undefined_length=True)
    if "extended" in distrusted:
        for tag in _EXTENDED_OFFSET_TABLE:
            if tag in copy:
                del copy[tag]
    return copy, distrusted


def _offsets_fit(table: Any, fmt: str, starts: set[int], frames: int, lengths: Any, size: int) -> bool:
    """Whether an offset table (``fmt``: its words) holds one offset per frame, the first 0, increasing, each the
    start of a fragment item; and, given ``lengths`` (Extended Offset Table Lengths), each frame within ``size``."""
    width = struct.calcsize(fmt)
    raw = bytes(table) if isinstance(table, bytes | bytearray) else b""
    if not raw or len(raw) % width or len(raw) // width != frames:
        return False
    offsets = struct.unpack(f"{fmt[0]}{frames}{fmt[1]}", raw)
    if offsets[0] != 0 or any(b <= a for a, b in itertools.pairwise(offsets)):
        return False
    if not set(offsets) <= starts:
        return False
    if lengths is None:
        return True
    raw_lengths = bytes(lengths) if isinstance(lengths, bytes | bytearray) else b""
    if len(raw_lengths) != len(raw):
        return False
    return all(
        o + n <= size for o, n in zip(offsets, struct.unpack(f"{fmt[0]}{frames}{fmt[1]}", raw_lengths), strict=True)
    )


def _encapsulated(ds: Dataset) -> bool:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return bool(syntax is not None and UID(str(syntax)).is_encapsulated)


def _to_bits_stored(pixels: NDArray[Any], bits: int, signed: int) -> tuple[NDArray[Any], float]:
    """Values past Bits Stored are no pixel values (overlays, garbage a modality left in the high bits, PS3.5
    8.1.1): pydicom clears them from native pixel data, but a decoder gives what its codestream holds, and a
    JPEG-LS or JPEG 2000 codestream whose precision is 16 for 12 bits stored (dcmcjpls encodes one so) keeps them.
    They are cleared here, and signed values sign-extended from Bits Stored, as dcmtk reads such a frame. Returns
    the share of pixels changed (0.0: none, the array as given)."""
    if not 0 < bits < 8 * pixels.dtype.itemsize or pixels.dtype.kind not in "iu":
        return pixels, 0.0
    lowest, highest = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    outside = (pixels < lowest) | (pixels > highest)
    if not outside.any():
        return pixels, 0.0
    values = pixels.astype(np.int64) & (2**bits - 1)
    if signed:
        values = np.where(values > highest, values - 2**bits, values)
    return values, round(float(outside.mean()), 4)


def palette_luminance(stored: NDArray[Any], ds: Dataset) -> tuple[FloatImage, Step]:
    """A PALETTE COLOR image through its palette (PS3.3 C.7.6.3.1.5-6), then its luminance: the palette is the
    display mapping (no Modality, VOI or Presentation LUT applies), so a gray palette that runs white to black
    shows the film as its sender meant, not as a negative of the stored values.

    Raises:
        DicomInputError: a palette that cannot be applied, naming (0028,0004).
    """
    problem = palette_problem(ds)
    descriptor = palette_descriptor(ds)
    if problem is not None or descriptor is None:
        raise DicomInputError(f"(0028,0004) Photometric Interpretation: {problem or 'palette LUTs disagree'}")
    entries, first, bits = descriptor
    big_endian = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) == ExplicitVRBigEndian
    tables: list[NDArray[np.int64]] = []
    segmented = False
    for colour in PALETTE_COLOURS:
        if f"{colour}PaletteColorLookupTableData" in ds:
            data = bytes(ds[f"{colour}PaletteColorLookupTableData"].value)
            # 8-bit entries one a byte where the data is exactly their count in bytes (to a whole word), else one a
            # word (PS3.3 C.7.6.3.1.6; some writers pad them): a table one word short of its count is short, not
            # packed (read as bytes, a film's gray palette was noise, mean difference 0.34-0.41)
            packed = bits == 8 and len(data) in (entries, entries + 1)
            table = np.frombuffer(data, dtype=np.uint8 if packed else (">u2" if big_endian else "<u2"))[:entries]
        else:  # segmented (PS3.3 C.7.9.2): pydicom expands it
            segmented = True
            from pydicom.pixels.processing import apply_color_lut

            try:
                expanded = np.asarray(apply_color_lut(np.arange(first, first + entries), ds))
                table = expanded[:, len(tables)]
            except Exception as exc:  # malformed segments raise anything from ValueError to struct.error
                raise DicomInputError(f"(0028,0004) Photometric Interpretation: segmented palette: {exc}") from exc
        if table.size < entries:  # a segmented table that expands to fewer entries than its descriptor's
            raise DicomInputError(f"(0028,0004) Photometric Interpretation: short {colour} palette data")
        table = table.astype(np.int64)
        if bits == 8 and table.max() > 255:  # 8-bit entries in the high byte of their word
            table >>= 8
        tables.append(table)
    index = np.clip(stored.astype(np.int64) - first, 0, entries - 1)
    top = float(2**bits - 1)
    weights = (0.299, 0.587, 0.114)
    gray = sum(w * table[index].astype(np.float64) for w, table in zip(weights, tables, strict=True)) / top
    return np.clip(gray, 0.0, 1.0), {
        "step": "palette",
        "entries": entries,
        "first_mapped": first,
        "bits": bits,
        "segmented": segmented,
        "then": "luminance",
        "weights": list(weights),
    }


def padding_mask(stored: NDArray[Any], ds: Dataset) -> tuple[NDArray[np.bool_] | None, Step | None]:
    """The pixels that are padding, not image (PS3.3 C.7.5.1.1.2): those holding Pixel Padding Value, or between
    it and Pixel Padding Range Limit, inclusive, compared with the stored values (signed, for a signed image,
    whatever VR the values were written with). None where there are none.

    Raises:
        DicomInputError: every pixel is padding.
    """
    padding = pixel_padding_range(ds)
    if padding is None:
        return None, None
    low, high = padding
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        # US or SS by the Pixel Representation: a signed image's negative padding written US is its two's
        # complement (65535 for -1), which no signed value equals
        low, high = sorted(v - 65536 if 32768 <= v < 65536 else v for v in (low, high))
    mask = (stored >= low) & (stored <= high)
    share = float(mask.mean()) if mask.size else 0.0
    if share == 0.0:
        return None, {"step": "padding", "range": [low, high], "share": 0.0}
    if share == 1.0:
        raise DicomInputError("(0028,0120) Pixel Padding Value: every pixel is padding, the image shows nothing")
    return mask, {"step": "padding", "range": [low, high], "share": round(share, 4), "shown_as": "black"}
