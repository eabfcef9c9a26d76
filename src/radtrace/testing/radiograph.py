"""Attribute-level construction of synthetic CR and DX instances, module by module.

Each ``_*_module`` function fills the attributes of one PS3.3 module; :func:`build_radiograph` picks
the modules of the Computed Radiography Image IOD (PS3.3 A.2) or the Digital X-Ray Image IOD (PS3.3
A.26) and ends with the pixel data, encoded in the requested transfer syntax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

from radtrace.testing.non_chest import extremity_phantom
from radtrace.testing.phantom import View, chest_phantom
from radtrace.testing.pixel_data import StoredScale, encode_pixel_data, stored_pixels, stored_scale

if TYPE_CHECKING:
    from radtrace.testing.studies import ImageSpec, StudySpec

__all__ = [
    "ANATOMIC_REGION_CODES",
    "VIEW_CODES",
    "build_radiograph",
    "coded_entry",
    "patient_and_study_modules",
]

#: View Code Sequence (0054,0220) entries, CID 4010 "DX View": (code value, scheme, meaning).
VIEW_CODES: Final[dict[View, tuple[str, str, str]]] = {
    "PA": ("272479007", "SCT", "postero-anterior"),
    "AP": ("399348003", "SCT", "antero-posterior"),
    "LL": ("399173006", "SCT", "left lateral"),
    "RL": ("399198007", "SCT", "right lateral"),
}
#: Anatomic Region Sequence (0008,2218) entries, CID 4009 "DX Anatomy Imaged", by Body Part Examined.
ANATOMIC_REGION_CODES: Final[dict[str, tuple[str, str, str]]] = {
    "CHEST": ("816094009", "SCT", "Chest"),
    "HAND": ("85562004", "SCT", "Hand"),
    "KNEE": ("72696002", "SCT", "Knee"),
}
# Patient Orientation (0020,0020) in the conventional display orientation of each view.
_PATIENT_ORIENTATION: Final[dict[View, list[str]]] = {
    "PA": ["L", "F"],
    "AP": ["L", "F"],
    "LL": ["P", "F"],
    "RL": ["A", "F"],
}
# Field of view of a 35 x 43 cm detector along the image rows' direction, in mm.
_FIELD_OF_VIEW_MM: Final = 430.0
# Typical technique per view: kVp, mAs, source-image distance in mm (AP: a bedside film).
_TECHNIQUE: Final[dict[View, tuple[int, float, int]]] = {
    "PA": (120, 2.0, 1800),
    "AP": (90, 3.2, 1000),
    "LL": (125, 6.3, 1800),
    "RL": (125, 6.3, 1800),
}


def coded_entry(code: tuple[str, str, str]) -> Dataset:
    """A Code Sequence Macro item (PS3.3 Table 8.8-1) from ``(value, scheme, meaning)``."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _ds(value: float) -> DSfloat:
    return DSfloat(value, auto_format=True)


