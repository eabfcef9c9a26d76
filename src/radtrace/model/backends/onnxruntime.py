"""Greedy generation on ONNX Runtime from an export made by ``radtrace model export-onnx``, on the CPU.

For sites without a GPU, and as a second, independent engine to cross-check the transformers backend. The
export's manifest is checked first (format, version, every file's sha256); then the checkpoint's own processor,
loaded from the export, turns radtrace's prepared pictures into the same pixel patches and prompt tokens as the
transformers backend: no second resize. A batch is one left-padded prompt, like the transformers backend's:
the vision graph encodes every picture at once, the image embeddings replace the image tokens, and the decoder
runs the prefill and then one token per step on its KV cache, picking the most likely token (greedy).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from radtrace.errors import ModelError, ModelFilesError, ModelRequestError
from radtrace.model.backends.base import Backend, Generation
from radtrace.model.identity import model_name_of
from radtrace.model.onnx.manifest import GRAPHS, read_manifest
from radtrace.model.onnx.positions import attention_bias, decode_positions, rope_index, vision_index
from radtrace.model.profiles.base import Profile
from radtrace.model.reading import ModelIdentity
from radtrace.model.study import StudyInput

__all__ = ["OnnxExport", "OnnxRuntimeBackend", "load_export"]

logger = logging.getLogger(__name__)

_loaded: dict[tuple[Any, ...], OnnxExport] = {}
_load_lock = threading.Lock()


@dataclass(frozen=True)
class OnnxExport:
    """A checked export: its manifest, the processor loaded from it and one session per graph."""

    directory: Path
    manifest: dict[str, Any]
    processor: Any
    sessions: dict[str, Any]
    threads: int


def load_export(directory: Path, *, threads: int = 0, min_pixels: int, max_pixels: int) -> OnnxExport:
    """Check and load the export in ``directory`` once per process (per thread count and pixel budget).

    ``threads`` is ONNX Runtime's intra-op thread count (0: one per physical core).

    Raises:
        ModelLoadError: no export there.
        ModelFilesError: a manifest of another format or version, a file missing or changed since the export, a
            processor that does not match the graphs, or a graph ONNX Runtime cannot load (the worker waits for
            the directory to change).
    """
    key = (str(directory.resolve()), threads, min_pixels, max_pixels)
    with _load_lock:
        if key not in _loaded:
            _loaded[key] = _load(directory, threads=threads, min_pixels=min_pixels, max_pixels=max_pixels)
        return _loaded[key]


def _load(directory: Path, *, threads: int, min_pixels: int, max_pixels: int) -> OnnxExport:
    import onnxruntime

    from radtrace.model.loading import load_processor

    manifest = read_manifest(directory)
    try:
        processor: Any = load_processor(directory, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as exc:
        raise ModelFilesError(f"cannot load the processor of {directory}: {exc}", directory) from exc
    expected = manifest["model"]["image_token_id"]
    if processor.image_token_id != expected:
        raise ModelFilesError(
            f"{directory}: the graphs expect image token id {expected} but the tokenizer gives "
            f"{processor.image_token_id}; tokenizer and graphs do not belong together",
            directory,
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    sessions = {}
    for name in GRAPHS:
        path = directory / manifest["graphs"][name]["file"]
        try:
            sessions[name] = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types, none exported for catching
            # a graph that matches its manifest's sha256 and still does not load: waited out as damaged files
            raise ModelFilesError(f"ONNX Runtime cannot load {path}: {exc}", directory) from exc
    logger.info("loaded the ONNX export %s (%s, opset %s)", directory, manifest["dtype"], manifest["opset"])
    return OnnxExport(directory=directory, manifest=manifest, processor=processor, sessions=sessions, threads=threads)


class OnnxRuntimeBackend(Backend):
    """Generate greedily with an exported Qwen2.5-VL-class model on ONNX Runtime's CPU provider."""

    name = "onnxruntime"

    def __init__(
        self, export: OnnxExport, *, max_new_tokens: int, min_new_tokens: int = 0, revision: str | None = None
    ) -> None:
        self.export = export
        self.max_new_tokens = max_new_tokens
        # Benchmarks force the trace length (min = max) so that random weights cost what a real trace does.
        self.min_new_tokens = min_new_tokens
        self.revision = revision
        generation = export.manifest["generation"]
        self._eos = np.array(generation["eos_token_ids"], dtype=np.int64)
        pad = generation.get("pad_token_id")
        self._pad = int(pad) if pad is not None else int(self._eos[0])
        self._stops = {int(token) for token in self._eos} | {self._pad}
        self._repetition_penalty = float(generation.get("repetition_penalty", 1.0))

    def identity(self, profile: Profile) -> ModelIdentity:
        """See :meth:`Backend.identity`: the source weights' sha256, and the ONNX files' hashes under generation."""
        manifest = self.export.manifest
        size = self.export.processor.image_processor.size
        graph_files = {name: digest for name, digest in sorted(manifest["files"].items()) if ".onnx" in Path(name).name}
        return ModelIdentity(
            profile=profile.name,
            profile_version=profile.version,
            backend="onnxruntime",
            model_name=model_name_of(self.export.directory, profile),
            source=str(self.export.directory),
            revision=self.revision,
            weights_sha256=manifest.get("source_weights_sha256"),
            dtype=manifest["dtype"],
            device="cpu",
            prompt=profile.prompt,
            generation={
                "max_new_tokens": self.max_new_tokens,
                **({"min_new_tokens": self.min_new_tokens} if self.min_new_tokens else {}),
                "do_sample": False,
                "repetition_penalty": self._repetition_penalty,
                "min_pixels": int(size.shortest_edge),
                "max_pixels": int(size.longest_edge),
                "execution_provider": "CPUExecutionProvider",
                "intra_op_threads": self.export.threads,
                "onnx_opset": manifest["opset"],
                "onnx_files_sha256": graph_files,
                "exported_from": manifest.get("source"),
            },
        )

    def generate(self, studies: Sequence[StudyInput], profile: Profile) -> list[Generation]:
        """One left-padded greedy run for all ``studies``.

        Raises:
            ModelError: ONNX Runtime failed while running (out of memory, for one).
            ModelRequestError: the inputs do not fit the graphs (a bug or a mismatched export; a retry won't help).
        """
        processor = self.export.processor
        texts = [
            processor.apply_chat_template(
                profile.messages(len(study.pictures)), add_generation_prompt=True, tokenize=False
            )
            for study in studies
        ]
        pictures = [picture.image() for study in studies for picture in study.pictures]
        inputs = processor(images=pictures, text=texts, padding=True, return_tensors="np")
        input_ids = np.asarray(inputs["input_ids"], dtype=np.int64)
        attention_mask = np.asarray(inputs["attention_mask"], dtype=np.int64)
        started = time.perf_counter()
        try:
            new = self.greedy(
                input_ids,
                attention_mask,
                np.asarray(inputs["pixel_values"], dtype=np.float32),
                np.asarray(inputs["image_grid_thw"], dtype=np.int64),
            )
        except MemoryError as exc:
            raise ModelError(f"out of memory generating a batch of {len(studies)}") from exc
        share = (time.perf_counter() - started) / len(studies)

        image_token = self.export.manifest["model"]["image_token_id"]
        generations = []
        for row, tokens in enumerate(new):
            end = next((i for i, token in enumerate(tokens) if token in self._stops), None)
            produced = tokens if end is None else tokens[: end + 1]
            generations.append(
                Generation(
                    text=processor.decode(produced, skip_special_tokens=True),
                    prompt_tokens=int(attention_mask[row].sum()),
                    image_tokens=int((input_ids[row] == image_token).sum()),
                    generated_tokens=len(produced),
                    hit_token_limit=end is None and len(tokens) >= self.max_new_tokens,
                    generate_s=share,
                    batch_size=len(studies),
                )
            )
        return generations

    def greedy(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        pixel_values: npt.NDArray[np.float32],
        grid_thw: npt.NDArray[np.int64],
    ) -> list[list[int]]:
        """The generated token ids of each row of a left-padded prompt batch (stop tokens included).

        Raises:
            ModelError, ModelRequestError: as :meth:`generate`.
        """
        dims = self.export.manifest["model"]
        batch = input_ids.shape[0]
        embeds = self._run("embed", {"input_ids": input_ids})[0]
        image_token = dims["image_token_id"]
        if pixel_values.size:
            image_embeds = self._encode_images(pixel_values, grid_thw)
            placeholders = input_ids == image_token
            if int(placeholders.sum()) != image_embeds.shape[0]:
                raise ModelRequestError(
                    f"the prompt has {int(placeholders.sum())} image tokens for {len(image_embeds)} image embeddings"
                )
            embeds[placeholders] = image_embeds
        positions, deltas = rope_index(
            input_ids, attention_mask, grid_thw, image_token_id=image_token, merge_size=dims["merge_size"]
        )
        cache_shape = (batch, dims["num_key_value_heads"], 0, dims["head_dim"])
        past = [np.zeros(cache_shape, dtype=np.float32) for _ in range(2 * dims["num_layers"])]
        seen = np.zeros((batch, dims["vocab_size"]), dtype=bool)
        np.put_along_axis(seen, input_ids, True, axis=1)

        generated: list[list[int]] = [[] for _ in range(batch)]
        finished = np.zeros(batch, dtype=bool)
        mask = attention_mask
        bias = attention_bias(mask, input_ids.shape[1])
        for step in range(self.max_new_tokens):
            logits, *past = self._decode(embeds, bias, positions, past)
            if self._repetition_penalty != 1.0:
                penalised = np.where(logits < 0, logits * self._repetition_penalty, logits / self._repetition_penalty)
                logits = np.where(seen, penalised, logits)
            if step < self.min_new_tokens:
                logits[:, self._eos] = -np.inf
            chosen = np.where(finished, self._pad, logits.argmax(axis=-1)).astype(np.int64)
            for row in range(batch):
                generated[row].append(int(chosen[row]))
            seen[np.arange(batch), chosen] = True
            finished |= np.isin(chosen, self._eos)
            if finished.all() or step + 1 == self.max_new_tokens:
                break
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
            embeds = self._run("embed", {"input_ids": chosen[:, None]})[0]
            bias = attention_bias(mask, 1)
            positions = decode_positions(mask, deltas)
        return generated

    def _encode_images(self, pixel_values: npt.NDArray[np.float32], grid_thw: npt.NDArray[np.int64]) -> Any:
        """Image embeddings of every picture, one picture per vision run.

        The graph takes several pictures at once, but its attention mask is square in all their patches together:
        one at a time keeps memory at one picture's square (about 1,200 patches at 476² pixels).
        """
        dims = self.export.manifest["model"]
        outputs = []
        start = 0
        for grid in grid_thw:
            patches = int(np.prod(grid))
            index = vision_index(
                grid[None, :],
                merge_size=dims["merge_size"],
                window_size=dims["window_size"],
                patch_size=dims["patch_size"],
            )
            feeds = {"pixel_values": pixel_values[start : start + patches], **index.feeds()}
            outputs.append(self._run("vision", feeds)[0])
            start += patches
        return np.concatenate(outputs, axis=0)

    def _decode(
        self, embeds: Any, bias: Any, positions: Any, past: list[npt.NDArray[np.float32]]
    ) -> list[npt.NDArray[np.float32]]:
        feeds: dict[str, Any] = {"inputs_embeds": embeds, "attention_bias": bias, "position_ids": positions}
        for number, tensor in enumerate(past):
            feeds[f"past.{number // 2}.{'key' if number % 2 == 0 else 'value'}"] = tensor
        return self._run("decoder", feeds)

    def _run(self, graph: str, feeds: dict[str, Any]) -> list[Any]:
        try:
            return self.export.sessions[graph].run(None, feeds)  # type: ignore[no-any-return]
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime's own exception types are not importable in a stable place
            text = str(exc)
            if "alloc" in text.lower() or "memory" in text.lower():
                raise ModelError(f"ONNX Runtime ran out of memory in the {graph} graph") from exc
            if "INVALID_ARGUMENT" in text or "Invalid" in text:
                raise ModelRequestError(f"the {graph} graph refused its inputs: {text[:300]}") from exc
            raise ModelError(f"ONNX Runtime failed in the {graph} graph: {text[:300]}") from exc
