"""Attribute ablation: variants of valid studies, one attribute changed one way, derived from the attribute table.

For every row of :data:`radtrace.dicom_listener.attributes.ATTRIBUTES` (except those a peer cannot change) and
every change kind of :data:`CHANGE_KINDS`, :func:`apply_change` derives a variant of a source study: the
attribute removed, empty, over-long for its VR, with more values than its VM allows, malformed for its VR, or
holding non-ASCII text under ISO_IR 192 (UTF-8) or ISO_IR 100 (Latin-1). Sources are a factory study (a DX
PA and lateral), a factory CR study, and each real film in a folder (:func:`film_sources`). Values are written
as raw bytes, exactly as a peer would send them: pydicom never validates or "fixes" them on the way.

Each variant gets its own Study, Series and SOP Instance UIDs (derived from its name), so many variants can
share one database. Nothing here runs the pipeline: the tests do (``tests/ablation_support.py``).
"""

from __future__ import annotations

import functools
import io
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    UncompressedTransferSyntaxes,
    generate_uid,
)

from radtrace.dicom_listener.attributes import ATTRIBUTES, Attribute
from radtrace.testing.studies import ImageSpec, StudySpec, make_study

__all__ = [
    "CHANGE_KINDS",
    "FACTORY_SOURCES",
    "Variant",
    "all_variants",
    "apply_change",
    "film_sources",
    "load_film",
    "sample_variants",
]

#: How one attribute is changed.
CHANGE_KINDS: Final = (
    "removed",
    "empty",
    "over-long",
    "multi-valued",
    "malformed",
    "non-ascii-utf8",
    "non-ascii-latin1",
)

Source = Callable[[], list[Dataset]]


def _as_received(datasets: list[Dataset]) -> list[Dataset]:
    """Each dataset written and read back, as a listener holds it: raw elements are then written unchanged."""
    received: list[Dataset] = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        received.append(pydicom.dcmread(buffer))
    return received


def _secondary_capture(ds: Dataset) -> Dataset:
    """The DX image stored as Secondary Capture with Modality DX, as archives hold digitised chest films."""
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.ConversionType = "WSD"  # SC Equipment module (PS3.3 C.8.6.1): workstation
    return ds


#: Factory studies (small images, so a variant reads fast): a DX PA + LL study, a DX PA stored as Secondary
#: Capture, and a CR PA (MONOCHROME1).
FACTORY_SOURCES: Final[dict[str, Source]] = {
    "factory-dx": lambda: _as_received(
        make_study(
            StudySpec(seed=13),
            [ImageSpec(view="PA", rows=160, columns=128), ImageSpec(view="LL", rows=160, columns=128)],
        )
    ),
    "factory-sc": lambda: _as_received(
        [_secondary_capture(make_study(StudySpec(seed=15), [ImageSpec(view="PA", rows=160, columns=128)])[0])]
    ),
    "factory-cr": lambda: _as_received(
        make_study(
            StudySpec(seed=14, patient_id="RT0000014", accession="RTACC000014"),
            [ImageSpec(modality="CR", photometric="MONOCHROME1", bits_stored=10, rows=160, columns=128)],
        )
    ),
}

