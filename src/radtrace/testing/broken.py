"""Instances a chest X-ray service must reject or decline, each broken in one stated way.

Some are valid DICOM that is wrong for the service (a missing Study Instance UID, a knee, a CT slice);
those exist as datasets, :func:`broken_dataset`. The rest are broken at the byte level (truncated
Pixel Data, a wrong explicit VR, not DICOM at all) and exist only as file content,
:func:`broken_instance`, which returns bytes for every kind.
"""

from __future__ import annotations

import io
from dataclasses import replace
from enum import StrEnum
from typing import Final

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from radtrace.testing.non_chest import axial_chest_ct
from radtrace.testing.phantom import chest_phantom
from radtrace.testing.radiograph import patient_and_study_modules
from radtrace.testing.studies import ImageSpec, StudySpec, make_image

__all__ = ["DATASET_KINDS", "BrokenKind", "broken_dataset", "broken_instance"]


class BrokenKind(StrEnum):
    """How an instance is broken."""

    #: Valid DX image without (0020,000D) Study Instance UID, a type 1 attribute.
    MISSING_STUDY_UID = "missing-study-uid"
    #: File cut in the middle of the (7FE0,0010) Pixel Data value.
    TRUNCATED_PIXEL_DATA = "truncated-pixel-data"
    #: (0028,0010) Rows (US in the data dictionary) written with explicit VR UL and a 2-byte value.
    WRONG_VR = "wrong-vr"
    #: Valid DX image of a right knee: Body Part Examined KNEE, Anatomic Region SCT 72696002.
    NON_CHEST_BODY_PART = "non-chest-body-part"
    #: Valid CT Image Storage instance, an axial slice through the chest.
    CT_IMAGE = "ct-image"
    #: A PNG picture of a chest phantom: no DICOM preamble, no "DICM" prefix.
    NOT_DICOM = "not-dicom"


#: The kinds :func:`broken_dataset` can build; the others exist only as bytes.
DATASET_KINDS: Final = frozenset({BrokenKind.MISSING_STUDY_UID, BrokenKind.NON_CHEST_BODY_PART, BrokenKind.CT_IMAGE})

_PIXEL_DATA_TAG: Final = b"\xe0\x7f\x10\x00"
_ROWS_US: Final = b"\x28\x00\x10\x00US\x02\x00"


def broken_dataset(kind: BrokenKind, study: StudySpec | None = None, image: ImageSpec | None = None) -> Dataset:
    """Build the dataset for a kind in :data:`DATASET_KINDS`; ``ValueError`` for byte-level kinds.

    ``image`` (default: a DX PA) is the starting point for the radiograph kinds; the CT slice takes
    only its size from it.
    """
    spec = study if study is not None else StudySpec()
    base = image if image is not None else ImageSpec()
    if kind is BrokenKind.MISSING_STUDY_UID:
        ds = make_image(spec, base)
        del ds.StudyInstanceUID
        return ds
    if kind is BrokenKind.NON_CHEST_BODY_PART:
        return make_image(replace(spec, study_description="XR KNEE 2 VIEWS RIGHT"), replace(base, body_part="KNEE"))
    if kind is BrokenKind.CT_IMAGE:
        ct_study = replace(spec, study_description="CT CHEST WITHOUT CONTRAST")
        return _ct_slice(ct_study, base.rows, base.rows)  # CT slices are square
    raise ValueError(f"{kind} is broken at the byte level; use broken_instance()")


def broken_instance(kind: BrokenKind, study: StudySpec | None = None, image: ImageSpec | None = None) -> bytes:
    """Return the file content of a broken instance of ``kind``.

    For the byte-level kinds ``image`` should keep its default Explicit VR Little Endian encoding:
    the damage is applied to that encoding.
    """
    spec = study if study is not None else StudySpec()
    base = image if image is not None else ImageSpec()
    if kind in DATASET_KINDS:
        return _file_bytes(broken_dataset(kind, spec, base))
    if kind is BrokenKind.NOT_DICOM:
        return _png_bytes(spec, base)
    data = _file_bytes(make_image(spec, base))
    if kind is BrokenKind.TRUNCATED_PIXEL_DATA:
        start = data.rfind(_PIXEL_DATA_TAG)
        if start < 0:
            raise RuntimeError("no Pixel Data element found to truncate")
        value_start = start + 12  # tag, VR "OW"/"OB", two reserved bytes, 4-byte length
        return data[: value_start + (len(data) - value_start) // 2]
    if kind is BrokenKind.WRONG_VR:
        position = data.find(_ROWS_US, 132)  # after the preamble and "DICM"
        if position < 0:
            raise RuntimeError("no explicit VR Rows element found to damage")
        return data[: position + 4] + b"UL" + data[position + 6 :]
    raise ValueError(f"unknown broken kind {kind!r}")


def _file_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _png_bytes(study: StudySpec, image: ImageSpec) -> bytes:
    picture = (chest_phantom(image.rows, image.columns, image.view, study.seed) * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def _ct_slice(study: StudySpec, rows: int, columns: int) -> Dataset:
    """A CT Image Storage instance (PS3.3 A.3): one axial slice, 12 bits, HU = stored - 1024."""
    study_uid = study.study_instance_uid
    instance_uid = generate_uid(entropy_srcs=[study_uid, "ct-instance"])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = instance_uid
    patient_and_study_modules(ds, study)
    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study_uid, "ct-series"])
    ds.SeriesNumber = 1
    ds.SeriesDescription = "CHEST AXIAL 5MM"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "ct-frame-of-reference"])
    ds.PositionReferenceIndicator = None
    ds.Manufacturer = "RADTRACE SYNTHETIC"
    ds.ManufacturerModelName = "Phantom CT"
    ds.InstitutionName = study.institution
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.ContentDate = ds.AcquisitionDate = study.study_date
    ds.ContentTime = ds.AcquisitionTime = study.study_time
    spacing = 350.0 / columns
    ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [f"{-spacing * (columns - 1) / 2:.6g}", f"{-spacing * (rows - 1) / 2:.6g}", -150]
    ds.SliceThickness = 5
    ds.SliceLocation = -150
    ds.KVP = 120
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    ds.WindowCenterWidthExplanation = ["MEDIASTINUM", "LUNG"]
    hounsfield = axial_chest_ct(rows, columns, study.seed)
    ds.PixelData = (hounsfield.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    return ds
