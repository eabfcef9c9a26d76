"""The table of the DICOM attributes radtrace reads (:data:`ATTRIBUTES`), and its printing in the conformance
statement (:func:`conformance_table`). What radtrace does with an unusable value, and the checks themselves, are in
:mod:`radtrace.dicom_listener.attributes`, which re-exports these names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydicom.datadict import dictionary_description, dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.tag import BaseTag, Tag

__all__ = [
    "ATTRIBUTES",
    "IMAGE_SOP_CLASSES",
    "SECONDARY_CAPTURE_SOP_CLASSES",
    "Attribute",
    "Module",
    "Reader",
    "by_keyword",
    "conformance_table",
    "format_tag",
]

Module = Literal[
    "Patient",
    "General Study",
    "General Series",
    "General Equipment",
    "Frame of Reference",
    "SOP Common",
    "Image",
    "Image Pixel",
    "VOI LUT",
    "Modality LUT",
    "Presentation LUT",
    "Palette Color LUT",
]
Reader = Literal["listener", "model", "reporting", "worker"]

#: Secondary Capture Image, Multi-frame Grayscale Byte and Word SC Image (PS3.4 B.5): read when CR or DX.
SECONDARY_CAPTURE_SOP_CLASSES: Final = frozenset(
    {"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3"}
)
#: The image classes the model may read (CR, DX for presentation and processing, and Secondary Capture):
#: for these, pixel data and its description are key.
IMAGE_SOP_CLASSES: Final = SECONDARY_CAPTURE_SOP_CLASSES | {
    "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.1.1",
}


@dataclass(frozen=True)
class Attribute:
    """One attribute radtrace reads: where it is defined, who reads it, and what an unusable value costs."""

    keyword: str
    module: Module
    type: Literal["1", "1C", "2", "3"]
    """Its type in the CR / DX IOD (the stricter of the two)."""
    read_by: tuple[Reader, ...]
    key: bool = False
    allowed: frozenset[str] = frozenset()
    """Enumerated values; another value is unusable."""
    ablate: bool = True
    """False for an attribute a peer cannot change (the transfer syntax comes from the negotiated context), and for
    rows not yet in the ablation suite: the pixel-geometry, padding, palette and offset-table rows, whose variants
    the ``tests/unit/test_realinput_*.py`` files derive from real films instead, and the study and equipment
    attributes only the reporting code copies."""
    note: str = ""
    kinds: tuple[str, ...] = field(default=(), compare=False)

    @property
    def tag(self) -> BaseTag:
        """The attribute's tag (PS3.6)."""
        found = tag_for_keyword(self.keyword)
        assert found is not None, self.keyword
        return Tag(found)

    @property
    def vr(self) -> str:
        """The attribute's VR (PS3.6); for US or SS the first one."""
        return dictionary_VR(self.tag).split(" or ")[0]

    @property
    def vm(self) -> str:
        """The attribute's VM (PS3.6), e.g. ``1``, ``2``, ``1-n``."""
        return dictionary_VM(self.tag)

    @property
    def name(self) -> str:
        """The attribute's name (PS3.6)."""
        return dictionary_description(self.tag)

    @property
    def handling(self) -> str:
        """What an unusable value leads to, in the words of the conformance statement."""
        return "refused" if self.key else "accepted, recorded, normalised"


def _a(keyword: str, module: Module, type_: Literal["1", "1C", "2", "3"], *read_by: Reader, **kw: Any) -> Attribute:
    return Attribute(keyword, module, type_, tuple(read_by), **kw)


_PHOTOMETRIC: Final = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"}
)

