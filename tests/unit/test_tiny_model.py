"""The tiny Qwen2.5-VL test model, loaded through the same code as the production model.

``tiny_model_dir`` (conftest) builds the model once per session; the autouse environment fixture there sets
HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE, and these tests set them again where offline loading is the point.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from radtrace.model.loading import (
    LoadedVLM,
    ModelLoadError,
    load_model,
    load_processor,
    load_vlm,
    resolve_checkpoint,
    set_pixel_budget,
)
from radtrace.model.tiny_model import TINY_MARKER_FILE, build_tiny_model
from radtrace.testing.phantom import chest_phantom

pytestmark = pytest.mark.unit

PROMPT = "Find abnormalities and support devices."
MERGED_PATCH = 28  # 14 px patches, merged 2 x 2 into one visual token


def chest_like_image(size: int) -> Image.Image:
    """The factory's chest phantom at ``size`` x ``size``, as an 8-bit RGB picture."""
    return Image.fromarray(np.round(chest_phantom(size, size, "PA") * 255).astype(np.uint8)).convert("RGB")


def chat_inputs(processor: Any, image: Image.Image) -> Any:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(images=[image], text=[text], return_tensors="pt")


def image_token_count(processor: Any, image: Image.Image) -> int:
    return int((chat_inputs(processor, image)["input_ids"] == processor.image_token_id).sum())


def test_checkpoint_is_small_and_marked_not_for_clinical_use(tiny_model_dir: Path) -> None:
    total = sum(f.stat().st_size for f in tiny_model_dir.iterdir())
    marker = json.loads((tiny_model_dir / TINY_MARKER_FILE).read_text(encoding="utf-8"))

    assert total < 3_000_000
    assert marker["random_weights"] is True
    assert marker["clinical_use"] is False
    assert 200_000 < marker["parameters"] < 500_000


def test_checkpoint_has_the_files_a_stock_qwen2_5_vl_loader_reads(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    preprocessor = json.loads((tiny_model_dir / "preprocessor_config.json").read_text(encoding="utf-8"))

    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert preprocessor["image_processor_type"] == "Qwen2VLImageProcessor"
    assert preprocessor["processor_class"] == "Qwen2_5_VLProcessor"
    assert (preprocessor["min_pixels"], preprocessor["max_pixels"]) == (128 * 128, 476 * 476)
    assert (tiny_model_dir / "tokenizer.json").is_file()
    assert (tiny_model_dir / "chat_template.jinja").is_file()


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    reference = load_file(tiny_model_dir / "model.safetensors")
    again = load_file(build_tiny_model(tmp_path / "again", seed=0) / "model.safetensors")
    other = load_file(build_tiny_model(tmp_path / "other", seed=1) / "model.safetensors")

    assert reference.keys() == again.keys()
    assert all(reference[name].equal(again[name]) for name in reference)
    assert not all(reference[name].equal(other[name]) for name in reference)


def test_loads_offline_on_cpu_in_float32_and_eval_mode(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    loaded = load_vlm(tiny_model_dir, device="cpu")

    assert (loaded.device, loaded.dtype) == ("cpu", "float32")
    assert str(next(loaded.model.parameters()).dtype) == "torch.float32"
    assert not loaded.model.training
    assert loaded.processor.image_processor is not None
    assert loaded.processor.tokenizer.padding_side == "left"
    assert loaded.model.config.image_token_id == loaded.processor.image_token_id


def test_bfloat16_can_be_asked_for_on_cpu(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, dtype="bfloat16", device="cpu")

    assert str(next(model.parameters()).dtype) == "torch.bfloat16"


def test_float16_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        load_model(tiny_model_dir, dtype="float16", device="cpu")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "Müller 肺",
        "<think> Heart: enlarged.\n\tPleura: small left effusion. </think><answer> Cardiomegaly </answer>",
        "  leading spaces, trailing newline\n",
        "Zürich, Ørsted, Ελλάδα, العربية, 🫁 X-ray",
    ],
)
def test_tokenizer_round_trips_utf8_exactly(tiny_vlm: LoadedVLM, text: str) -> None:
    tokenizer = tiny_vlm.processor.tokenizer

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]

    assert tokenizer.decode(ids) == text


def test_special_tokens_are_single_tokens(tiny_vlm: LoadedVLM) -> None:
    tokenizer = tiny_vlm.processor.tokenizer

    ids = tokenizer("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>", add_special_tokens=False)

    assert tokenizer.convert_ids_to_tokens(ids["input_ids"])[:1] == ["<|im_start|>"]
    assert tokenizer.convert_ids_to_tokens(ids["input_ids"])[-3:] == [
        "<|vision_start|>",
        "<|image_pad|>",
        "<|vision_end|>",
    ]


def test_chat_template_puts_the_image_before_the_prompt(tiny_vlm: LoadedVLM) -> None:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]

    rendered = tiny_vlm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    assert rendered.endswith(
        f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_greedy_generation_from_an_image_is_deterministic(tiny_vlm: LoadedVLM) -> None:
    import torch

    inputs = chat_inputs(tiny_vlm.processor, chest_like_image(512))
    prompt_length = inputs["input_ids"].shape[1]

    with torch.inference_mode():
        first = tiny_vlm.model.generate(**inputs, max_new_tokens=16, do_sample=False)
        second = tiny_vlm.model.generate(**inputs, max_new_tokens=16, do_sample=False)

    assert 0 < first.shape[1] - prompt_length <= 16
    assert first.equal(second)
    assert isinstance(tiny_vlm.processor.decode(first[0, prompt_length:]), str)


def test_image_tokens_are_capped_by_max_pixels(tiny_vlm: LoadedVLM) -> None:
    cap = (476 // MERGED_PATCH) ** 2

    assert image_token_count(tiny_vlm.processor, chest_like_image(1024)) == cap == 289


def test_pixel_budget_can_be_changed(tiny_model_dir: Path) -> None:
    processor = load_processor(tiny_model_dir, min_pixels=56 * 56, max_pixels=224 * 224)
    small_budget = image_token_count(processor, chest_like_image(1024))
    set_pixel_budget(processor, min_pixels=128 * 128)
    tiny_image_tokens = image_token_count(processor, chest_like_image(64))

    assert small_budget == (224 // MERGED_PATCH) ** 2
    assert tiny_image_tokens * MERGED_PATCH**2 >= 128 * 128


def test_pixel_budget_rejects_inverted_bounds(tiny_vlm: LoadedVLM) -> None:
    with pytest.raises(ValueError, match="min_pixels <= max_pixels"):
        set_pixel_budget(tiny_vlm.processor, min_pixels=500 * 500, max_pixels=100 * 100)


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("preprocessor_config.json", "image processor settings"),
        ("tokenizer.json", "tokenizer"),
        ("config.json", "model configuration"),
        ("model.safetensors", "weights"),
        ("chat_template.jinja", "chat template"),
    ],
)
def test_a_missing_file_is_named_in_the_error(tiny_model_dir: Path, tmp_path: Path, missing: str, named: str) -> None:
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (broken / missing).unlink()

    with pytest.raises(ModelLoadError, match=named):
        load_vlm(broken, device="cpu")


def test_a_tokenizer_from_another_model_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    mismatched = shutil.copytree(tiny_model_dir, tmp_path / "mismatched")
    config = json.loads((mismatched / "config.json").read_text(encoding="utf-8"))
    config["image_token_id"] = 7
    (mismatched / "config.json").write_text(json.dumps(config), encoding="utf-8")

    with pytest.raises(ModelLoadError, match="image token id 7"):
        load_vlm(mismatched, device="cpu")


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_vlm(tmp_path / "nowhere", device="cpu")


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record, and refuse, every name lookup and connection; hub offline mode is switched off."""
    import huggingface_hub.constants

    attempts: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.mark.parametrize("allow_download", [False, True])
def test_an_uncached_repository_goes_to_the_network_only_if_allowed(
    tmp_path: Path, network_attempts: list[tuple[Any, ...]], allow_download: bool
) -> None:
    with pytest.raises(ModelLoadError, match="not available locally"):
        load_vlm("nvidia/NV-Reason-CXR-3B", device="cpu", cache_dir=tmp_path / "hub", allow_download=allow_download)

    assert bool(network_attempts) is allow_download


def test_a_cached_repository_loads_by_id(
    tiny_model_dir: Path, tmp_path: Path, network_attempts: list[tuple[Any, ...]]
) -> None:
    cache = tmp_path / "hub"
    repository = cache / "models--radtrace--tiny-qwen2_5_vl"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model_dir, repository / "snapshots" / commit)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(commit, encoding="utf-8")

    loaded = load_vlm("radtrace/tiny-qwen2_5_vl", device="cpu", cache_dir=cache)

    assert loaded.directory == repository / "snapshots" / commit
    assert resolve_checkpoint("radtrace/tiny-qwen2_5_vl", cache_dir=cache, revision=commit) == loaded.directory
    assert network_attempts == []


def test_a_processor_saved_by_radtrace_reloads_through_auto_processor(tiny_vlm: LoadedVLM, tmp_path: Path) -> None:
    from transformers import AutoProcessor

    tiny_vlm.processor.save_pretrained(tmp_path / "saved")

    reloaded = AutoProcessor.from_pretrained(tmp_path / "saved", local_files_only=True)

    assert type(reloaded) is type(tiny_vlm.processor)
    assert image_token_count(reloaded, chest_like_image(512)) == 289
