"""The real films re-encoded as a PACS re-sends them under the same SOP Instance UID (dcmtk's tools and pydicom).

``held_film`` gives the two films a re-send is compared with: the NIH film as it ships (Implicit VR Little Endian,
8 bit, 1024 x 1024) and the NEMA RG1 film decoded by dcmtk from its JPEG-LS near-lossless file (Explicit VR Little
Endian, 15 bit, 1955 x 1841; its pixels are those of the near-lossless file, under that file's UID). ``resent``
writes one of :data:`FORMS` of a held film.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path
from typing import Final

import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless

__all__ = ["FORMS", "LOSSLESS", "LOSSY", "REAL", "held_film", "lossless_forms", "resent", "transfer_syntax"]

REAL: Final = Path(__file__).resolve().parent / "data" / "real-cxr"
NIH: Final = REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
NEMA_NEAR_LOSSLESS: Final = REAL / "nema-rg1-cr-chest-pa-mono1-jpegls-near-lossless.dcm"

#: Forms that only encode the held instance differently: the same content.
LOSSLESS: Final = (
    "implicit",
    "explicit",
    "explicit-group-lengths",
    "deflated",
    "jpeg-ls-lossless",
    "jpeg-lossless-sv1",
    "jpeg-2000-lossless",
    "rle",
    "private-block-moved",
)
#: The held pixels compressed lossily under the same SOP Instance UID (dcmtk's +un), which DICOM forbids.
LOSSY: Final = ("jpeg-baseline-same-uid", "jpeg-ls-near-lossless-same-uid")
#: Everything ``resent`` writes: the lossless and lossy forms, a corrected patient name, another image lossily.
FORMS: Final = (*LOSSLESS, *LOSSY, "patient-name-corrected", "other-image-lossy-same-uid")

_DCMTK: Final = {
    "implicit": ["dcmconv", "+ti"],
    "explicit": ["dcmconv", "+te"],
    "explicit-group-lengths": ["dcmconv", "+te", "+g"],
    "deflated": ["dcmconv", "+td"],
    "jpeg-ls-lossless": ["dcmcjpls", "+el"],
    "jpeg-lossless-sv1": ["dcmcjpeg", "+e1"],
    "rle": ["dcmcrle"],
    "jpeg-baseline-same-uid": ["dcmcjpeg", "+eb", "+un"],
    "jpeg-ls-near-lossless-same-uid": ["dcmcjpls", "+en", "+un"],
}
_CREATOR: Final = "RADTRACE RESEND TEST"


def lossless_forms(film: str) -> list[str]:
    """:data:`LOSSLESS` less the held film's own transfer syntax (NIH: implicit, NEMA: explicit VR little endian)."""
    return [form for form in LOSSLESS if form != ("implicit" if film == "nih" else "explicit")]


def held_film(name: str, folder: Path) -> Path:
    """``nih`` or ``nema`` as held (see the module docstring), with a private block at (0011,10xx)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}-held.dcm"
    if name == "nih":
        ds = pydicom.dcmread(NIH)
    else:
        native = folder / "nema-native.dcm"
        subprocess.run(["dcmdjpls", str(NEMA_NEAR_LOSSLESS), str(native)], check=True, capture_output=True, timeout=60)
        ds = pydicom.dcmread(native)
    block = ds.private_block(0x0011, _CREATOR, create=True)
    block.add_new(0x01, "LO", "routing note")
    block.add_new(0x02, "US", 7)
    ds.save_as(target)
    return target


def resent(held: Path, form: str, folder: Path) -> Path:
    """``held`` re-written in ``form`` (one of :data:`FORMS`), under its SOP Instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{held.stem}-{form}.dcm"
    if form in _DCMTK:
        subprocess.run([*_DCMTK[form], str(held), str(target)], check=True, capture_output=True, timeout=120)
        return target
    ds = pydicom.dcmread(held)
    if form == "jpeg-2000-lossless":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    elif form == "private-block-moved":
        _move_private_block(ds)
    elif form == "patient-name-corrected":
        ds.PatientName = "Corrected^Name"
    elif form == "other-image-lossy-same-uid":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds.PixelData = np.ascontiguousarray(ds.pixel_array[::-1, ::-1]).tobytes()  # another picture
        ds.save_as(folder / "flipped.dcm")
        subprocess.run(
            [*_DCMTK["jpeg-ls-near-lossless-same-uid"], str(folder / "flipped.dcm"), str(target)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return target
    else:
        raise ValueError(form)
    ds.save_as(target)
    return target


def _move_private_block(ds: pydicom.Dataset) -> None:
    """The (0011,10xx) block moved to (0011,12xx), another creator's (empty) block now at (0011,10xx)."""
    moved = {
        t.element & 0xFF: (ds[t].VR, ds[t].value) for t in list(ds.keys()) if t.group == 0x0011 and t.element > 0xFF
    }
    for tag in [e.tag for e in ds if e.tag.group == 0x0011]:
        del ds[tag]
    ds.add_new(0x00110010, "LO", "OTHER VENDOR")
    ds.add_new(0x00110012, "LO", _CREATOR)
    for offset, (vr, value) in moved.items():
        ds.add_new(0x00111200 | offset, vr, value)


def transfer_syntax(path: Path) -> str:
    """The file's Transfer Syntax UID."""
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
