"""A study's images to what a backend reads: chosen views, prepared pictures and their audit records.

:func:`prepare_study` is pure over datasets (plus their file hashes); :func:`load_study_images` is the thin
file-reading edge used by the CLI and the worker.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ImplicitVRLittleEndian

from radtrace.errors import DicomInputError
from radtrace.model.image import PreparedPicture, prepare_picture
from radtrace.model.reading import SourceImage
from radtrace.model.views import choose_views

__all__ = ["Skipped", "StudyImage", "StudyInput", "load_study_images", "prepare_study", "study_image"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyImage:
    """One received instance: its dataset and the sha256 of its file's bytes."""

    dataset: Dataset
    sha256: str


@dataclass(frozen=True)
class StudyInput:
    """What the model is shown for one study: pictures (frontal first) and their source records."""

    pictures: tuple[PreparedPicture, ...]
    sources: tuple[SourceImage, ...]
    prepare_s: float


@dataclass(frozen=True)
class Skipped:
    """The study cannot be read, for a reason that is not an error (e.g. ``no frontal chest image``)."""

    reason: str


def prepare_study(
    images: Sequence[StudyImage],
    *,
    min_pixels: int,
    max_pixels: int,
    want_lateral: bool = False,
    accept_unknown_view: bool = False,
) -> StudyInput | Skipped:
    """Choose the views and prepare their pictures within the pixel budget.

    Raises:
        DicomInputError: the chosen frontal image cannot be decoded (a lateral that cannot is left out).
    """
    started = time.perf_counter()
    choice = choose_views(
        [image.dataset for image in images], want_lateral=want_lateral, accept_unknown_view=accept_unknown_view
    )
    if choice.frontal is None:
        return Skipped(choice.skip_reason or "no frontal chest image")
    pictures: list[PreparedPicture] = []
    sources: list[SourceImage] = []
    for index, role in ((choice.frontal, "frontal"), (choice.lateral, "lateral")):
        if index is None:
            continue
        image = images[index]
        try:
            picture = prepare_picture(image.dataset, min_pixels=min_pixels, max_pixels=max_pixels)
        except DicomInputError:
            if role == "frontal":
                raise
            logger.warning("the lateral image cannot be prepared; reading the frontal alone", exc_info=True)
            continue
        view = choice.views[index]
        sources.append(
            SourceImage(
                sop_instance_uid=str(image.dataset.get("SOPInstanceUID", "")),
                sop_class_uid=str(image.dataset.get("SOPClassUID", "")),
                sha256=image.sha256,
                view=view.projection,
                rows=picture.source_rows,
                columns=picture.source_columns,
                model_rows=picture.rows,
                model_columns=picture.columns,
                preparation=picture.steps,
                role=role,
                view_flags=choice.flags if role == "frontal" else (),
            )
        )
        pictures.append(picture)
    return StudyInput(pictures=tuple(pictures), sources=tuple(sources), prepare_s=time.perf_counter() - started)


def study_image(data: bytes) -> StudyImage:
    """Parse one file's bytes (Part 10, or a bare legacy dataset without File Meta).

    Raises:
        DicomInputError: not DICOM.
    """
    try:
        dataset = pydicom.dcmread(BytesIO(data))
    except InvalidDicomError:
        try:
            dataset = pydicom.dcmread(BytesIO(data), force=True)
        except Exception as exc:
            raise DicomInputError(f"not a DICOM file: {exc}") from exc
        if "SOPClassUID" not in dataset and "PixelData" not in dataset:
            raise DicomInputError("not a DICOM file") from None
        if "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
            # ACR-NEMA-like legacy layout: pydicom sniffed the encoding; Implicit VR LE is the only one it can be
            dataset.file_meta = FileMetaDataset()
            dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    except Exception as exc:
        raise DicomInputError(f"not a readable DICOM file: {exc}") from exc
    return StudyImage(dataset=dataset, sha256=hashlib.sha256(data).hexdigest())


def load_study_images(path: Path) -> list[StudyImage]:
    """Read a DICOM file, or every DICOM file under a folder (others are ignored), in path order.

    Raises:
        DicomInputError: no such path, or nothing readable as DICOM.
    """
    if path.is_file():
        return [study_image(path.read_bytes())]
    if not path.is_dir():
        raise DicomInputError(f"{path} is neither a file nor a folder")
    images = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            images.append(study_image(file.read_bytes()))
        except DicomInputError:
            logger.debug("skipping %s: not DICOM", file.name)
    if not images:
        raise DicomInputError(f"no DICOM files under {path}")
    return images
