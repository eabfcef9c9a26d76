"""Synthetic chest radiograph studies: CR and DX instances with realistic attributes.

``make_image`` builds one Part 10-ready instance from a :class:`StudySpec` (patient and study) and an
:class:`ImageSpec` (what kind of image, how it is encoded); ``make_study`` builds several that share a
study; ``write_study`` puts them on disk. ``VALID_VARIANTS`` names every kind of image the factory can
make, for tests that iterate over them. All content is synthetic and deterministic: the same
specifications give the same bytes, UIDs included.

The IODs followed are Computed Radiography Image (PS3.3 A.2) and Digital X-Ray Image, For Presentation
and For Processing (PS3.3 A.26); the attribute-level rules live in :mod:`radtrace.testing.radiograph`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Final, Literal, get_args

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from radtrace.testing.phantom import View
from radtrace.testing.pixel_data import LOSSY_TRANSFER_SYNTAXES, SUPPORTED_TRANSFER_SYNTAXES
from radtrace.testing.radiograph import build_radiograph

__all__ = [
    "DEFAULT_IMAGES",
    "VALID_VARIANTS",
    "BodyPart",
    "ImageSpec",
    "StudySpec",
    "make_image",
    "make_study",
    "write_study",
]

Modality = Literal["CR", "DX"]
DxIntent = Literal["presentation", "processing"]
ViewSource = Literal["both", "view_position", "view_code", "none"]
Photometric = Literal["MONOCHROME1", "MONOCHROME2"]
VoiKind = Literal["window", "sigmoid", "lut", "none"]
BodyPart = Literal["CHEST", "HAND", "KNEE"]
Sex = Literal["F", "M", "O"]

# Runtime checks for the Literal-typed ImageSpec fields, whose values also arrive from the CLI.
_CHOICES: Final[dict[str, tuple[object, ...]]] = {
    "modality": get_args(Modality),
    "dx_intent": get_args(DxIntent),
    "view": get_args(View),
    "view_source": get_args(ViewSource),
    "photometric": get_args(Photometric),
    "voi": (*get_args(VoiKind), None),
    "body_part": get_args(BodyPart),
}
_DATE: Final = re.compile(r"^\d{8}$")
_TIME: Final = re.compile(r"^\d{6}$")


@dataclass(frozen=True)
class StudySpec:
    """Patient and study level content shared by every instance of a synthetic study.

    The defaults are obviously fake; change ``seed`` (or the names and IDs) to get another patient.
    ``study_uid`` is derived deterministically from the patient ID, accession and seed when ``None``.
    """

    patient_name: str = "TEST^PATIENT^ALPHA"
    patient_id: str = "RT0000001"
    birth_date: str = "19670412"
    sex: Sex = "F"
    accession: str = "RTACC000001"
    study_uid: str | None = None
    study_id: str = "1"
    study_date: str = "20250314"
    study_time: str = "093015"
    study_description: str = "XR CHEST PA AND LATERAL"
    referring_physician: str = "TEST^REFERRING^DOCTOR"
    institution: str = "RADTRACE TEST HOSPITAL"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("birth_date", "study_date"):
            value = getattr(self, name)
            if not _DATE.match(value):
                raise ValueError(f"{name} must be a DICOM DA, YYYYMMDD; got {value!r}")
            date(int(value[:4]), int(value[4:6]), int(value[6:]))  # raises on 20250231
        if not _TIME.match(self.study_time):
            raise ValueError(f"study_time must be HHMMSS; got {self.study_time!r}")
        if self.birth_date > self.study_date:
            raise ValueError("birth_date is after study_date")

    @property
    def study_instance_uid(self) -> str:
        """The Study Instance UID: ``study_uid`` if given, else one derived from the spec."""
        if self.study_uid is not None:
            return self.study_uid
        return str(generate_uid(entropy_srcs=["radtrace-study", self.patient_id, self.accession, str(self.seed)]))

    @property
    def patient_age(self) -> str:
        """Patient's Age (0010,1010) at the study date, as an AS value such as ``057Y``."""
        born, seen = self.birth_date, self.study_date
        years = int(seen[:4]) - int(born[:4]) - (1 if seen[4:] < born[4:] else 0)
        return f"{years:03d}Y"


