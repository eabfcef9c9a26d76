"""The SR draft's measurement groups (PS3.16 TID 1500 "Imaging Measurements"), and the content items the SR is built of.

:class:`MeasurementGroups` builds one group per finding of a reading, present findings first, then uncertain, then
absent: TID 1501 (no box) or TID 1410 (one per box, the box as a closed SCOORD POLYLINE in the source image's pixels),
each with the coded finding (Finding Type), its presence (Present / Absent / Indeterminate), the model's confidence
when known, device types for support devices, TID 4019 algorithm identification, and the finding's evidence (the
sentences the review console shows, :func:`radtrace.model.evidence.finding_evidence`) once per finding: in its first
box's group, each later box's group naming that group's Tracking Identifier (``RT-EVID-IN``). A reading without
findings gets one group saying nothing was assessed (TID 1500 needs one).

:func:`concept`, :func:`text_item` and :func:`safe_text` are the content-item helpers :mod:`radtrace.reporting.sr`
builds the rest of the document with.
"""

from __future__ import annotations

from typing import Any, Final

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radtrace.model.evidence import finding_evidence
from radtrace.model.reading import BoundingBox, Finding, FindingStatus, Reading
from radtrace.reporting import codes
from radtrace.reporting.codes import Code
from radtrace.reporting.text import DicomTextVR, dicom_text, draft_text

__all__ = ["MeasurementGroups", "box_outline", "concept", "safe_text", "text_item"]

_NO_UNITS: Final = hd.sr.CodedConcept("1", "UCUM", "no units")
_PRESENCE_VALUE: Final = {
    FindingStatus.PRESENT: codes.PRESENT,
    FindingStatus.ABSENT: codes.ABSENT,
    FindingStatus.UNCERTAIN: codes.INDETERMINATE,
}
_READING_ORDER: Final = {FindingStatus.PRESENT: 0, FindingStatus.UNCERTAIN: 1, FindingStatus.ABSENT: 2}
_TRACKING_IDENTIFIER: Final = "112039"  # DCM "Tracking Identifier" (TID 1410, 1501)


def concept(code: Code) -> hd.sr.CodedConcept:
    """``code`` as highdicom's coded concept."""
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def text_item(code: Code, value: str) -> hd.sr.TextContentItem:
    """A TEXT content item (CONTAINS) named by ``code``."""
    # Trailing spaces in TEXT are not significant (and are stripped on read): drop them up front so the
    # document reads back exactly as written. The value is already safe for its VR (see safe_text).
    return hd.sr.TextContentItem(
        name=concept(code), value=value.rstrip(), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def safe_text(value: str, vr: DicomTextVR, changed: list[bool]) -> str:
    """``value`` in ``vr``; the model's text (UT) by the rule of every draft first (:func:`draft_text`)."""
    drafted = draft_text(value) if vr == "UT" else None
    safe = dicom_text(drafted.text if drafted else value, vr)
    if safe.changed or (drafted and drafted.changed):
        changed.append(True)
    return safe.text


def box_outline(box: BoundingBox, source: Dataset) -> NDArray[np.float32]:
    """``box`` as the closed polyline the SR's SCOORD and the GSPS draw (last point = first), in ``source``'s pixels
    and on it: each coordinate clipped to 0 .. Columns (x) or 0 .. Rows (y), a NaN taken as 0. The model's boxes
    are clipped so already (radtrace.model.image.to_source_pixels); a stored reading's box off its image (a corner
    below 0, or past float32's range) made the GSPS raise highdicom's ValueError instead of a ReportError, and the
    SR's SCOORD hold infinity."""

    def on(value: float, limit: int) -> float:
        return min(max(value, 0.0), float(limit)) if value == value else 0.0  # NaN != NaN

    columns, rows = int(source.get("Columns", 0) or 0), int(source.get("Rows", 0) or 0)
    x0, x1 = on(box.x_min, columns), on(box.x_max, columns)
    y0, y1 = on(box.y_min, rows), on(box.y_max, rows)
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)], dtype=np.float32)


