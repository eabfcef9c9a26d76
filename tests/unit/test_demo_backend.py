"""The demo backend: recorded model texts for sites without weights, refused unless asked for, and every
draft it leads to marked as a demo (DEMO_MARK) in the SR, the HL7, the FHIR Bundle and the audit."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from radtrace.config import load_settings
from radtrace.errors import ConfigError, ModelLoadError
from radtrace.model.backends.demo import DEMO_MARK, DemoBackend, demo_texts
from radtrace.model.reader import StudyReader
from radtrace.model.reading import FindingStatus, Reading
from radtrace.model.study import study_image
from radtrace.reporting.drafts import build_drafts
from radtrace.testing.studies import ImageSpec, StudySpec, make_study

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parents[1] / "fixtures" / "model_outputs"


def _dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_demo_backend_is_refused_unless_demo_is_set() -> None:
    with pytest.raises(ConfigError, match="demo = true"):
        load_settings(model={"backend": "demo"})
    with pytest.raises(ConfigError, match="backend 'demo'"):
        load_settings(model={"demo": True})
    with pytest.raises(ModelLoadError, match=r"model\.demo = true"):
        DemoBackend(enabled=False)


def test_the_shipped_texts_are_the_parser_fixtures() -> None:
    shipped = demo_texts("nv-reason-cxr")
    assert len(shipped) >= 3
    fixtures = {path.read_text(encoding="utf-8") for path in FIXTURES.glob("nv_*.txt")}
    assert set(shipped) <= fixtures  # copies, kept in the package because production cannot read tests/


def test_a_demo_reading_looks_real_and_every_draft_says_it_is_a_demo(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, model={"backend": "demo", "demo": True})
    datasets = make_study(StudySpec(seed=11), [ImageSpec(view="PA", rows=128, columns=128)])
    reading = StudyReader(settings.model, data_dir=tmp_path).read([study_image(_dicom_bytes(ds)) for ds in datasets])
    assert isinstance(reading, Reading)
    assert reading.findings  # a real-looking reading: findings, an impression, a reasoning in sections
    assert all(f.status in set(FindingStatus) for f in reading.findings)
    assert len(reading.reasoning) >= 5
    assert reading.impression is not None
    assert reading.impression.startswith(DEMO_MARK)
    assert reading.raw_text.startswith(DEMO_MARK)  # what the audit records as raw_output
    assert reading.identity.model_name.startswith(DEMO_MARK)  # the audit's model_name
    assert reading.identity.backend == "demo"

    drafts = build_drafts(reading, datasets, settings=settings.reporting, revision=1)
    sr = pydicom.dcmread(io.BytesIO(drafts.sr))
    texts = [str(item.TextValue) for item in _items(sr) if item.ValueType == "TEXT"]
    assert any(text.startswith(DEMO_MARK) for text in texts)
    assert drafts.hl7 is not None
    assert DEMO_MARK in drafts.hl7.decode("utf-8")
    assert drafts.fhir is not None
    assert DEMO_MARK in drafts.fhir.decode("utf-8")


def _items(node: pydicom.Dataset) -> list[pydicom.Dataset]:
    found = []
    for item in node.get("ContentSequence", []):
        found.append(item)
        found.extend(_items(item))
    return found
