"""``bench/inference.py --full-size``: the worker's reading path at the real model's size, beside bare generate.

A randomly initialised Qwen2.5-VL-3B (radtrace.testing.random_model) is built on the device; every trace is
forced to ``max_new_tokens`` (min = max) so that a random model costs what a real reasoning trace does. Per batch
size, two rows from the same model in the same process:

- worker path: Part 10 bytes of a study → ``StudyReader.read_many`` (decode, window, resize on the prepare
  thread pool, processor, batched greedy generate, parse) → ``Reading``;
- peer: processor + ``model.generate`` on pictures prepared beforehand (nothing decoded, nothing parsed).

Then how often a study's greedy tokens at batch N differ from the same study's at batch 1 (bf16 on a GPU
rounds differently per batch shape; the CPU test in float32 asserts equality).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from radtrace.config import load_settings
from radtrace.model.backends.transformers import TransformersBackend
from radtrace.model.reader import StudyReader
from radtrace.model.reading import Reading
from radtrace.model.study import StudyImage, StudyInput, study_image
from radtrace.testing.random_model import build_random_vlm
from radtrace.testing.studies import ImageSpec, StudySpec, make_image

# A study read alone is the baseline that batched reads are compared with: two, so a single odd one shows.
_SINGLE_STUDIES = 2


@dataclass
class Row:
    path: str
    batch: int
    studies: int
    seconds: float
    generated_tokens: int
    peak_gpu_gib: float | None
    stages: str = ""
    """The worker path's own split: seconds preparing, generating and parsing, summed over its readings."""

    @property
    def studies_per_s(self) -> float:
        return self.studies / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds


def _studies(count: int) -> list[list[StudyImage]]:
    """Synthetic 12-bit DX frontal films of a few sizes, as Part 10 bytes read back like spooled files."""
    studies = []
    for seed in range(count):
        buffer = BytesIO()
        spec = ImageSpec(rows=2048 + 64 * (seed % 4), columns=1792 + 32 * (seed % 3), bits_stored=12)
        make_image(StudySpec(seed=seed), spec).save_as(buffer, enforce_file_format=True)
        studies.append([study_image(buffer.getvalue())])
    return studies


class _Gpu:
    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def describe(self) -> str:
        if not self.cuda:
            return f"CPU ({platform.processor() or platform.machine()})"
        props = self.torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"


def _worker_row(reader: StudyReader, studies: list[list[StudyImage]], batch: int, gpu: _Gpu) -> Row:
    gpu.reset_peak()
    gpu.sync()
    started = time.perf_counter()
    outcomes = reader.read_many(studies)
    gpu.sync()
    seconds = time.perf_counter() - started
    readings = [outcome for outcome in outcomes if isinstance(outcome, Reading)]
    assert len(readings) == len(studies), "every synthetic frontal study must be read"
    assert all(reading.timings.batch_size == min(batch, len(studies)) for reading in readings)
    generated = sum(reading.tokens.generated for reading in readings)
    stages = "prepare {:.1f} / generate {:.1f} / parse {:.1f}".format(
        *(
            sum(getattr(reading.timings, stage) for reading in readings)
            for stage in ("prepare_s", "generate_s", "parse_s")
        )
    )
    return Row("worker path (DICOM bytes to Reading)", batch, len(studies), seconds, generated, gpu.peak_gib(), stages)


def _peer_row(
    backend: TransformersBackend, reader: StudyReader, inputs: list[StudyInput], batch: int, gpu: _Gpu
) -> tuple[Row, list[list[int]]]:
    """Bare transformers on prepared pictures: processor and generate, nothing decoded or parsed.

    It generates with the backend's own generation config, so the two rows differ only by what the worker path
    adds around generate.
    """
    import torch

    from radtrace.model.backends.transformers import greedy_config

    processor, model = backend.vlm.processor, backend.vlm.model
    prompt = processor.apply_chat_template(reader.profile.messages(1), add_generation_prompt=True, tokenize=False)
    tokens: list[list[int]] = []
    gpu.reset_peak()
    gpu.sync()
    started = time.perf_counter()
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        encoded = processor(
            images=[item.pictures[0].image() for item in chunk], text=[prompt] * len(chunk), padding=True,
            return_tensors="pt",
        ).to(backend.vlm.device)  # fmt: skip
        with torch.inference_mode():
            output = model.generate(**encoded, generation_config=greedy_config(backend))
        tokens.extend(output[:, encoded["input_ids"].shape[1] :].tolist())
    gpu.sync()
    seconds = time.perf_counter() - started
    generated = sum(len(row) for row in tokens)
    return Row("peer: bare model.generate (prepared)", batch, len(inputs), seconds, generated, gpu.peak_gib()), tokens


def _divergence(single: list[list[int]], batched: list[list[int]]) -> dict[str, Any]:
    """How many of the single-read studies got other greedy tokens in the batch, and from which position."""
    differing = []
    for alone, together in zip(single, batched, strict=False):
        first = next((i for i, (a, b) in enumerate(zip(alone, together, strict=False)) if a != b), None)
        if first is None and len(alone) != len(together):
            first = min(len(alone), len(together))
        if first is not None:
            differing.append(first)
    compared = min(len(single), len(batched))
    return {"compared": compared, "differing": len(differing), "first_difference_at": differing}