class MeasurementGroups:
    """Builds the measurement groups of one reading (one per finding, one per box): ``images`` are the checked source
    references by SOP Instance UID (:func:`~radtrace.reporting.sr_header.checked_references`), ``sop_uid`` the SR's
    (tracking UIDs derive from it), ``algorithm`` the TID 4019 identification every group carries."""

    def __init__(
        self, reading: Reading, images: dict[str, Dataset], sop_uid: str, algorithm: hd.sr.AlgorithmIdentification
    ) -> None:
        self.reading = reading
        self.images = images
        self.sop_uid = sop_uid
        self.sanitised: list[bool] = []  # a model label had to change to fit its LO
        self.algorithm = algorithm
        self.shown = [images[image.sop_instance_uid] for image in reading.images]

    def build(self) -> list[Any]:
        groups: list[Any] = []
        # Present findings first, then uncertain, then absent (a radiologist's reading order); a finding keeps
        # its index in the reading, so its tracking UIDs do not depend on the order.
        numbered = sorted(enumerate(self.reading.findings, 1), key=lambda pair: _READING_ORDER[pair[1].status])
        for index, finding in numbered:
            groups += self._finding_groups(index, finding)
        if not groups:
            # TID 1500 needs one group; a refused or unparsed reading says that nothing was assessed.
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=self._tracking("no findings", 0, 0),
                    finding_type=concept(codes.NOT_ASSESSED),
                    algorithm_id=self.algorithm,
                    source_images=self._source_images(),
                )
            )
        return groups

    def _tracking(self, label: str, index: int, box: int) -> hd.sr.TrackingIdentifier:
        uid = generate_uid(entropy_srcs=[self.sop_uid, "finding", str(index), str(box)])
        identifier = f"{label} #{box}" if box else label
        return hd.sr.TrackingIdentifier(
            uid=str(uid), identifier=safe_text(identifier, "LO", self.sanitised) or "finding"
        )

    def _source_images(self) -> list[hd.sr.SourceImageForMeasurementGroup]:
        return [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in self.shown]

    def _evaluations(self, finding: Finding) -> list[hd.sr.QualitativeEvaluation]:
        evaluations = [hd.sr.QualitativeEvaluation(concept(codes.PRESENCE), concept(_PRESENCE_VALUE[finding.status]))]
        if finding.label.casefold() == "support devices" and finding.status is not FindingStatus.ABSENT:
            device_text = finding.evidence or " ".join(
                step.text for step in self.reading.reasoning if step.section == "devices"
            )
            evaluations += [
                hd.sr.QualitativeEvaluation(concept(codes.DEVICE), concept(device))
                for device in codes.device_codes(device_text)
            ]
        return evaluations

    def _measurements(self, finding: Finding) -> list[hd.sr.Measurement]:
        if finding.confidence is None:
            return []
        return [
            hd.sr.Measurement(
                name=concept(codes.CONFIDENCE),
                value=round(finding.confidence, 6),
                unit=_NO_UNITS,
            )
        ]

    def _finding_groups(self, index: int, finding: Finding) -> list[Any]:
        coded = concept(codes.finding_code(finding.label).code)
        if not finding.boxes:
            return [
                self._with_evidence(
                    hd.sr.MeasurementsAndQualitativeEvaluations(
                        tracking_identifier=self._tracking(finding.label, index, 0),
                        finding_type=coded,
                        algorithm_id=self.algorithm,
                        qualitative_evaluations=self._evaluations(finding),
                        measurements=self._measurements(finding),
                        source_images=self._source_images(),
                    ),
                    finding,
                )
            ]
        groups: list[Any] = []
        for number, box in enumerate(finding.boxes, 1):
            source = self.images[box.sop_instance_uid]
            region = hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=box_outline(box, source),
                source_image=hd.sr.SourceImageForRegion.from_source_image(source),
            )
            group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=self._tracking(finding.label, index, number),
                referenced_region=region,
                finding_type=coded,
                algorithm_id=self.algorithm,
                qualitative_evaluations=self._evaluations(finding),
                measurements=self._measurements(finding),
            )
            groups.append(self._with_evidence(group, finding) if number == 1 else self._evidence_in(group, groups[0]))
        return groups

    @staticmethod
    def _evidence_in(group: Any, first: Any) -> Any:
        """``group`` (a finding's second or later box) naming the group of its first box, which holds the finding's
        evidence (when it has any): written once per finding, where one TEXT item per sentence in every box's
        group repeated six sentences for each box."""
        held = [i for i in first[0].ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == codes.EVIDENCE.value]
        if held:
            tracking = next(
                str(item.TextValue)
                for item in first[0].ContentSequence
                if item.ConceptNameCodeSequence[0].CodeValue == _TRACKING_IDENTIFIER
            )
            group[0].ContentSequence.append(text_item(codes.EVIDENCE_IN, tracking))
            group[0].ContinuityOfContent = "SEPARATE"
        return group

    def _with_evidence(self, group: Any, finding: Finding) -> Any:
        """``group`` with a TEXT item per evidence sentence of ``finding``: the sentences the review console shows
        for it (:func:`radtrace.model.evidence.finding_evidence`), by the rule of every draft's model text."""
        texts = [safe_text(sentence, "UT", []) for sentence in finding_evidence(self.reading, finding)]
        # (a change by the text rule changed the reasoning too: flagged in _narrative)
        for text in texts:
            if text.strip():
                group[0].ContentSequence.append(text_item(codes.EVIDENCE, text))
        if any(text.strip() for text in texts):
            # SEPARATE, as the document's: renderers label each sentence ("Model evidence: ...") instead of running
            # it on after the image reference as one unlabelled paragraph
            group[0].ContinuityOfContent = "SEPARATE"
        return group
