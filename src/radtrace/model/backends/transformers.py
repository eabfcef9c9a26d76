"""In-process generation with transformers (``AutoModelForImageTextToText``), greedy, left-padded batches.

The model is loaded once per process and per (source, dtype, device, pixel budget) through
:func:`radtrace.model.loading.load_vlm`: a local directory or the Hugging Face cache, no download unless the
settings allow it. bf16 on CUDA, float32 on CPU.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radtrace.errors import ModelError, ModelLoadError
from radtrace.model.backends.base import Backend, Generation
from radtrace.model.identity import model_name_of, weights_sha256
from radtrace.model.loading import DType, LoadedVLM, load_vlm
from radtrace.model.profiles.base import Profile
from radtrace.model.reading import ModelIdentity
from radtrace.model.study import StudyInput

__all__ = ["TransformersBackend", "greedy_config", "load_once"]

logger = logging.getLogger(__name__)

_loaded: dict[tuple[Any, ...], LoadedVLM] = {}
_load_lock = threading.Lock()


def load_once(
    source: Path | str,
    *,
    dtype: DType,
    device: str,
    min_pixels: int,
    max_pixels: int,
    allow_download: bool = False,
    revision: str | None = None,
) -> LoadedVLM:
    """:func:`load_vlm`, memoised for the process: a worker loads its model once.

    Raises:
        ModelLoadError: as :func:`load_vlm`, and for a malformed dtype or device.
    """
    key = (str(source), dtype, device, min_pixels, max_pixels, revision)
    with _load_lock:
        if key not in _loaded:
            try:
                _loaded[key] = load_vlm(
                    source,
                    dtype=dtype,
                    device=device,
                    min_pixels=min_pixels,
                    max_pixels=max_pixels,
                    allow_download=allow_download,
                    revision=revision,
                )
            except ValueError as exc:
                raise ModelLoadError(f"cannot load the model: {exc}") from exc
        return _loaded[key]


class TransformersBackend(Backend):
    """Generate with a loaded Qwen2.5-VL-class model."""

    name = "transformers"

    def __init__(
        self,
        vlm: LoadedVLM,
        *,
        source: str,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        cache_implementation: str | None = None,
        revision: str | None = None,
        hash_cache_file: Path | None = None,
        cudnn_attention: bool = False,
    ) -> None:
        self.vlm = vlm
        self.source = source
        self.max_new_tokens = max_new_tokens
        # Benchmarks force the trace length (min = max) so that random weights cost what a real trace does.
        self.min_new_tokens = min_new_tokens
        # "static" preallocates the KV cache; on CUDA transformers then compiles the decoding step.
        self.cache_implementation = cache_implementation
        self.revision = revision
        self._hash_cache_file = hash_cache_file
        self._weights_sha256: str | None = None
        self.cudnn_attention: bool | None = None
        if vlm.device.startswith("cuda"):
            self.cudnn_attention = cudnn_attention
            _choose_cudnn_attention(cudnn_attention)

    def identity(self, profile: Profile) -> ModelIdentity:
        """See :meth:`Backend.identity`; the weights hash is computed on first use (and cached)."""
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.vlm.directory, cache_file=self._hash_cache_file)
        size = self.vlm.processor.image_processor.size
        return ModelIdentity(
            profile=profile.name,
            profile_version=profile.version,
            backend="transformers",
            model_name=model_name_of(self.vlm.directory, profile),
            source=self.source,
            revision=self.revision,
            weights_sha256=self._weights_sha256,
            dtype=self.vlm.dtype,
            device=self.vlm.device,
            prompt=profile.prompt,
            generation={
                "max_new_tokens": self.max_new_tokens,
                **({"min_new_tokens": self.min_new_tokens} if self.min_new_tokens else {}),
                **({"cache_implementation": self.cache_implementation} if self.cache_implementation else {}),
                "do_sample": False,
                "attn_implementation": getattr(self.vlm.model.config, "_attn_implementation", None),
                **({"cudnn_attention": self.cudnn_attention} if self.cudnn_attention is not None else {}),
                "min_pixels": int(size.shortest_edge),
                "max_pixels": int(size.longest_edge),
                "image_processor": self.vlm.image_backend,
            },
        )

    def generate(self, studies: Sequence[StudyInput], profile: Profile) -> list[Generation]:
        """One left-padded, greedy ``generate`` call for all ``studies``."""
        import torch

        processor: Any = self.vlm.processor
        model: Any = self.vlm.model
        texts = [
            processor.apply_chat_template(
                profile.messages(len(study.pictures)), add_generation_prompt=True, tokenize=False
            )
            for study in studies
        ]
        pictures = [picture.image() for study in studies for picture in study.pictures]
        inputs = processor(images=pictures, text=texts, padding=True, return_tensors="pt").to(self.vlm.device)
        config = greedy_config(self)
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                output = model.generate(**inputs, generation_config=config)
        except torch.OutOfMemoryError as exc:
            raise ModelError(f"out of memory generating a batch of {len(studies)}") from exc
        except RuntimeError as exc:
            raise ModelError(f"generation failed: {exc}") from exc
        share = (time.perf_counter() - started) / len(studies)

        prompt_length = inputs["input_ids"].shape[1]
        stops = _stop_ids(config)
        generations = []
        for row in range(len(studies)):
            new = output[row, prompt_length:].tolist()
            end = next((i for i, token in enumerate(new) if token in stops), None)
            produced = new if end is None else new[: end + 1]
            generations.append(
                Generation(
                    text=processor.decode(produced, skip_special_tokens=True),
                    prompt_tokens=int(inputs["attention_mask"][row].sum()),
                    image_tokens=int((inputs["input_ids"][row] == processor.image_token_id).sum()),
                    generated_tokens=len(produced),
                    hit_token_limit=end is None and len(new) >= self.max_new_tokens,
                    generate_s=share,
                    batch_size=len(studies),
                )
            )
        return generations


def greedy_config(backend: TransformersBackend) -> Any:
    """The checkpoint's generation config made greedy, without its sampling knobs (which would warn), with the
    backend's token budget and KV cache."""
    config = copy.deepcopy(backend.vlm.model.generation_config)
    config.do_sample = False
    config.max_new_tokens = backend.max_new_tokens
    if backend.min_new_tokens:
        config.min_new_tokens = backend.min_new_tokens
    if backend.cache_implementation is not None:
        config.cache_implementation = backend.cache_implementation
    config.num_beams = 1
    for knob in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        if hasattr(config, knob):
            setattr(config, knob, None)
    return config


def _choose_cudnn_attention(enabled: bool) -> None:
    """Allow or forbid cuDNN among PyTorch's SDPA kernels (process-wide; the worker owns its GPU).

    Left-padded batches reach SDPA with an explicit mask, which PyTorch 2.11 hands to cuDNN first on recent GPUs,
    and cuDNN builds an execution plan for every new shape. Decoding with a growing KV cache has a new shape at
    every step, so the first pass over a (batch, length) range pays for one plan per token. On an H200, a batch of
    64 read at 0.90 studies/s with cuDNN allowed and at 1.94 without it (bench/gpu.sh, docs/operations.md).
    Without cuDNN, SDPA takes the memory-efficient kernel, which plans nothing.
    """
    import torch

    torch.backends.cuda.enable_cudnn_sdp(enabled)


def _stop_ids(config: Any) -> set[int]:
    ids = config.eos_token_id
    stops = set(ids) if isinstance(ids, list) else ({ids} if ids is not None else set())
    if config.pad_token_id is not None:
        stops.add(config.pad_token_id)
    return stops