def run_full_size(
    *, batches: list[int], max_new_tokens: int, tiny_config: bool, device: str, cache: str, out: Path | None
) -> int:
    """Build the random model, measure every batch size, print the table (and write it to ``out``)."""
    import torch
    import transformers

    built = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        vlm = build_random_vlm(
            Path(scratch) / "model", size="tiny-config" if tiny_config else "3b", device=device,
            min_pixels=128 * 128, max_pixels=476 * 476,
        )  # fmt: skip
        build_s = time.perf_counter() - built
        gpu = _Gpu(vlm.device)
        parameters = sum(p.numel() for p in vlm.model.parameters())
        static = cache if cache == "static" else None
        backend = TransformersBackend(
            vlm, source="random", max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
            cache_implementation=static,
        )  # fmt: skip
        made = time.perf_counter()
        studies = _studies(max(max(batches), _SINGLE_STUDIES))
        make_s = time.perf_counter() - made

        # One untimed full-length read of the largest batch first: kernels load, and the CUDA caching allocator
        # grows to its working set once. The first H200 run, warmed with 8 tokens only, showed a gap of 25-50 s
        # per row between the worker rows (measured first at each batch size) and the peer rows (measured after
        # them) that its stage times could not explain; a cold allocator growing the KV cache step by step is the
        # suspected cause, and this warm-up takes it out of every row.
        warmed = time.perf_counter()
        warm_settings = load_settings(model={"device": vlm.device, "batch_size": max(batches)})
        StudyReader(warm_settings.model, backend=backend).read_many(studies[: max(batches)])
        warm_s = time.perf_counter() - warmed

        rows: list[Row] = []
        single_tokens: list[list[int]] = []
        divergence: dict[int, dict[str, Any]] = {}
        for batch in batches:
            count = max(batch, _SINGLE_STUDIES) if batch == 1 else batch
            settings = load_settings(model={"device": vlm.device, "batch_size": batch})
            reader = StudyReader(settings.model, backend=backend)
            rows.append(_worker_row(reader, studies[:count], batch, gpu))
            inputs = [item for item in (reader.prepare(study) for study in studies[:count])]
            assert all(isinstance(item, StudyInput) for item in inputs)
            row, tokens = _peer_row(backend, reader, inputs, batch, gpu)  # type: ignore[arg-type]
            rows.append(row)
            if batch == 1:
                single_tokens = tokens
            elif single_tokens:
                divergence[batch] = _divergence(single_tokens, tokens)
            reader.close()
            _print_row(rows[-2])
            _print_row(rows[-1])

    header = [
        f"model: random Qwen2.5-VL, {'TINY layers, real vocabulary' if tiny_config else '3B architecture'} "
        f"({parameters / 1e9:.2f} B parameters), {vlm.dtype}, attention {vlm.model.config._attn_implementation}, "
        f"{cache} KV cache",
        f"device: {gpu.describe()}; torch {torch.__version__}, transformers {transformers.__version__}",
        f"trace length forced to {max_new_tokens} new tokens; images 2048-2240 x 1792-1856 12-bit DX, "
        f"prepared to <= 476^2 pixels; model built in {build_s:.1f} s, {len(studies)} studies made in {make_s:.1f} s, "
        f"one untimed warm-up batch of {max(batches)} in {warm_s:.1f} s",
    ]
    table = _table(rows)
    lines = [*header, "", *table, ""]
    for batch, found in divergence.items():
        lines.append(
            f"greedy tokens at batch {batch} vs batch 1 ({vlm.dtype}): {found['differing']} of {found['compared']} "
            f"studies differ (first differing position: {found['first_difference_at'] or '-'})"
        )
    text = "\n".join(lines)
    print(text)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
        out.with_suffix(".json").write_text(
            json.dumps({"rows": [asdict(row) for row in rows], "divergence": divergence, "header": header}, indent=1),
            encoding="utf-8",
        )
    return 0


def _print_row(row: Row) -> None:
    print(
        f"  measured {row.path}: batch {row.batch}, {row.studies} studies in {row.seconds:.1f} s",
        flush=True,
    )


def _table(rows: list[Row]) -> list[str]:
    baseline = {row.path: row.studies_per_s for row in rows if row.batch == 1}
    lines = [
        f"| {'path':<38} | batch | studies | {'s':>6} | studies/s | gen tokens/s | x batch 1 | peak GPU GiB | "
        "worker stages, s |",
        f"|{'-' * 40}|------:|--------:|-------:|----------:|-------------:|----------:|-------------:|---|",
    ]
    for row in rows:
        speedup = row.studies_per_s / baseline[row.path] if row.path in baseline else float("nan")
        peak = f"{row.peak_gpu_gib:.1f}" if row.peak_gpu_gib is not None else "-"
        lines.append(
            f"| {row.path:<38} | {row.batch:>5} | {row.studies:>7} | {row.seconds:>6.1f} | {row.studies_per_s:>9.2f} "
            f"| {row.tokens_per_s:>12.0f} | {speedup:>9.1f} | {peak:>12} | {row.stages} |"
        )
    return lines