#: Every attribute radtrace reads, by module. Changing a row changes the listener, the worker's normalisation,
#: the ablation suite and (through its test) the conformance statement together.
ATTRIBUTES: Final[tuple[Attribute, ...]] = (
    # Patient (PS3.3 C.7.1.1)
    _a("PatientName", "Patient", "2", "reporting"),
    _a("PatientID", "Patient", "2", "worker", "reporting", note="with its issuer, the patient identity"),
    _a("IssuerOfPatientID", "Patient", "3", "worker", "reporting"),
    _a("PatientBirthDate", "Patient", "2", "reporting"),
    _a("PatientSex", "Patient", "2", "reporting", allowed=frozenset({"M", "F", "O"})),
    _a(
        "PatientAge",
        "Patient",
        "3",
        "reporting",
        note=(
            'read as the review console reads it (`radtrace.dicom_age`): bare digits ("58") are years, 1-2 digits or '
            'a lower-case unit are padded and upper-cased, written as the AS ("058Y") with a header note saying how it '
            'was read; no age ("abc", "-5Y", past 130 years, a control inside) or several values omitted with a note; '
            "where it gives none (absent, no age, several values), the age from Patient's Birth Date to Study Date "
            "(both DA), as the console derives it (`radtrace.dicom_age.age_at_study`), with a header note saying so"
        ),
    ),
    # General Study (C.7.2.1)
    _a("StudyInstanceUID", "General Study", "1", "listener", "worker", "reporting", key=True),
    _a("StudyDate", "General Study", "2", "reporting"),
    _a("StudyTime", "General Study", "2", "reporting"),
    _a("ReferringPhysicianName", "General Study", "2", "reporting"),
    _a("StudyID", "General Study", "2", "reporting"),
    _a("AccessionNumber", "General Study", "2", "listener", "reporting"),
    _a(
        "StudyDescription", "General Study", "3", "listener",
        note="routing: names the chest, or another part, when no body part does",
    ),
    _a("RequestedProcedurePriority", "General Study", "3", "listener", note="routing: STAT"),
    _a("RequestAttributesSequence", "General Series", "3", "listener", note="routing: its items' priority"),
    _a("IssuerOfAccessionNumberSequence", "General Study", "3", "reporting", ablate=False),
    _a("ReferringPhysicianIdentificationSequence", "General Study", "3", "reporting", ablate=False),
    _a("PhysiciansOfRecord", "General Study", "3", "reporting", ablate=False),
    _a("NameOfPhysiciansReadingStudy", "General Study", "3", "reporting", ablate=False),
    _a("ReferencedStudySequence", "General Study", "3", "reporting", ablate=False),
    _a("ProcedureCodeSequence", "General Study", "3", "reporting", ablate=False),
    _a("RequestingService", "General Study", "3", "reporting", ablate=False),
    _a("ConsultingPhysicianName", "General Study", "3", "reporting", ablate=False),
    # General Series (C.7.3.1), CR Series (C.8.1.1), DX Positioning (C.8.11.5)
    _a("Modality", "General Series", "1", "listener",
       note="routing: CR or DX is read; absent on a CR or DX image, its SOP class's modality counts (PS3.3 A.2, A.26)"),
    _a("SeriesInstanceUID", "General Series", "1", "listener", "reporting", key=True),
    _a("SeriesDescription", "General Series", "3", "model", note="view, when no coded or positional one"),
    _a("ProtocolName", "General Series", "3", "model", note="view, when no coded or positional one"),
    _a("BodyPartExamined", "General Series", "2", "listener", "model", note="routing: chest"),
    _a("ViewPosition", "General Series", "2", "model", note="view (PA, AP, LL…)"),
    # General Equipment, Frame of Reference: validated only (real headers break these most often)
    _a("InstitutionName", "General Equipment", "3", "listener", "reporting", note="the SR's image library"),
    _a("InstitutionalDepartmentName", "General Equipment", "3", "reporting", ablate=False),
    _a("StationName", "General Equipment", "3", "reporting", ablate=False),
    _a("DeviceSerialNumber", "General Equipment", "3", "reporting", ablate=False),
    _a("SoftwareVersions", "General Equipment", "3", "reporting", ablate=False),
    _a("Manufacturer", "General Equipment", "2", "listener", "reporting", note="input mix (QA dashboard)"),
    _a("ManufacturerModelName", "General Equipment", "3", "listener", "reporting", note="input mix (QA dashboard)"),
    _a(
        "PixelPaddingValue", "General Equipment", "1C", "model", ablate=False,
        note="stored values that are padding, not image (with Pixel Padding Range Limit, the range between the two): "
        "left out of the window or range and shown black; an image that is all padding fails its study",
    ),
    _a("FrameOfReferenceUID", "Frame of Reference", "3", "listener", "reporting", note="the SR's image library"),
    # SOP Common (C.12.1)
    _a(
        "SOPClassUID", "SOP Common", "1", "listener", "worker", "model", "reporting", key=True,
        note="a DX For Processing image is read only when no For Presentation image of the study is readable",
    ),
    _a("SOPInstanceUID", "SOP Common", "1", "listener", "worker", "reporting", key=True),
    _a("SpecificCharacterSet", "SOP Common", "1C", "listener", "worker", note="decodes every text value"),
    _a("TimezoneOffsetFromUTC", "SOP Common", "3", "reporting"),
    # General / CR / DX Image (C.7.6.1, C.8.1.2, C.8.11.3)
    _a(
        "PatientOrientation", "Image", "2", "model", "reporting",
        note="view unknown: rows toward A or P read as lateral, chosen last",
    ),
    _a("ImageComments", "Image", "3", "model", note="view, when no coded or positional one"),
    _a("AcquisitionDeviceProcessingDescription", "Image", "3", "model", note="view, when no other"),
    _a("ViewCodeSequence", "Image", "3", "model", note="view (CID 4010)"),
    # Type 1 (Burned In Annotation) and 1C (Lossy Image Compression) in the DX Image module, 3 in CR's General Image:
    # listed as 3, so a CR film without them records no deviation.
    _a(
        "BurnedInAnnotation", "Image", "3", "model", ablate=False,
        note="YES: the drafts are flagged burned-in-annotation",
    ),
    _a(
        "LossyImageCompression", "Image", "3", "model", ablate=False,
        note="01, or a lossy transfer syntax, or a JPEG 2000 codestream (under .90 or .91, HTJ2K too) that is lossy "
        "as it is: the 9-7 wavelet in any COD or COC, coding passes left out, or cut short (packets or tile-parts "
        "missing): the drafts are flagged lossy-compression; a 5-3 codestream whose passes are not read (HTJ2K "
        "code-blocks, a region of interest's background planes, past the reader's bounds) is flagged as possibly "
        "lossy under .91, .93 or .203, and recorded as not verified under .90, .92, .201 or .202",
    ),
    _a("LossyImageCompressionRatio", "Image", "3", "model", ablate=False, note="named in the lossy-compression flag"),
    _a("LossyImageCompressionMethod", "Image", "3", "model", ablate=False, note="named in the lossy-compression flag"),
    _a(
        "ImagerPixelSpacing", "Image", "3", "listener", "model", "reporting",
        note="input mix: the detector's spacing; pixel proportions when Pixel Spacing has none",
    ),
    _a(
        "PixelSpacing", "Image", "3", "listener", "model",
        note="input mix, when no Imager Pixel Spacing; pixel proportions: rows over columns, non-square pixels "
        "(over 1 % apart, at most 4 to 1) shown at their true proportions",
    ),
    # Image Pixel (C.7.6.3): what a decoder needs
    _a("SamplesPerPixel", "Image Pixel", "1", "model", key=True, allowed=frozenset({"1", "3"})),
    _a("PhotometricInterpretation", "Image Pixel", "1", "listener", "model", key=True, allowed=_PHOTOMETRIC),
    _a("Rows", "Image Pixel", "1", "model", key=True),
    _a("Columns", "Image Pixel", "1", "model", key=True),
    _a("BitsAllocated", "Image Pixel", "1", "model", key=True, allowed=frozenset({"1", "8", "16", "32"})),
    _a("BitsStored", "Image Pixel", "1", "model", key=True),
    _a(
        "HighBit", "Image Pixel", "1", "model",
        note="native pixels with High Bit above Bits Stored - 1 (left-aligned) are shifted down; compressed pixels "
        "hold the values themselves, and bits past Bits Stored are cleared either way",
    ),
    _a("PixelRepresentation", "Image Pixel", "1", "model", key=True, allowed=frozenset({"0", "1"})),
    _a("NumberOfFrames", "Image Pixel", "1C", "model", key=True, note="key when present: the first frame is read"),
    _a("PixelData", "Image Pixel", "1", "model", key=True),
    _a(
        "PixelAspectRatio", "Image Pixel", "1C", "model", ablate=False,
        note="pixel proportions when neither Pixel Spacing nor Imager Pixel Spacing holds two positive numbers",
    ),
    _a(
        "PixelPaddingRangeLimit", "Image Pixel", "1C", "model", ablate=False,
        note="with Pixel Padding Value, the range of padding values",
    ),
    *(
        _a(
            f"{colour}PaletteColorLookupTableDescriptor", "Image Pixel", "1C", "listener", "model", ablate=False,
            note="PALETTE COLOR: the three must agree, 8 or 16 bits; otherwise refused, naming (0028,0004)",
        )
        for colour in ("Red", "Green", "Blue")
    ),
    *(
        _a(
            f"{colour}PaletteColorLookupTableData", "Image Pixel", "1C", "listener", "model", ablate=False,
            note="PALETTE COLOR: applied, then luminance; missing or short: refused, naming (0028,0004)",
        )
        for colour in ("Red", "Green", "Blue")
    ),
    *(
        _a(
            f"Segmented{colour}PaletteColorLookupTableData", "Palette Color LUT", "1C", "listener", "model",
            ablate=False, note="PALETTE COLOR, when no plain palette data: expanded, applied, then luminance",
        )
        for colour in ("Red", "Green", "Blue")
    ),
    _a(
        "ExtendedOffsetTable", "Image Pixel", "3", "model", ablate=False,
        note="used when it holds one offset per frame, each the start of a fragment; else ignored (recorded) and "
        "the frames found from the fragments",
    ),
    _a(
        "ExtendedOffsetTableLengths", "Image Pixel", "1C", "model", ablate=False,
        note="with the Extended Offset Table: each frame must end within the pixel data, else both are ignored",
    ),
    _a("TransferSyntaxUID", "Image Pixel", "1", "listener", "model", key=True, ablate=False,
       note="from the negotiated presentation context, not from the data set"),
    # Modality LUT (C.11.1), VOI LUT (C.11.2), Presentation LUT (C.11.6 / DX C.8.11.3)
    _a("RescaleIntercept", "Modality LUT", "1C", "model"),
    _a("RescaleSlope", "Modality LUT", "1C", "listener", "model",
       note="0 is **refused** where no Modality LUT Sequence is present: every pixel would be the intercept"),
    _a("ModalityLUTSequence", "Modality LUT", "1C", "model"),
    _a("WindowCenter", "VOI LUT", "1C", "model"),
    _a("WindowWidth", "VOI LUT", "1C", "model"),
    _a("WindowCenterWidthExplanation", "VOI LUT", "3", "model"),
    _a("VOILUTFunction", "VOI LUT", "3", "model", allowed=frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"})),
    _a("VOILUTSequence", "VOI LUT", "1C", "model"),
    _a("PresentationLUTShape", "Presentation LUT", "1C", "model", allowed=frozenset({"IDENTITY", "INVERSE"}),
       note="restates the Photometric Interpretation, which decides; a contradiction is recorded, not followed"),
    _a("PresentationLUTSequence", "Presentation LUT", "3", "model", ablate=False,
       note="no image IOD defines it (GSPS and print do): its presence is recorded, it is not applied"),
)  # fmt: skip

_BY_KEYWORD: Final = {attribute.keyword: attribute for attribute in ATTRIBUTES}


def by_keyword(keyword: str) -> Attribute:
    """The table's row for ``keyword``."""
    return _BY_KEYWORD[keyword]


def format_tag(tag: int) -> str:
    """``(GGGG,EEEE)``, as the standard writes a tag."""
    value = Tag(tag)
    return f"({value.group:04X},{value.element:04X})"


_READERS: Final[dict[str, str]] = {
    "listener": "listener",
    "model": "model (view, pixels)",
    "reporting": "SR / HL7 / FHIR",
    "worker": "worker",
}


def conformance_table() -> str:
    """The attribute table as the conformance statement prints it (Markdown), generated from :data:`ATTRIBUTES`."""
    lines = [
        "| Attribute | Tag | VR | VM | Module | Read by | Unusable value |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in ATTRIBUTES:
        readers = ", ".join(_READERS[r] for r in a.read_by)
        if a.key:
            outcome = "**refused**"
        elif "model" in a.read_by:
            outcome = "accepted, recorded; normalised for the model"
        elif "reporting" in a.read_by:
            outcome = "accepted, recorded; the outputs omit or normalise it"
        else:
            outcome = "accepted, recorded"
        if a.allowed:
            outcome += f" (allowed: {', '.join(sorted(a.allowed))})"
        if a.note:
            outcome += f"; {a.note}"
        lines.append(f"| {a.name} | {format_tag(a.tag)} | {a.vr} | {a.vm} | {a.module} | {readers} | {outcome} |")
    return "\n".join(lines)
