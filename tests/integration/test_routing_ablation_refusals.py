"""The ablation harness refuses what the real listener refuses at receipt, and reads what routing queues.

Before, ``tests/ablation_support.py`` ran ``read_header`` only, never the C-STORE handler's pixel-budget check
(``dicom_listener.pixel_budget.check_file``): an instance far larger than its image, an image over
``listener.max_image_pixels`` or a codestream that contradicts Rows/Columns was recorded and read by the worker in
the ablation suites, where the listener refuses it (found by the real-input exploration, notes/report-realinput.md,
open 2). Its reader also ignored ``listener.routing.chest_body_parts`` (open 1).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, generate_uid

from ablation_support import AblationHarness, running_harness
from radtrace.dicom_listener.pixel_budget import instance_byte_limit
from radtrace.testing.ablation import load_film

pytestmark = pytest.mark.integration

FUJI = Path(__file__).resolve().parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"
MAX_IMAGE_PIXELS = 440 * 440 * 2  # the Fuji film (440 x 440) fits; an instance over ~65 MiB does not
SITE_WORD = "BRUSTKORB"


@pytest.fixture(scope="module")
def harness(tiny_model_dir: Path) -> Iterator[AblationHarness]:
    listener = {
        "max_image_pixels": MAX_IMAGE_PIXELS,
        "routing": {"chest_body_parts": ["CHEST", "THORAX", "LUNG", "RIBS", "TORAX", "PECHO", SITE_WORD]},
    }
    with running_harness(tiny_model_dir, "radtrace-routing-", listener=listener) as made:
        yield made


def _film(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        [ds] = load_film(FUJI)
        ds.PixelData = ds.pixel_array.tobytes()
        ds["PixelData"].VR = "OW"
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(ds, keyword, generate_uid(entropy_srcs=[name, keyword]))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _reread(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def test_an_instance_far_larger_than_its_image_is_refused_as_the_listener_refuses_it(harness: AblationHarness) -> None:
    ds = _film("padded")
    ds.add_new(0x00091010, "LO", "RADTRACE TEST")  # private creator
    padding = instance_byte_limit(MAX_IMAGE_PIXELS) + 1 - len(ds.PixelData)
    ds.add_new(0x00091000, "OB", bytes(padding))
    outcome = harness.run([ds])
    assert outcome.kind == "refused", outcome
    assert outcome.detail.startswith("(7FE0,0010) Pixel Data: the instance is"), outcome
    assert outcome.problems == []


def test_a_codestream_contradicting_rows_and_columns_is_refused_as_the_listener_refuses_it(
    harness: AblationHarness,
) -> None:
    ds = _film("mismatch")
    ds.compress(JPEG2000Lossless)
    ds = _reread(ds)
    ds.Rows = ds.Columns = 400  # the codestream says 440 x 440
    outcome = harness.run([ds])
    assert outcome.kind == "refused", outcome
    assert outcome.detail == "(7FE0,0010) Pixel Data: codestream 440x440, header 400x400", outcome


def test_a_film_with_a_site_configured_chest_word_is_read_to_a_draft(harness: AblationHarness) -> None:
    ds = _film("site-word")
    ds.BodyPartExamined = SITE_WORD
    outcome = harness.run([ds])
    assert outcome.kind == "draft", outcome
    assert outcome.problems == []