_MAX_CHARS: Final[dict[str, int]] = {
    "AS": 4, "CS": 16, "DA": 8, "DS": 16, "IS": 12, "LO": 64, "LT": 10240, "PN": 64, "SH": 16, "ST": 1024,
    "TM": 14, "UI": 64,
}  # fmt: skip
# A valid single value per VR, and a malformed one (what real senders get wrong for that VR).
_VALID: Final[dict[str, str]] = {
    "AS": "058Y", "CS": "CHEST", "DA": "20250314", "DS": "1.5", "IS": "2", "LO": "VALUE", "LT": "TEXT",
    "PN": "DOE^JANE", "SH": "VALUE", "ST": "TEXT", "TM": "093015", "UI": "1.2.826.0.1.3680043.10.1",
}  # fmt: skip
_MALFORMED: Final[dict[str, bytes]] = {
    "AS": b"58",
    "CS": b"chest x-ray!",
    "DA": b"2025-03-14",
    "DS": b"abc",
    "IS": b"1.5",
    "LO": b"BAD\x0eVALUE",
    "LT": b"BAD\x0bTEXT\x1c",
    "PN": b"A^B^C^D^E^F",
    "SH": b"BAD\x1bVALUE",
    "ST": b"BAD\x00TEXT",
    "TM": b"25:61:00",
    "UI": b"1.2.03.4",
}
_NON_ASCII: Final = {
    "non-ascii-utf8": ("ISO_IR 192", "utf-8", "Müller^Zoë=山田^太郎 Ж"),
    "non-ascii-latin1": ("ISO_IR 100", "latin-1", "Müller^Zoë Ñandú ß"),
}
_EMPTY_BOT: Final = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
_BINARY_VRS: Final = frozenset({"US", "SS", "UL", "OB", "OW", "OB or OW"})


@dataclass(frozen=True)
class Variant:
    """One source study with one attribute changed one way."""

    source: str
    keyword: str
    kind: str

    @property
    def name(self) -> str:
        """``source/keyword/kind``: a test ID and the seed of the variant's UIDs."""
        return f"{self.source}/{self.keyword}/{self.kind}"


def load_film(path: Path) -> list[Dataset]:
    """A real film as a one-instance study; a bare dataset without File Meta gets the group a listener writes."""
    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta = meta
    return [ds]


def film_sources(folder: Path) -> dict[str, Source]:
    """``film:<file stem>`` → its loader, for every ``*.dcm`` under ``folder``."""
    return {f"film:{path.stem}": functools.partial(load_film, path) for path in sorted(folder.glob("*.dcm"))}


def _raw(tag: int, vr: str, value: bytes, implicit: bool) -> RawDataElement:
    if len(value) % 2:
        value += b"\x00" if vr == "UI" else b" "
    return RawDataElement(Tag(tag), vr, len(value), value, 0, implicit, True)


def _renamed(datasets: list[Dataset], name: str) -> list[Dataset]:
    """The datasets with Study, Series and SOP Instance UIDs of their own (derived from ``name``)."""
    study_uid = generate_uid(entropy_srcs=[name, "study"])
    for ds in datasets:
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[name, "series", str(ds.get("SeriesInstanceUID", ""))])
        sop = generate_uid(entropy_srcs=[name, "sop", str(ds.get("SOPInstanceUID", ""))])
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
    return datasets


def _text_value(attribute: Attribute, kind: str, current: str, encoding: str = "ascii") -> bytes | None:
    vr = attribute.vr
    limit = _MAX_CHARS.get(vr)
    valid = current or _VALID.get(vr, "VALUE")
    if kind == "over-long":
        if limit is None:
            return None  # UT and the like have no practical limit
        if vr == "UI":
            return ("1.2." + "3" * (limit - 3)).encode()
        if vr in ("DA", "TM", "DS", "IS", "AS"):
            return (_VALID[vr] + "1" * (limit + 1 - len(_VALID[vr]))).encode()
        return ("X" * (limit + 1)).encode()
    if kind == "multi-valued":
        vm = attribute.vm
        count = 3 if vm == "2" else 2
        other = _VALID.get(vr, "VALUE")
        return "\\".join([valid] + [other] * (count - 1)).encode()
    if kind == "malformed":
        return _MALFORMED.get(vr)
    if kind in _NON_ASCII:
        text = _NON_ASCII[kind][2]
        return text[: limit or len(text)].encode(encoding)
    raise ValueError(kind)


def _binary_value(attribute: Attribute, kind: str, current: object, implicit: bool) -> bytes | None:
    if attribute.vr != "US":
        return None
    value = int(current) if isinstance(current, int) else 1
    if kind == "over-long":
        return struct.pack("<HH", value, 0)  # four bytes: two values where one is allowed
    if kind == "multi-valued":
        return struct.pack("<HH", value, value)
    if kind == "malformed":  # explicit VR: sent as UL (PS3.6 says US), which no reader can take; implicit: 0
        return struct.pack("<H", value) if not implicit else struct.pack("<H", 0)
    return None