@dataclass(frozen=True)
class ImageSpec:
    """What one synthetic radiograph is and how it is encoded.

    Raises ``ValueError`` at construction for combinations the IODs forbid: a DX image must have an
    identity Modality LUT and unsigned pixels (PS3.3 C.8.11.7), and a DX For Presentation image must
    carry a VOI transformation (window or VOI LUT Sequence).

    ``body_part`` other than CHEST draws a hand or knee instead of a chest (still a valid instance).
    ``view_source`` says where the view is recorded: View Position (0018,5101), View Code Sequence
    (0054,0220), both, or neither (``none``: the view is unknown). The CR IOD has no View Code
    Sequence: a CR image records ``both`` as View Position alone, rejects ``view_code``, and for
    ``none`` keeps View Position (type 2 there) present but empty.
    """

    modality: Modality = "DX"
    dx_intent: DxIntent = "presentation"
    view: View = "PA"
    view_source: ViewSource = "both"
    photometric: Photometric = "MONOCHROME2"
    bits_stored: int = 12
    signed: bool = False
    rows: int = 512
    columns: int = 416
    transfer_syntax: str = ExplicitVRLittleEndian
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    voi: VoiKind | None = None
    """VOI transformation; ``None`` picks ``window``, or ``none`` for DX For Processing."""
    body_part: BodyPart = "CHEST"

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {getattr(self, name)!r}")
        if not 10 <= self.bits_stored <= 16:
            raise ValueError(f"bits_stored must be 10..16 (Bits Allocated is 16); got {self.bits_stored}")
        if self.rows < 32 or self.columns < 32:
            raise ValueError(f"image must be at least 32 x 32; got {self.rows} x {self.columns}")
        if UID(self.transfer_syntax) not in SUPPORTED_TRANSFER_SYNTAXES:
            raise ValueError(f"unsupported transfer syntax {self.transfer_syntax}")
        if self.rescale_slope == 0:
            raise ValueError("rescale_slope must not be 0")
        if self.modality == "DX":
            if (self.rescale_slope, self.rescale_intercept) != (1.0, 0.0):
                raise ValueError("DX images require an identity Modality LUT (slope 1, intercept 0)")
            if self.signed:
                raise ValueError("DX images require Pixel Representation 0 (unsigned)")
            if self.dx_intent == "presentation" and self.voi == "none":
                raise ValueError("DX For Presentation images require a window or a VOI LUT")
            if self.dx_intent == "processing" and self.voi not in (None, "none"):
                raise ValueError("DX For Processing images may not carry a VOI transformation")
        elif self.dx_intent != "presentation":
            raise ValueError("dx_intent applies to DX only; leave it at 'presentation' for CR")
        elif self.view_source == "view_code":
            raise ValueError("the CR IOD has no View Code Sequence; use view_source 'view_position' or 'none'")
        if self.voi == "lut" and (self.signed or (self.rescale_slope, self.rescale_intercept) != (1.0, 0.0)):
            # A VOI LUT's first mapped value is in rescaled units; keep it a plain unsigned index.
            raise ValueError("voi='lut' needs unsigned pixels and an identity Modality LUT")

    @property
    def voi_transform(self) -> VoiKind:
        """The VOI transformation the image carries, ``voi`` with its default resolved."""
        if self.voi is not None:
            return self.voi
        return "none" if self.modality == "DX" and self.dx_intent == "processing" else "window"

    @property
    def sop_class_uid(self) -> UID:
        """The SOP Class this image is stored as."""
        if self.modality == "CR":
            return ComputedRadiographyImageStorage
        if self.dx_intent == "presentation":
            return DigitalXRayImageStorageForPresentation
        return DigitalXRayImageStorageForProcessing

    @property
    def is_lossy(self) -> bool:
        """Whether the transfer syntax loses information."""
        return UID(self.transfer_syntax) in LOSSY_TRANSFER_SYNTAXES


def make_image(study: StudySpec, image: ImageSpec, series_number: int = 1, instance_number: int = 1) -> Dataset:
    """Build one synthetic CR or DX chest instance, with File Meta, ready for
    ``save_as(path, enforce_file_format=True)``.

    The pixels are :func:`radtrace.testing.phantom.chest_phantom` for ``image.view`` and
    ``study.seed`` (or :func:`radtrace.testing.non_chest.extremity_phantom` for a hand or knee), mapped
    to stored values by :func:`radtrace.testing.pixel_data.stored_scale`. UIDs are derived from the
    study UID, the series and instance numbers and ``image``, so repeated calls agree.
    """
    study_uid = study.study_instance_uid
    series_uid = generate_uid(entropy_srcs=[study_uid, "series", str(series_number)])
    instance_uid = generate_uid(
        entropy_srcs=[study_uid, "instance", str(series_number), str(instance_number), repr(image)]
    )
    return build_radiograph(study, image, series_uid, instance_uid, series_number, instance_number)


