"""Inference throughput of the model package: readings/s and generated tokens/s, batch 1 against batched.

Without ``--model`` this builds and runs the TINY random test model (0.35 M parameters) on the CPU: the
figures then measure radtrace's own overhead (DICOM decode, preparation, processor, parse) around a model that
costs almost nothing, not clinical throughput. Point ``--model`` at a real checkpoint on a GPU node for that.

Rows: radtrace end to end (Part 10 bytes to a parsed Reading) at batch 1 and batched, and the peer: plain
``model.generate`` from already-prepared pictures with no parsing, at the same batch sizes. With
``--vllm-url`` the vLLM client backend is measured too (its batches are concurrent requests).

    .venv/bin/python bench/inference.py [--studies 24] [--batch 8] [--max-new-tokens 64] [--model DIR]

``--full-size`` builds, on the GPU and without any download, a randomly initialised model of the published
Qwen2.5-VL-3B architecture (NV-Reason-CXR-3B's), forces every trace to ``--max-new-tokens`` (default 768; min =
max, so random weights cost what a real reasoning trace does) and prints, for each of ``--batches`` (1, 8, 32,
64): studies/s, generated tokens/s and peak GPU memory for the worker path (Part 10 bytes to a Reading through
``StudyReader.read_many``) and, in the same run, for a bare ``model.generate`` peer on prepared inputs; then how
often the greedy tokens of a study differ between batch 1 and a larger batch. ``--tiny-config`` keeps that path
(real vocabulary, forced length) with the tiny model's layers, to test the script on a CPU in seconds:

    python bench/inference.py --full-size [--batches 1,8,32,64] [--max-new-tokens 768] [--out table.md]

``--backend onnxruntime`` exports the model (``radtrace model export-onnx``'s code, float32 and int4) and adds,
in the same run and on the same studies, the ONNX Runtime backend's rows next to the transformers rows, with
how many readings have the same text as transformers'. ``--mid-size`` builds, instead of the tiny model, a
random Qwen2.5-VL of a middle size that a 2-core CPU machine can run (about 0.33 B parameters: text hidden 1024,
12 layers, 16 heads, 2 KV heads, MLP 2816, the real 151,936-token vocabulary, tied embeddings; vision tower of
8 blocks, hidden 640, 10 heads, MLP 1708), so the figures weigh the layers and not only radtrace's overhead:

    python bench/inference.py --backend onnxruntime [--mid-size] [--studies 8] [--batch 4] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any, Final

from radtrace.config import load_settings
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import StudyImage, StudyInput, study_image
from radtrace.testing.studies import ImageSpec, StudySpec, make_image

MID_SIZE_TEXT: Final[dict[str, Any]] = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 12,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
}
MID_SIZE_VISION: Final[dict[str, Any]] = {
    "depth": 8,
    "hidden_size": 640,
    "intermediate_size": 1708,
    "num_heads": 10,
    "out_hidden_size": 1024,
    "fullatt_block_indexes": [3, 7],
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
}


def _mid_size_checkpoint(directory: Path) -> Path:
    """A random Qwen2.5-VL of the middle size above, saved as a checkpoint next to the tiny model's tokenizer."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from radtrace.model.tiny_model import make_greedy, qwen2_5_vl_config, write_marker, write_processor_files

    token_id = write_processor_files(directory)
    config = qwen2_5_vl_config(token_id, MID_SIZE_TEXT, MID_SIZE_VISION, vocab_size=151936, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    make_greedy(model, token_id)
    model.save_pretrained(directory)
    parameters = sum(p.numel() for p in model.parameters())
    write_marker(directory, name="radtrace-mid-size-qwen2_5_vl", seed=0, parameters=parameters)
    return directory


def _studies(count: int) -> list[list[StudyImage]]:
    studies = []
    for seed in range(count):
        buffer = BytesIO()
        spec = ImageSpec(rows=1024 + 16 * (seed % 4), columns=896, bits_stored=12)
        make_image(StudySpec(seed=seed), spec).save_as(buffer, enforce_file_format=True)
        studies.append([study_image(buffer.getvalue())])
    return studies


def _timed(work: Callable[[], list[Reading] | int]) -> tuple[float, list[Reading] | int]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def _radtrace_row(
    reader: StudyReader, studies: list[list[StudyImage]], texts: list[str] | None = None
) -> tuple[float, int]:
    seconds, outcomes = _timed(lambda: [r for r in reader.read_many(studies) if isinstance(r, Reading)])
    assert isinstance(outcomes, list)
    assert len(outcomes) == len(studies)
    if texts is not None:
        texts[:] = [reading.raw_text for reading in outcomes]
    return seconds, sum(reading.tokens.generated for reading in outcomes)


def _onnx_rows(
    model_dir: Path,
    scratch: Path,
    studies: list[list[StudyImage]],
    args: argparse.Namespace,
    texts: dict[tuple[str, int], list[str]],
) -> list[tuple[str, int, float, int]]:
    """Export float32 and int4, then read the same studies with the ONNX Runtime backend at both batch sizes."""
    from radtrace.model.onnx.export import export_onnx

    rows: list[tuple[str, int, float, int]] = []
    for kind in ("float32", "int4"):
        started = time.perf_counter()
        export_onnx(model_dir, scratch / f"onnx-{kind}", int4=kind == "int4")
        print(f"export-onnx {kind}: {time.perf_counter() - started:.1f} s")
        for batch in (1, args.batch):
            settings = load_settings(
                model={"path": scratch / f"onnx-{kind}", "backend": "onnxruntime",
                       "max_new_tokens": args.max_new_tokens, "batch_size": batch}
            )  # fmt: skip
            reader = StudyReader(settings.model)
            reader.read(studies[0])  # load and warm up
            seconds, tokens = _radtrace_row(reader, studies, texts.setdefault((kind, batch), []))
            rows.append((f"radtrace onnxruntime {kind} (DICOM to Reading)", batch, seconds, tokens))
            same = sum(a == b for a, b in zip(texts[(kind, batch)], texts[("transformers", batch)], strict=True))
            print(f"onnxruntime {kind}, batch {batch}: text identical to transformers' in {same}/{len(studies)}")
    return rows


def _peer_row(reader: StudyReader, inputs: list[StudyInput], batch: int, max_new_tokens: int) -> tuple[float, int]:
    """Plain transformers: processor + generate on prepared pictures, nothing decoded or parsed."""
    import torch

    from radtrace.model.backends.transformers import TransformersBackend

    backend = reader.backend
    assert isinstance(backend, TransformersBackend)
    processor, model = backend.vlm.processor, backend.vlm.model
    prompt = processor.apply_chat_template(reader.profile.messages(1), add_generation_prompt=True, tokenize=False)

    def run() -> int:
        generated = 0
        for start in range(0, len(inputs), batch):
            chunk = inputs[start : start + batch]
            encoded = processor(
                images=[item.pictures[0].image() for item in chunk],
                text=[prompt] * len(chunk),
                padding=True,
                return_tensors="pt",
            ).to(backend.vlm.device)
            with torch.inference_mode():
                output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False)
            generated += int((output[:, encoded["input_ids"].shape[1] :] != processor.tokenizer.pad_token_id).sum())
        return generated

    seconds, generated = _timed(run)
    assert isinstance(generated, int)
    return seconds, generated