def apply_change(datasets: list[Dataset], attribute: Attribute, kind: str, name: str) -> list[Dataset] | None:
    """The source ``datasets`` (changed in place and returned) with ``attribute`` changed as ``kind`` says,
    in every instance; None when the change does not apply to the attribute's VR (e.g. non-ASCII in a US)."""
    datasets = _renamed(datasets, name)
    tag = int(attribute.tag)
    for ds in datasets:
        implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        if kind == "removed":
            if tag in ds:
                del ds[tag]
            continue
        if kind == "empty":
            if attribute.vr == "SQ":
                setattr(ds, attribute.keyword, DicomSequence())
            elif (
                attribute.keyword == "PixelData" and ds.file_meta.TransferSyntaxUID not in UncompressedTransferSyntaxes
            ):
                # encapsulated: an empty Basic Offset Table and no frame (pydicom cannot write a zero length here)
                ds[tag] = RawDataElement(Tag(tag), "OB", 0xFFFFFFFF, _EMPTY_BOT, 0, implicit, True)
            else:
                ds[tag] = _raw(tag, _wire_vr(ds, attribute), b"", implicit)
            continue
        if attribute.vr == "SQ":
            if kind != "malformed":
                return None
            setattr(ds, attribute.keyword, DicomSequence([Dataset()]))  # one item holding nothing its reader needs
            continue
        if attribute.keyword == "PixelData":
            if kind != "malformed" or ds.file_meta.TransferSyntaxUID not in UncompressedTransferSyntaxes:
                return None
            data = ds.PixelData
            ds[tag] = _raw(tag, _wire_vr(ds, attribute), data[: len(data) // 2], implicit)
            continue
        if attribute.vr in _BINARY_VRS:
            value = _binary_value(attribute, kind, ds.get(attribute.keyword), implicit)
        else:
            encoding = "ascii"
            if kind in _NON_ASCII:
                charset, encoding, _ = _NON_ASCII[kind]
                ds.SpecificCharacterSet = charset
                # As sent: the other raw values stay the bytes they were (pydicom would re-encode them otherwise).
                ds.set_original_encoding(implicit, True, ds._character_set)
            current = str(ds.get(attribute.keyword, "") or "") if tag in ds else ""
            value = _text_value(attribute, kind, current.strip(), encoding)
        if value is None:
            return None
        wire_vr = "UL" if attribute.vr == "US" and kind == "malformed" and not implicit else _wire_vr(ds, attribute)
        ds[tag] = _raw(tag, wire_vr, value, implicit)
    return datasets


def _wire_vr(ds: Dataset, attribute: Attribute) -> str:
    if attribute.keyword == "PixelData":
        return "OW" if int(ds.get("BitsAllocated", 16) or 16) > 8 else "OB"
    return attribute.vr


def all_variants(sources: Iterable[str], attributes: Sequence[Attribute] = ATTRIBUTES) -> list[Variant]:
    """Every (source, attribute, kind) a peer could send; whether a kind applies is known only when applied."""
    return [
        Variant(source, attribute.keyword, kind)
        for source in sources
        for attribute in attributes
        if attribute.ablate
        for kind in CHANGE_KINDS
    ]


def sample_variants(sources: Sequence[str], seed: int, attributes: Sequence[Attribute] = ATTRIBUTES) -> list[Variant]:
    """Every attribute once per change kind, each from a source drawn with ``seed`` (factory sources twice as
    likely as a film: they read fastest)."""
    chooser = random.Random(seed)
    weighted = [s for s in sources for _ in range(2 if s.startswith("factory") else 1)]
    return [
        Variant(chooser.choice(weighted), attribute.keyword, kind)
        for attribute in attributes
        if attribute.ablate
        for kind in CHANGE_KINDS
    ]