#: The images of a default study: a PA and a left lateral, DX For Presentation.
DEFAULT_IMAGES: Final[tuple[ImageSpec, ...]] = (ImageSpec(view="PA"), ImageSpec(view="LL"))


def make_study(study: StudySpec | None = None, images: Sequence[ImageSpec] = DEFAULT_IMAGES) -> list[Dataset]:
    """Build the instances of one study, one series per image (numbered from 1)."""
    spec = study if study is not None else StudySpec()
    return [make_image(spec, image, series_number=n, instance_number=1) for n, image in enumerate(images, 1)]


def write_study(datasets: Iterable[Dataset], directory: Path | str) -> list[Path]:
    """Write each dataset as ``<SOP Instance UID>.dcm`` under ``directory`` (created if missing)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = target / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _variants() -> dict[str, ImageSpec]:
    dx = ImageSpec()
    cr = ImageSpec(modality="CR", rescale_slope=0.5, rescale_intercept=-100.0)
    variants: dict[str, ImageSpec] = {
        "dx-pa": dx,
        "dx-ap": replace(dx, view="AP"),
        "dx-ll": replace(dx, view="LL"),
        "dx-rl": replace(dx, view="RL"),
        "dx-pa-view-position-only": replace(dx, view_source="view_position"),
        "dx-pa-view-code-only": replace(dx, view_source="view_code"),
        "dx-ll-view-position-only": replace(dx, view="LL", view_source="view_position"),
        "dx-ll-view-code-only": replace(dx, view="LL", view_source="view_code"),
        "dx-ap-view-unrecorded": replace(dx, view="AP", view_source="none"),
        "dx-pa-monochrome1": replace(dx, photometric="MONOCHROME1"),
        "dx-pa-bits10": replace(dx, bits_stored=10),
        "dx-pa-bits14": replace(dx, bits_stored=14),
        "dx-pa-bits16": replace(dx, bits_stored=16),
        "dx-pa-sigmoid": replace(dx, voi="sigmoid"),
        "dx-pa-voi-lut": replace(dx, voi="lut"),
        "dx-pa-monochrome1-voi-lut": replace(dx, photometric="MONOCHROME1", voi="lut", bits_stored=14),
        "dx-processing-pa": replace(dx, dx_intent="processing", bits_stored=14),
        "dx-processing-pa-monochrome1": replace(dx, dx_intent="processing", photometric="MONOCHROME1"),
        "cr-pa": cr,
        "cr-ap": replace(cr, view="AP"),
        "cr-ll": replace(cr, view="LL"),
        "cr-rl-view-unrecorded": replace(cr, view="RL", view_source="none"),
        "cr-pa-monochrome1": replace(cr, photometric="MONOCHROME1", bits_stored=10),
        "cr-pa-identity-rescale": replace(cr, rescale_slope=1.0, rescale_intercept=0.0),
        "cr-pa-signed": replace(cr, signed=True, rescale_slope=1.0, rescale_intercept=2048.0),
        "cr-pa-sigmoid-bits16": replace(cr, voi="sigmoid", bits_stored=16),
        "cr-pa-no-voi": replace(cr, voi="none"),
    }
    syntaxes = {
        "implicit": ImplicitVRLittleEndian,
        "jpeg-lossless": JPEGLosslessSV1,
        "jpeg-ls": JPEGLSLossless,
        "jpeg-ls-near": JPEGLSNearLossless,
        "j2k": JPEG2000Lossless,
        "j2k-lossy": JPEG2000,
        "rle": RLELossless,
    }
    for name, uid in syntaxes.items():
        variants[f"dx-pa-{name}"] = replace(dx, transfer_syntax=uid)
        variants[f"cr-ll-monochrome1-bits16-{name}"] = replace(
            cr, view="LL", photometric="MONOCHROME1", bits_stored=16, transfer_syntax=uid
        )
        variants[f"dx-processing-ll-bits10-{name}"] = replace(
            dx, dx_intent="processing", view="LL", bits_stored=10, transfer_syntax=uid
        )
    variants["cr-pa-signed-rle"] = replace(variants["cr-pa-signed"], transfer_syntax=RLELossless)
    variants["cr-pa-signed-j2k"] = replace(variants["cr-pa-signed"], transfer_syntax=JPEG2000Lossless)
    return variants


#: Every valid kind of image the factory makes, by name: each modality, view and view source, both
#: photometric interpretations, 10 to 16 bits, each VOI kind, signed CR, and every transfer syntax.
VALID_VARIANTS: Final[dict[str, ImageSpec]] = _variants()
