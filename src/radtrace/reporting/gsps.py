"""Optional Grayscale Softcopy Presentation State drawing the model's boxes on their source images.

Viewers that do not render SR SCOORDs still show a GSPS: one closed POLYLINE per box (image pixel
units) with a text label "<finding> (AI draft)", on a graphic layer ``AI_DRAFT`` whose description
says the content is unverified. Absent findings draw nothing. UIDs follow the SR's: fixed by (study,
revision, model), in a series of their own. The VOI and modality LUTs are those of the source images.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radtrace.config import ReportingSettings
from radtrace.errors import ReportError
from radtrace.model.reading import BoundingBox, FindingStatus, Reading
from radtrace.reporting import codes
from radtrace.reporting.sr import MANUFACTURER, UTF8, draft_identity, model_key
from radtrace.reporting.sr_groups import box_outline
from radtrace.reporting.sr_header import checked_references, lo_value, with_checked_header
from radtrace.reporting.text import dicom_text

__all__ = ["GSPS_SERIES_DESCRIPTION", "build_gsps"]

GSPS_SERIES_DESCRIPTION: Final = "AI DRAFT BOXES - NOT VERIFIED - radtrace"
GSPS_SERIES_NUMBER: Final = 9902
LAYER: Final = "AI_DRAFT"


def build_gsps(
    reading: Reading,
    sources: Sequence[Dataset],
    *,
    settings: ReportingSettings,
    revision: int,
    content_datetime: datetime | None = None,
) -> hd.pr.GrayscaleSoftcopyPresentationState | None:
    """The presentation state drawing every box of a present or uncertain finding; None if there are none."""
    images = {str(ds.SOPInstanceUID): ds for ds in sources}
    boxes: list[tuple[str, BoundingBox]] = [
        (finding.label, box)
        for finding in reading.findings
        if finding.status is not FindingStatus.ABSENT
        for box in finding.boxes
    ]
    if not boxes:
        return None
    missing = {box.sop_instance_uid for _, box in boxes} - set(images)
    if missing:
        raise ReportError(f"{len(missing)} image(s) with boxes are not among the source datasets")
    # Patient, study and series as the SR has them: checked, never the source's raw header (real films lack
    # Type 2 attributes highdicom reads, or hold values it refuses).
    first_shown = images.get(reading.images[0].sop_instance_uid) or images[boxes[0][1].sop_instance_uid]
    references, _ = checked_references(
        first_shown, [images[uid] for uid in dict.fromkeys(b.sop_instance_uid for _, b in boxes)]
    )
    images = {uid: with_checked_header(images[uid], reference) for uid, reference in references.items()}
    layer = hd.pr.GraphicLayer(layer_name=LAYER, order=1, description="radtrace AI draft findings, not verified")
    by_image: dict[str, list[tuple[str, BoundingBox]]] = {}
    for label, box in boxes:
        by_image.setdefault(box.sop_instance_uid, []).append((label, box))
    annotations = []
    for uid, drawn in by_image.items():
        graphics, texts = [], []
        for label, box in drawn:
            outline = box_outline(box, images[uid])
            graphics.append(
                hd.pr.GraphicObject(
                    graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                    graphic_data=outline,
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                )
            )
            texts.append(
                hd.pr.TextObject(
                    text_value=dicom_text(f"{codes.finding_code(label).label} (AI draft)", "LO").text,
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                    anchor_point=(float(outline[0][0]), float(outline[0][1])),
                    anchor_point_visible=False,
                )
            )
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[images[uid]], graphic_layer=layer, graphic_objects=graphics, text_objects=texts
            )
        )
    study_uid = str(images[boxes[0][1].sop_instance_uid].StudyInstanceUID)
    key = list(model_key(reading.identity))
    when = (content_datetime or datetime.now(UTC)).astimezone(UTC)
    identity = draft_identity(reading.identity)  # the names every draft gives the model, LO-safe (its digest too)
    try:
        gsps = hd.pr.GrayscaleSoftcopyPresentationState(
            referenced_images=[images[uid] for uid in by_image],
            series_instance_uid=str(generate_uid(entropy_srcs=["radtrace-gsps-series", study_uid, *key])),
            series_number=GSPS_SERIES_NUMBER,
            sop_instance_uid=str(generate_uid(entropy_srcs=["radtrace-gsps", study_uid, str(revision), *key])),
            instance_number=revision,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=lo_value(identity.model_name) or MANUFACTURER,
            software_versions=f"radtrace codes {codes.CODE_TABLE_VERSION}",
            device_serial_number=(identity.weights_sha256 or identity.revision or "unknown")[:64],
            content_label=LAYER,
            content_description="AI draft boxes, not verified by a radiologist",
            graphic_annotations=annotations,
            graphic_layers=[layer],
            institution_name=lo_value(settings.institution_name),
            series_description=GSPS_SERIES_DESCRIPTION,
            specific_character_set=UTF8,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise ReportError(f"GSPS could not be built: {exc}") from exc
    # highdicom stamps these with the wall clock; the given time makes a rebuild byte-identical.
    for keyword, value in (
        ("InstanceCreationDate", when.strftime("%Y%m%d")),
        ("InstanceCreationTime", when.strftime("%H%M%S")),
        ("PresentationCreationDate", when.strftime("%Y%m%d")),
        ("PresentationCreationTime", when.strftime("%H%M%S")),
    ):
        if keyword in gsps:
            gsps[keyword].value = value
    # General Series Laterality is Type 2C on a paired body part: naming the (unpaired) body part lets
    # validators see that it is not required. radtrace reads chest films only; sources say CHEST, or
    # nothing, or a term that is not a defined one (THORAX), which a validator cannot judge.
    gsps.BodyPartExamined = "CHEST"
    for item in gsps.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S+0000")
    return gsps
