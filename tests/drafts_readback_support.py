"""The three drafts of a reading read back as a receiver reads them: the SR checked by dciodvfy and parsed by pydicom,
the ORU validated by hl7apy (STRICT) and its text OBX joined and unescaped, the FHIR Bundle's Patient and
DiagnosticReport. The output tests (every text that reaches an output, attribute ablation) compare what the three
say; each used to parse them with its own copy of this."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import dcmread
from pydicom.dataset import Dataset

from radtrace.reporting.hl7 import unescape
from tests_support import dciodvfy_lines

if TYPE_CHECKING:
    from datetime import datetime

    from radtrace.reporting.dispatch.outbox import ReportFiles


@dataclass(frozen=True)
class ReadBack:
    """What the drafts say, parsed."""

    sr: Dataset
    sr_errors: list[str]  # dciodvfy's "Error" lines for the SR
    sr_texts: dict[str, str]  # TEXT content items by concept code value (the last one of a code wins)
    hl7: str
    segments: list[list[str]]  # the ORU's segments, split on '|' (values still escaped)
    oru_texts: dict[str, str]  # OBX TX values by OBX-3 identifier, unescaped and joined in order
    fhir_patient: dict[str, Any]
    fhir_report: dict[str, Any]

    def segment(self, name: str) -> list[str]:
        """The first segment called ``name`` (PID, ORC, OBR …)."""
        return next(parts for parts in self.segments if parts[0] == name)


def one_image_drafts(source: Dataset, created_at: datetime, **reading_fields: Any) -> ReportFiles:
    """The drafts (revision 1, the default reporting settings) of a reading of the one image ``source``, shown as it
    was read: :func:`reporting_support.reading` with ``reading_fields`` (impression, findings, identity …)."""
    from radtrace.config import ReportingSettings
    from radtrace.reporting.drafts import build_drafts
    from reporting_support import reading, shown

    return build_drafts(
        reading([source], images=shown([source]), **reading_fields),
        [source],
        settings=ReportingSettings(),
        revision=1,
        created_at=created_at,
    )


def read_back(files: ReportFiles, tmp_path: Path) -> ReadBack:
    """``files`` parsed; the SR is written to ``tmp_path / "sr.dcm"`` for dciodvfy."""
    assert files.hl7 is not None
    assert files.fhir is not None
    (tmp_path / "sr.dcm").write_bytes(files.sr)
    sr = dcmread(io.BytesIO(files.sr))
    sr_texts: dict[str, str] = {}

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "TEXT":
                sr_texts[item.ConceptNameCodeSequence[0].CodeValue] = item.TextValue
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    hl7 = files.hl7.decode("utf-8")
    parse_message(hl7, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    segments = [segment.split("|") for segment in hl7.split("\r") if segment]
    oru_texts: dict[str, str] = {}
    for parts in segments:
        if parts[0] == "OBX" and parts[2] == "TX":
            key = parts[3].split("^")[0]
            oru_texts[key] = oru_texts.get(key, "") + unescape(parts[5])
    resources = [entry["resource"] for entry in json.loads(files.fhir)["entry"]]
    [patient] = [r for r in resources if r["resourceType"] == "Patient"]
    [report] = [r for r in resources if r["resourceType"] == "DiagnosticReport"]
    return ReadBack(
        sr=sr,
        sr_errors=[line for line in dciodvfy_lines(tmp_path / "sr.dcm") if "Error" in line],
        sr_texts=sr_texts,
        hl7=hl7,
        segments=segments,
        oru_texts=oru_texts,
        fhir_patient=patient,
        fhir_report=report,
    )
