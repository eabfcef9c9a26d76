"""Pixel decoders radtrace adds to pydicom's: 12-bit JPEG Extended (1.2.840.10008.1.2.4.51) with GDCM's own codec.

Fuji and Konica CR archives send lossy 12-bit JPEG (Process 4). pydicom's GDCM plugin refuses every such frame
("GDCM does not support 'JPEG Extended' for samples with 12-bit precision"), Pillow's JPEG decoder is 8-bit only,
and the one other plugin that reads it (pylibjpeg-libjpeg) is GPL, which radtrace does not ship. GDCM itself,
from 3.0, carries libjpeg built for 8, 12 and 16 bits and picks the 12-bit build from the codestream's SOF
precision: on the real films in ``tests/data/real-cxr`` re-encoded by dcmtk (``dcmcjpeg +ee``), its output equals
dcmtk's own decoder (``dcmdjpeg``) pixel for pixel (``tests/integration/test_decoders_jpeg12.py``).

:func:`register` adds that decoder behind pydicom's own plugins for the transfer syntax, which still decode 8-bit
JPEG Extended. A 12-bit image is decoded with this plugin named (:func:`decoding_plugin`): left to pydicom's
search, each of its own plugins would first fail and log an ERROR with a traceback. The listener asks
:func:`decodes_12_bit` whether a 12-bit codestream can be decoded here at all.

GDCM first reads the codestream with its 8-bit libjpeg, which prints ``Unsupported JPEG data precision 12`` to
the process's stderr (not through logging) before GDCM switches to the 12-bit build: a fixed text, nothing went
wrong. Silencing it would mean redirecting file descriptor 2 while other threads log.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final

from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, JPEGExtended12Bit

if TYPE_CHECKING:
    from pydicom.pixels.decoders.base import DecodeRunner

__all__ = ["DECODER_DEPENDENCIES", "PLUGIN", "decodes_12_bit", "decoding_plugin", "is_available", "register"]

#: The plugin's label among pydicom's decoders for JPEG Extended.
PLUGIN: Final = "radtrace-gdcm-12bit"
#: What pydicom reports when the plugin is unavailable (a plugin module must name its dependencies).
DECODER_DEPENDENCIES: Final = {JPEGExtended12Bit: ("gdcm>=3.0.10",)}

_lock = threading.Lock()


def is_available(uid: UID) -> bool:
    """Whether GDCM can be imported and ``uid`` is JPEG Extended (pydicom's plugin contract)."""
    if uid != JPEGExtended12Bit:
        return False
    try:
        import gdcm  # noqa: F401
    except ImportError:
        return False
    return True


def _decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """One encoded frame to its samples (pydicom's decoder-plugin contract), through a :class:`gdcm.Image`."""
    import gdcm

    if runner.samples_per_pixel != 1:
        raise NotImplementedError("only single-sample (grayscale) 12-bit JPEG Extended frames are decoded here")
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(src)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())

    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((runner.columns, runner.rows, 1))
    image.SetDataElement(element)
    image.SetPhotometricInterpretation(
        gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.GetPIType(runner.photometric_interpretation))
    )
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(str(JPEGExtended12Bit))))
    bits = runner.bits_stored
    image.SetPixelFormat(gdcm.PixelFormat(1, runner.bits_allocated, bits, bits - 1, runner.pixel_representation))
    # GDCM hands its buffer back as a str; surrogateescape gives back its bytes unchanged.
    frame = image.GetBuffer().encode("utf-8", "surrogateescape")
    expected = runner.rows * runner.columns * (runner.bits_allocated // 8)
    if len(frame) != expected:
        raise ValueError(f"GDCM decoded {len(frame)} bytes of a 12-bit JPEG frame, not the {expected} it declares")
    return bytes(frame)


def register() -> None:
    """Add the plugin to pydicom's JPEG Extended decoder, once per process (idempotent, thread-safe)."""
    decoder = get_decoder(JPEGExtended12Bit)
    with _lock:
        if PLUGIN in decoder.available_plugins or any(
            entry.startswith(f"{PLUGIN} ") for entry in decoder.missing_dependencies
        ):
            return
        decoder.add_plugin(PLUGIN, (__name__, "_decode_frame"))


def decoding_plugin(transfer_syntax: str, bits_stored: int) -> str:
    """The pydicom decoding plugin to name for an image ("": pydicom's own search); registers this module's."""
    if transfer_syntax != JPEGExtended12Bit or bits_stored <= 8:
        return ""
    register()
    plugins = get_decoder(JPEGExtended12Bit).available_plugins
    return next((label for label in (PLUGIN, "pylibjpeg") if label in plugins), "")


def decodes_12_bit() -> bool:
    """Whether a 12-bit JPEG Extended codestream can be decoded in this process (this plugin, or pylibjpeg's)."""
    return decoding_plugin(str(JPEGExtended12Bit), 12) != ""
