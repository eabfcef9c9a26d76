"""DICOM pixels to generated text: the tiny model reads factory studies and a real film, offline.

The display conversion here is deliberately plain pydicom (modality LUT, VOI, MONOCHROME1 inversion):
it proves the harness end to end. radtrace's own image preparation belongs to the model package.
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from radtrace.model.loading import LoadedVLM
from radtrace.testing.phantom import render_chest
from radtrace.testing.studies import VALID_VARIANTS, StudySpec, make_image

pytestmark = pytest.mark.unit

PROMPT = "Find abnormalities and support devices."
REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
NIH_FILM = REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
FUJI_FILM = REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"


def displayed(ds: Dataset) -> np.ndarray:
    """Stored pixels to a [0, 1] picture with bright bone, whatever the photometric interpretation."""
    modality = apply_modality_lut(ds.pixel_array, ds)
    if "VOILUTSequence" in ds:  # an explicit LUT is indexed by integers; pydicom warns on floats
        modality = np.rint(modality).astype(np.int64)
    values = apply_voi_lut(modality, ds).astype(np.float64)
    picture = (values - values.min()) / max(float(np.ptp(values)), 1e-9)
    return 1.0 - picture if ds.PhotometricInterpretation == "MONOCHROME1" else picture


def generate(vlm: LoadedVLM, picture: np.ndarray, max_new_tokens: int = 24) -> tuple[str, int]:
    """Greedy generation from the model's own prompt with the image first; (text, image tokens)."""
    import torch

    image = Image.fromarray(np.round(picture * 255).astype(np.uint8)).convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = vlm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = vlm.processor(images=[image], text=[text], return_tensors="pt")
    with torch.inference_mode():
        output = vlm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    prompt_length = inputs["input_ids"].shape[1]
    image_tokens = int((inputs["input_ids"] == vlm.processor.image_token_id).sum())
    assert output.shape[1] > prompt_length, "the model generated nothing"
    return vlm.processor.decode(output[0, prompt_length:]), image_tokens


@pytest.mark.parametrize("variant", ["dx-pa", "cr-pa-monochrome1", "dx-pa-jpeg-ls", "dx-pa-monochrome1-voi-lut"])
def test_factory_image_through_the_tiny_model(tiny_vlm: LoadedVLM, variant: str) -> None:
    spec = VALID_VARIANTS[variant]
    ds = pydicom.dcmread(_written(make_image(StudySpec(seed=3), spec)))
    picture = displayed(ds)
    # the picture fed to the model is a chest, the right way round: lungs darker than the mediastinum
    masks = render_chest(spec.rows, spec.columns, "PA", seed=3)
    assert picture[masks.lungs].mean() + 0.1 < picture[masks.mediastinum].mean()

    first, image_tokens = generate(tiny_vlm, picture)
    second, _ = generate(tiny_vlm, picture)
    assert first == second  # greedy decoding is deterministic
    assert 0 < image_tokens <= (476 // 28) ** 2


def test_real_films_through_the_tiny_model(tiny_vlm: LoadedVLM) -> None:
    expected = {NIH_FILM: "2b2ee2ae9fdbcc13", FUJI_FILM: "ee3da313f01d2b50"}
    for path, digest in expected.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(digest), f"{path.name} changed"
    nih = pydicom.dcmread(NIH_FILM)
    fuji = pydicom.dcmread(FUJI_FILM, force=True)  # legacy file: no preamble, no File Meta
    fuji.file_meta = pydicom.dataset.FileMetaDataset()
    fuji.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    for ds in (nih, fuji):
        picture = displayed(ds)
        assert picture.shape == (ds.Rows, ds.Columns)
        text, image_tokens = generate(tiny_vlm, picture)
        assert isinstance(text, str)
        # 1024 x 1024 is capped at 17 x 17 merged tokens; 440 x 440 rounds to 16 x 16 (448 px) under the cap
        assert image_tokens == (289 if ds.Rows == 1024 else round(440 / 28) ** 2)


def _written(ds: Dataset) -> BytesIO:
    """The dataset as a Part 10 file in memory, so the test reads back what a PACS would send."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer
