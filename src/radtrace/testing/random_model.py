"""A randomly initialised Qwen2.5-VL of the real NV-Reason-CXR-3B size, built in memory for benchmarks.

No weights can be downloaded here, yet throughput and memory only mean something at the real size. This builds
the published Qwen2.5-VL-3B architecture (which NV-Reason-CXR-3B keeps unchanged) with random weights straight
on the target device, in the dtype the service uses, next to the tiny model's tokenizer and processor files.
The tokenizer is small, so most generated ids decode to nothing: the text is noise either way, and the
benchmark forces the trace length instead of relying on the model to stop.

``size="tiny-config"`` keeps the real vocabulary and the rest of this path but the tiny model's layers, so the
benchmark script itself can be tested on a CPU in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

from radtrace.model.loading import (
    LoadedVLM,
    current_image_backend,
    load_processor,
    resolve_device,
    resolve_dtype,
)
from radtrace.model.tiny_model import (
    TINY_TEXT_CONFIG,
    TINY_VISION_CONFIG,
    make_greedy,
    qwen2_5_vl_config,
    write_marker,
    write_processor_files,
)

__all__ = ["FULL_SIZE_TEXT_CONFIG", "FULL_SIZE_VISION_CONFIG", "FULL_SIZE_VOCABULARY", "build_random_vlm"]

# Qwen2.5-VL-3B-Instruct's public config.json (NV-Reason-CXR-3B keeps it), text part.
FULL_SIZE_TEXT_CONFIG: Final[dict[str, Any]] = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
}
# The vision tower, shared by the whole Qwen2.5-VL family.
FULL_SIZE_VISION_CONFIG: Final[dict[str, Any]] = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 2048,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
}
FULL_SIZE_VOCABULARY: Final = 151936

Size = Literal["3b", "tiny-config"]


def build_random_vlm(
    directory: Path,
    *,
    size: Size = "3b",
    device: str = "auto",
    dtype: Literal["auto", "bfloat16", "float32"] = "auto",
    seed: int = 0,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> LoadedVLM:
    """Build a random Qwen2.5-VL of ``size`` on ``device`` with its processor files in ``directory``.

    The weights never touch the disk (7.5 GB at the real size); ``directory`` gets the tokenizer, processor
    settings, ``config.json`` and the marker that says the weights are random, so the model's identity and
    the processor load as for a real checkpoint.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    token_id = write_processor_files(directory)
    text, vision = (
        (FULL_SIZE_TEXT_CONFIG, FULL_SIZE_VISION_CONFIG) if size == "3b" else (TINY_TEXT_CONFIG, TINY_VISION_CONFIG)
    )
    config = qwen2_5_vl_config(
        token_id, text, vision, vocab_size=FULL_SIZE_VOCABULARY, tie_word_embeddings=size == "3b"
    )
    config.save_pretrained(directory)

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, resolved_dtype))
    try:
        with torch.device(resolved_device):  # initialised where it runs: no 7.5 GB host-to-device copy
            model: Any = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    make_greedy(model, token_id)
    write_marker(
        directory,
        name=f"radtrace-random-qwen2_5_vl-{size}",
        seed=seed,
        parameters=sum(p.numel() for p in model.parameters()),
    )
    processor = load_processor(directory, min_pixels=min_pixels, max_pixels=max_pixels)
    return LoadedVLM(
        model=model,
        processor=processor,
        directory=directory,
        dtype=resolved_dtype,
        device=resolved_device,
        image_backend=current_image_backend(),
    )