def _phases(model_dir: Path, scratch: Path, studies: list[list[StudyImage]], max_new_tokens: int) -> None:
    """Per study at batch 1: the time to the first token (prefill) and each further token (decode step)."""
    print(f"{'backend':<22} {'prefill s/study':>16} {'decode ms/token':>16}")
    for name, model in (
        ("transformers", {"path": model_dir}),
        ("onnxruntime float32", {"path": scratch / "onnx-float32", "backend": "onnxruntime"}),
        ("onnxruntime int4", {"path": scratch / "onnx-int4", "backend": "onnxruntime"}),
    ):
        per_study = []
        for tokens in (1, max_new_tokens):
            reader = StudyReader(load_settings(model={**model, "max_new_tokens": tokens}).model)
            reader.read(studies[0])  # load and warm up
            seconds, _ = _timed(lambda reader=reader: [reader.read(study) for study in studies[1:]])  # type: ignore[misc]
            per_study.append(seconds / max(1, len(studies) - 1))
        step_ms = 1000 * (per_study[1] - per_study[0]) / max(1, max_new_tokens - 1)
        print(f"{name:<22} {per_study[0]:>16.2f} {step_ms:>16.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="random model of the real 3B architecture")
    parser.add_argument("--tiny-config", action="store_true", help="with --full-size: tiny layers, for CPU tests")
    parser.add_argument("--batches", default="1,8,32,64", help="with --full-size: batch sizes, comma-separated")
    parser.add_argument("--cache", choices=("dynamic", "static"), default="dynamic",
                        help="with --full-size: KV cache (static compiles the decoding step on CUDA)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="with --full-size: also write the table here")
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="64; 768 with --full-size")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint directory (default: the tiny model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--vllm-url", default=None)
    parser.add_argument("--backend", choices=("transformers", "onnxruntime"), default="transformers",
                        help="onnxruntime: also export the model and measure ONNX Runtime (CPU)")  # fmt: skip
    parser.add_argument("--mid-size", action="store_true", help="a random ~0.33 B Qwen2.5-VL instead of the tiny one")
    parser.add_argument("--phases", action="store_true",
                        help="with --backend onnxruntime: prefill s/study and decode ms/token at batch 1")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.full_size:
        from full_size import run_full_size

        return run_full_size(
            batches=[int(b) for b in args.batches.split(",")],
            max_new_tokens=args.max_new_tokens or 768,
            tiny_config=args.tiny_config,
            device=args.device,
            cache=args.cache,
            out=args.out,
        )
    args.max_new_tokens = args.max_new_tokens or 64

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model
        if model_dir is None and args.mid_size:
            model_dir = _mid_size_checkpoint(Path(scratch) / "mid")
            what = "MID-SIZE random Qwen2.5-VL (~0.33 B parameters, real vocabulary): layers weigh, output is noise"
        elif model_dir is None:
            from radtrace.model.tiny_model import build_tiny_model

            model_dir = build_tiny_model(Path(scratch) / "tiny")
            what = "TINY random test model (0.35 M parameters): radtrace overhead, not clinical throughput"
        else:
            what = str(model_dir)
        studies = _studies(args.studies)
        rows: list[tuple[str, int, float, int]] = []
        texts: dict[tuple[str, int], list[str]] = {}
        for batch in (1, args.batch):
            settings = load_settings(
                model={"path": model_dir, "device": args.device, "max_new_tokens": args.max_new_tokens,
                       "batch_size": batch}
            )  # fmt: skip
            reader = StudyReader(settings.model)
            reader.read(studies[0])  # load and warm up
            seconds, tokens = _radtrace_row(reader, studies, texts.setdefault(("transformers", batch), []))
            rows.append(("radtrace transformers (DICOM to Reading)", batch, seconds, tokens))
            inputs = [item for item in (reader.prepare(study) for study in studies) if isinstance(item, StudyInput)]
            seconds, tokens = _peer_row(reader, inputs, batch, args.max_new_tokens)
            rows.append(("peer: plain model.generate (prepared)", batch, seconds, tokens))
        if args.backend == "onnxruntime":
            rows += _onnx_rows(model_dir, Path(scratch), studies, args, texts)
            if args.phases:
                _phases(model_dir, Path(scratch), studies, args.max_new_tokens)
        if args.vllm_url:
            for batch in (1, args.batch):
                settings = load_settings(
                    model={"backend": "vllm", "vllm_url": args.vllm_url, "max_new_tokens": args.max_new_tokens,
                           "batch_size": batch}
                )  # fmt: skip
                reader = StudyReader(settings.model)
                reader.read(studies[0])
                seconds, tokens = _radtrace_row(reader, studies)
                rows.append(("radtrace vllm client", batch, seconds, tokens))
        device = reader.backend.identity(reader.profile).device if not args.vllm_url else "server"

    print(f"model: {what}")
    print(f"device: {device}; {args.studies} studies, max_new_tokens {args.max_new_tokens}")
    print(f"{'path':<50} {'batch':>5} {'readings/s':>11} {'gen tokens/s':>13} {'tokens/reading':>15}")
    for name, batch, seconds, tokens in rows:
        print(
            f"{name:<50} {batch:>5} {args.studies / seconds:>11.2f} {tokens / seconds:>13.0f} "
            f"{tokens / args.studies:>15.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
