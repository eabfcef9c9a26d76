"""``radtrace model export-onnx``: a Qwen2.5-VL-class checkpoint to three ONNX graphs and a manifest.

Why ``torch.onnx`` (the TorchScript tracer) over onnxruntime-genai's model builder: the builder writes the text
decoder only, the vision and embedding graphs would still need an export of their own, and its runtime brings
its own image preprocessing (``processor_config.json``), a second resize that radtrace must not have. Tracing
small wrappers around the checkpoint's own layers (:mod:`radtrace.model.onnx.graphs`) gives all three graphs
from one code path, for the tiny test model and the real architecture alike, with a greedy loop on plain
onnxruntime that takes exactly the pixel patches the transformers backend's processor makes.

The graphs are float32 (CPU inference; a bfloat16 checkpoint is widened). ``int4=True`` then quantizes the
decoder's weight matrices with ONNX Runtime's MatMulNBits quantizer (block-wise, symmetric, 4 bits); the vision
tower and the embedding stay float32. Every graph is checked against torch on the tracing inputs before the
manifest is written.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np

from radtrace.errors import PermanentError
from radtrace.model.identity import weights_sha256
from radtrace.model.onnx.manifest import MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, file_sha256
from radtrace.model.onnx.positions import attention_bias, vision_index

__all__ = ["OPSET", "ExportError", "export_onnx"]

logger = logging.getLogger(__name__)

OPSET: Final = 17
INT4_BLOCK_SIZE: Final = 32
_QUANTIZATION: Final = {
    "method": "MatMulNBits",
    "bits": 4,
    "block_size": INT4_BLOCK_SIZE,
    "symmetric": True,
    "accuracy_level": 4,
    "graphs": ["decoder"],
}
# The checkpoint files the export carries along so that it loads on its own (tokenizer, processor, identity).
_CARRIED: Final = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
    "radtrace-tiny.json",
)


class ExportError(PermanentError):
    """The checkpoint could not be exported (unsupported architecture, tracing or checking failed)."""


def export_onnx(source: Path, destination: Path, *, int4: bool = False) -> dict[str, Any]:
    """Export the checkpoint directory ``source`` into ``destination`` and return the manifest written there.

    Raises:
        ModelLoadError: the checkpoint cannot be loaded.
        ExportError: the destination holds something else, or tracing or the torch/ONNX check failed.
    """
    import onnx
    import torch

    from radtrace.model.loading import load_model, load_processor
    from radtrace.model.onnx.graphs import DecoderGraph, EmbedGraph, VisionGraph

    if destination.exists() and any(destination.iterdir()) and not (destination / MANIFEST_FILE).is_file():
        raise ExportError(f"{destination} is not empty and holds no earlier export: choose an empty directory")
    processor: Any = load_processor(source)
    model: Any = load_model(source, dtype="float32", device="cpu")
    if type(model).__name__ != "Qwen2_5_VLForConditionalGeneration":
        raise ExportError(f"{source} holds a {type(model).__name__}; export-onnx supports Qwen2.5-VL checkpoints")
    config = model.config
    if processor.image_token_id != config.image_token_id:
        raise ExportError(
            f"{source}: the weights expect image token id {config.image_token_id} but the tokenizer gives "
            f"{processor.image_token_id}; tokenizer and weights do not belong together"
        )
    text, vision = config.text_config, config.vision_config
    dims = {
        "hidden_size": int(text.hidden_size),
        "num_layers": int(text.num_hidden_layers),
        "num_key_value_heads": int(text.num_key_value_heads),
        "head_dim": int(text.hidden_size // text.num_attention_heads),
        "vocab_size": int(text.vocab_size),
        "image_token_id": int(config.image_token_id),
        "merge_size": int(vision.spatial_merge_size),
        "patch_size": int(vision.patch_size),
        "window_size": int(vision.window_size),
        "temporal_patch_size": int(vision.temporal_patch_size),
        "in_channels": int(getattr(vision, "in_channels", 3)),
    }
    destination.mkdir(parents=True, exist_ok=True)
    graphs: dict[str, Any] = {}
    checks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="radtrace-onnx-") as scratch, torch.inference_mode():
        for name, module, (args, inputs, outputs, axes) in (
            ("vision", VisionGraph(model), _vision_example(dims)),
            ("embed", EmbedGraph(model), _embed_example(dims)),
            ("decoder", DecoderGraph(model), _decoder_example(dims)),
        ):
            traced = Path(scratch) / f"{name}.onnx"
            logger.info("exporting the %s graph", name)
            try:
                _trace(module, args, traced, inputs, outputs, axes)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise ExportError(f"tracing the {name} graph failed: {exc}") from exc
            proto = onnx.load(str(traced))
            if name == "decoder" and int4:
                proto = _quantize_int4(proto)
            _save(proto, destination / f"{name}.onnx")
            del proto  # a copy of the weights: gone before the check session loads another (3B: 12 GB each)
            for stale in Path(scratch).iterdir():  # the traced graph, and a large one's weights in files of their own
                if stale.is_file():
                    stale.unlink()
            gc.collect()
            expected = module(*args)
            expected = expected if isinstance(expected, tuple) else (expected,)
            checks[name] = _check(destination / f"{name}.onnx", inputs, args, expected)
            graphs[name] = {
                "file": f"{name}.onnx",
                "data": f"{name}.onnx.data",
                "inputs": inputs,
                "outputs": outputs,
                "dtype": "int4" if name == "decoder" and int4 else "float32",
            }
    for name in _CARRIED:
        if (source / name).is_file():
            shutil.copyfile(source / name, destination / name)

    generation = model.generation_config
    eos = generation.eos_token_id
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "source": str(source),
        "source_weights_sha256": weights_sha256(source),
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "exporter": f"torch.onnx (TorchScript tracer), torch {torch.__version__}, onnx {onnx.__version__}",
        "opset": OPSET,
        "dtype": "int4" if int4 else "float32",
        "quantization": _QUANTIZATION if int4 else None,
        "exported": {
            "vision": "vision tower with window attention and patch merger: pixel patches to image embeddings",
            "embed": "token embedding",
            "decoder": "text decoder with KV cache and LM head (last position's logits), 3-D rotary positions",
        },
        "graphs": graphs,
        "model": dims,
        "generation": {
            "eos_token_ids": sorted(set(eos if isinstance(eos, list) else [eos] if eos is not None else [])),
            "pad_token_id": generation.pad_token_id,
            "repetition_penalty": float(getattr(generation, "repetition_penalty", None) or 1.0),
        },
        "max_abs_difference_to_torch": checks,
        "files": {},
    }
    manifest["files"] = {
        path.name: file_sha256(path)
        for path in sorted(destination.iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }
    (destination / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _trace(
    module: Any, args: tuple[Any, ...], path: Path, inputs: list[str], outputs: list[str], axes: dict[str, Any]
) -> None:
    import torch
    from torch.jit._trace import TracerWarning

    with warnings.catch_warnings():
        # The tracer is chosen on purpose (see the module docstring): it and its helpers warn that they are
        # legacy, and its TracerWarnings are about sizes read as constants, where the graphs take index arrays.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=TracerWarning)
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def _vision_example(dims: dict[str, int]) -> tuple[tuple[Any, ...], list[str], list[str], dict[str, Any]]:
    import torch

    # Two images of different grids, so that the window and image segments are exercised.
    grid = np.array([[1, 8, 12], [1, 12, 8]], dtype=np.int64)
    index = vision_index(
        grid, merge_size=dims["merge_size"], window_size=dims["window_size"], patch_size=dims["patch_size"]
    )
    width = dims["in_channels"] * dims["temporal_patch_size"] * dims["patch_size"] ** 2
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(int(grid.prod(axis=1).sum()), width, generator=generator)
    feeds = index.feeds()
    names = ["pixel_values", *feeds]
    args = (pixels, *(torch.from_numpy(feeds[name]) for name in names[1:]))
    axes: dict[str, Any] = {
        "pixel_values": {0: "patches"},
        "position_ids": {0: "patches"},
        "window_index": {0: "merged"},
        "reverse_index": {0: "merged"},
        "window_segments": {0: "patches"},
        "image_segments": {0: "patches"},
        "image_embeds": {0: "merged"},
    }
    return args, names, ["image_embeds"], axes


def _embed_example(dims: dict[str, int]) -> tuple[tuple[Any, ...], list[str], list[str], dict[str, Any]]:
    import torch

    ids = torch.arange(6, dtype=torch.int64).reshape(2, 3) % dims["vocab_size"]
    axes = {"input_ids": {0: "batch", 1: "length"}, "inputs_embeds": {0: "batch", 1: "length"}}
    return (ids,), ["input_ids"], ["inputs_embeds"], axes


def _decoder_example(dims: dict[str, int]) -> tuple[tuple[Any, ...], list[str], list[str], dict[str, Any]]:
    import torch

    batch, length, past = 2, 5, 3
    generator = torch.Generator().manual_seed(0)
    embeds = torch.randn(batch, length, dims["hidden_size"], generator=generator)
    mask = np.ones((batch, past + length), dtype=np.int64)
    mask[1, :2] = 0
    bias = torch.from_numpy(attention_bias(mask, length))
    positions = torch.arange(past, past + length).reshape(1, 1, -1).expand(3, batch, -1).contiguous()
    cache_shape = (batch, dims["num_key_value_heads"], past, dims["head_dim"])
    cache = [torch.randn(*cache_shape, generator=generator) for _ in range(2 * dims["num_layers"])]
    inputs = ["inputs_embeds", "attention_bias", "position_ids"]
    outputs = ["logits"]
    axes: dict[str, Any] = {
        "inputs_embeds": {0: "batch", 1: "length"},
        "attention_bias": {0: "batch", 2: "length", 3: "total"},
        "position_ids": {1: "batch", 2: "length"},
        "logits": {0: "batch"},
    }
    for layer in range(dims["num_layers"]):
        for kind in ("key", "value"):
            inputs.append(f"past.{layer}.{kind}")
            outputs.append(f"present.{layer}.{kind}")
            axes[f"past.{layer}.{kind}"] = {0: "batch", 2: "past"}
            axes[f"present.{layer}.{kind}"] = {0: "batch", 2: "total"}
    return (embeds, bias, positions, *cache), inputs, outputs, axes


def _quantize_int4(proto: Any) -> Any:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantizer logs every node it looks at; radtrace's log wants the outcome only.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(proto, bits=4, block_size=INT4_BLOCK_SIZE, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    return quantizer.model.model


def _save(proto: Any, path: Path) -> None:
    import onnx

    data = path.with_name(path.name + ".data")
    for stale in (path, data):
        stale.unlink(missing_ok=True)
    onnx.save_model(
        proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=0
    )


def _check(path: Path, names: list[str], args: tuple[Any, ...], expected: tuple[Any, ...]) -> float:
    """Run the saved graph on the tracing inputs; the largest absolute difference to torch's outputs."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {name: arg.numpy() for name, arg in zip(names, args, strict=True)})
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise ExportError(f"{path.name} does not run in onnxruntime: {exc}") from exc
    return max(float(np.abs(a - b.numpy()).max()) if a.size else 0.0 for a, b in zip(got, expected, strict=True))