def build_radiograph(
    study: StudySpec,
    image: ImageSpec,
    series_uid: str,
    instance_uid: str,
    series_number: int,
    instance_number: int,
) -> Dataset:
    """Build the instance ``image`` of ``study`` with the given identifiers (see ``make_image``)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = image.sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # until encode_pixel_data

    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = study.study_time
    ds.SOPClassUID = image.sop_class_uid
    ds.SOPInstanceUID = instance_uid
    patient_and_study_modules(ds, study)
    _series_and_equipment_modules(ds, study, image, series_uid, series_number)
    _general_image_module(ds, study, image, instance_number)
    if image.modality == "DX":
        _dx_modules(ds, image)
    else:
        _cr_modules(ds, image)
    scale = stored_scale(
        image.bits_stored,
        image.signed,
        image.photometric == "MONOCHROME1",
        image.rescale_slope,
        image.rescale_intercept,
    )
    _voi_lut_module(ds, image, scale)
    _image_pixel_module(ds, study, image, scale)
    encode_pixel_data(ds, image.transfer_syntax)
    return ds


def patient_and_study_modules(ds: Dataset, study: StudySpec) -> None:
    """Patient, General Study and Patient Study modules (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2)."""
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.IssuerOfPatientID = "RADTRACE-TEST"
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = study.sex
    ds.PatientAge = study.patient_age
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession
    ds.StudyDescription = study.study_description


def _series_and_equipment_modules(
    ds: Dataset, study: StudySpec, image: ImageSpec, series_uid: str, series_number: int
) -> None:
    ds.Modality = image.modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = study.study_date
    ds.SeriesTime = study.study_time
    ds.SeriesDescription = f"{image.body_part} {image.view}"
    ds.BodyPartExamined = image.body_part
    ds.Manufacturer = "RADTRACE SYNTHETIC"
    ds.InstitutionName = study.institution
    ds.StationName = "XR-BEDSIDE-1" if image.view == "AP" else "XR-ROOM-1"
    ds.ManufacturerModelName = f"Phantom {image.modality}"
    ds.DeviceSerialNumber = "RT-0001"
    ds.SoftwareVersions = "radtrace-phantom 1"


def _general_image_module(ds: Dataset, study: StudySpec, image: ImageSpec, instance_number: int) -> None:
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = _PATIENT_ORIENTATION[image.view]
    ds.ContentDate = ds.AcquisitionDate = study.study_date
    ds.ContentTime = ds.AcquisitionTime = study.study_time
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"  # replaced by "01" when a lossy transfer syntax is applied
    kvp, mas, sid = _TECHNIQUE[image.view]
    ds.KVP = _ds(kvp)
    ds.Exposure = round(mas)
    ds.ExposureInuAs = round(mas * 1000)
    ds.ExposureTime = 10 if image.view in ("PA", "AP") else 25
    ds.XRayTubeCurrent = round(mas * 1000 / ds.ExposureTime)
    ds.DistanceSourceToDetector = _ds(sid)
    ds.DistanceSourceToPatient = _ds(sid - 200)
    spacing = _FIELD_OF_VIEW_MM / image.rows
    ds.ImagerPixelSpacing = [_ds(spacing), _ds(spacing)]


def _view_position(ds: Dataset, image: ImageSpec) -> None:
    """View Position and, for DX, the View Code Sequence (CID 4010), as ``image.view_source`` says."""
    if image.view_source in ("both", "view_position"):
        ds.ViewPosition = image.view
    elif image.modality == "CR":
        ds.ViewPosition = None  # type 2 in the CR Series module: present, empty
    if image.view_source in ("both", "view_code") and image.modality == "DX":
        view = coded_entry(VIEW_CODES[image.view])
        view.ViewModifierCodeSequence = Sequence()  # type 2 inside the item
        ds.ViewCodeSequence = Sequence([view])


def _laterality(image: ImageSpec) -> str:
    """The chest is unpaired ("U"); the synthetic hands and knees are right-sided."""
    return "U" if image.body_part == "CHEST" else "R"


def _dx_modules(ds: Dataset, image: ImageSpec) -> None:
    """DX Series, DX Anatomy Imaged, DX Image, DX Detector and DX Positioning (PS3.3 C.8.11)."""
    intent = "FOR PRESENTATION" if image.dx_intent == "presentation" else "FOR PROCESSING"
    ds.PresentationIntentType = intent
    ds.ImageLaterality = _laterality(image)
    ds.AnatomicRegionSequence = Sequence([coded_entry(ANATOMIC_REGION_CODES[image.body_part])])
    monochrome1 = image.photometric == "MONOCHROME1"
    # Stored values grow with attenuation in MONOCHROME2 (less beam intensity: sign -1).
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
    ds.RescaleIntercept = _ds(0)
    ds.RescaleSlope = _ds(1)
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    ds.DetectorType = "SCINTILLATOR"
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = "RT-DET-01"
    magnification = float(ds.DistanceSourceToDetector) / float(ds.DistanceSourceToPatient)
    ds.EstimatedRadiographicMagnificationFactor = _ds(round(magnification, 4))
    spacing = float(ds.ImagerPixelSpacing[0]) / magnification
    ds.PixelSpacing = [_ds(round(spacing, 6)), _ds(round(spacing, 6))]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "Corrected for the estimated radiographic magnification"
    ds.PositionerType = "NONE" if image.view == "AP" else "COLUMN"  # bedside AP: no positioner
    _view_position(ds, image)
    ds.AcquisitionContextSequence = Sequence()  # Acquisition Context module, type 2


def _cr_modules(ds: Dataset, image: ImageSpec) -> None:
    """CR Series, CR Image and Modality LUT (PS3.3 C.8.1, C.11.1)."""
    _view_position(ds, image)
    if image.body_part != "CHEST":
        ds.Laterality = _laterality(image)  # type 2C in General Series: paired body parts
    ds.PlateID = "RT-PLATE-07"
    ds.CassetteOrientation = "PORTRAIT"
    ds.CassetteSize = "35CMX43CM"
    ds.PhosphorType = "BaFBr"
    ds.Sensitivity = _ds(200)
    ds.PixelSpacing = list(ds.ImagerPixelSpacing)  # uncalibrated, as CR readers report it
    ds.RescaleIntercept = _ds(image.rescale_intercept)
    ds.RescaleSlope = _ds(image.rescale_slope)
    ds.RescaleType = "US"


def _voi_lut_module(ds: Dataset, image: ImageSpec, scale: StoredScale) -> None:
    """VOI LUT module (PS3.3 C.11.2): a window, a sigmoid window, or an explicit linear VOI LUT."""
    if image.voi_transform in ("window", "sigmoid"):
        ds.WindowCenter = _ds(scale.window_center)
        ds.WindowWidth = _ds(scale.window_width)
        ds.WindowCenterWidthExplanation = "NORMAL"
        ds.VOILUTFunction = "LINEAR" if image.voi_transform == "window" else "SIGMOID"
    elif image.voi_transform == "lut":
        # Validated by ImageSpec: identity rescale and unsigned pixels, so inputs are stored values.
        first, last = sorted((scale.air, scale.bone))
        entries = last - first + 1
        item = Dataset()
        item.LUTDescriptor = [entries if entries < 65536 else 0, first, 16]
        item.LUTExplanation = "LINEAR OVER THE EXPOSED RANGE"
        item.LUTData = np.rint(np.linspace(0.0, 65535.0, entries)).astype(np.uint16).tolist()
        item["LUTData"].VR = "US"
        item["LUTDescriptor"].VR = "US"
        ds.VOILUTSequence = Sequence([item])


def _image_pixel_module(ds: Dataset, study: StudySpec, image: ImageSpec, scale: StoredScale) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = image.photometric
    ds.Rows = image.rows
    ds.Columns = image.columns
    ds.BitsAllocated = 16
    ds.BitsStored = image.bits_stored
    ds.HighBit = image.bits_stored - 1
    ds.PixelRepresentation = 1 if image.signed else 0
    if image.body_part == "CHEST":
        attenuation = chest_phantom(image.rows, image.columns, image.view, study.seed)
    else:
        attenuation = extremity_phantom(image.rows, image.columns, image.body_part, study.seed)
    pixels = stored_pixels(attenuation, scale, image.signed)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
