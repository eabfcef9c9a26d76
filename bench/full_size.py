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


_DISTINCT_STUDIES = 64


def _studies(count: int) -> list[list[StudyImage]]:
    """Synthetic 12-bit DX frontal films of a few sizes, as Part 10 bytes read back like spooled files.

    Up to 64 distinct films; a larger batch reads them again (each is decoded and prepared again all the same).
    """
    studies: list[list[StudyImage]] = []
    for seed in range(min(count, _DISTINCT_STUDIES)):
        buffer = BytesIO()
        spec = ImageSpec(rows=2048 + 64 * (seed % 4), columns=1792 + 32 * (seed % 3), bits_stored=12)
        make_image(StudySpec(seed=seed), spec).save_as(buffer, enforce_file_format=True)
        studies.append([study_image(buffer.getvalue())])
    return [studies[index % len(studies)] for index in range(count)]


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
    *,
    batches: list[int],
    max_new_tokens: int,
    tiny_config: bool,
    device: str,
    cache: str,
    out: Path | None,
    single_studies: int = _SINGLE_STUDIES,
    peer_batches: list[int] | None = None,
    cudnn_ab: int | None = None,
    budget_s: float | None = None,
    warmup_tokens: int = 32,
) -> int:
    """Build the random model, measure each batch size in the order given, write the table after every row.

    ``peer_batches``: the batch sizes that also get a bare-generate row (default: all). ``cudnn_ab``: after that
    batch size's rows, one more worker row with cuDNN allowed in SDPA, on shapes cuDNN has not planned yet.
    ``budget_s``: a row whose estimated time would end the run past this many seconds from the start is skipped
    (said in the table), so a device lent for minutes returns a table rather than a timeout.
    """
    import torch
    import transformers

    started = time.perf_counter()
    peers = set(batches if peer_batches is None else peer_batches)
    with tempfile.TemporaryDirectory() as scratch:
        vlm = build_random_vlm(
            Path(scratch) / "model", size="tiny-config" if tiny_config else "3b", device=device,
            min_pixels=128 * 128, max_pixels=476 * 476,
        )  # fmt: skip
        build_s = time.perf_counter() - started
        gpu = _Gpu(vlm.device)
        parameters = sum(p.numel() for p in vlm.model.parameters())
        static = cache if cache == "static" else None

        def backend_for(tokens: int, *, cudnn: bool = False) -> TransformersBackend:
            return TransformersBackend(
                vlm, source="random", max_new_tokens=tokens, min_new_tokens=tokens, cache_implementation=static,
                cudnn_attention=cudnn,
            )  # fmt: skip

        backend = backend_for(max_new_tokens)
        made = time.perf_counter()
        studies = _studies(max(max(batches), single_studies))
        make_s = time.perf_counter() - made

        # One untimed short read of the largest batch first: kernels load, the vision encoder and the prefill run
        # at full width, and the CUDA caching allocator grows to most of its working set once.
        warmed = time.perf_counter()
        warm_settings = load_settings(model={"device": vlm.device, "batch_size": max(batches)})
        StudyReader(warm_settings.model, backend=backend_for(warmup_tokens)).read_many(studies[: max(batches)])
        warm_s = time.perf_counter() - warmed

        header = [
            f"model: random Qwen2.5-VL, {'TINY layers, real vocabulary' if tiny_config else '3B architecture'} "
            f"({parameters / 1e9:.2f} B parameters), {vlm.dtype}, attention {vlm.model.config._attn_implementation}"
            f"{' (cuDNN kernels off)' if gpu.cuda else ''}, {cache} KV cache",
            f"device: {gpu.describe()}; torch {torch.__version__}, transformers {transformers.__version__}",
            f"trace length forced to {max_new_tokens} new tokens; images 2048-2240 x 1792-1856 12-bit DX, "
            f"prepared to <= 476^2 pixels; model built in {build_s:.1f} s, {len(studies)} studies made in "
            f"{make_s:.1f} s, one untimed warm-up batch of {max(batches)} ({warmup_tokens} tokens) in {warm_s:.1f} s",
        ]
        rows: list[Row] = []
        notes: list[str] = []
        single_tokens: list[list[int]] = []
        divergence: dict[int, dict[str, Any]] = {}

        def report() -> None:
            _write(out, header, rows, notes, divergence)

        def fits(batch: int, paths: int) -> bool:
            if budget_s is None:
                return True
            estimate = paths * _estimate_s(rows, batch)
            left = budget_s - (time.perf_counter() - started)
            if estimate <= left:
                return True
            notes.append(f"batch {batch}: skipped, about {estimate:.0f} s needed and {left:.0f} s of the budget left")
            print(f"  {notes[-1]}", flush=True)
            return False

        for batch in batches:
            count = max(batch, single_studies) if batch == 1 else batch
            with_peer = batch in peers
            if not fits(batch, 2 if with_peer else 1):
                continue
            settings = load_settings(model={"device": vlm.device, "batch_size": batch})
            reader = StudyReader(settings.model, backend=backend)
            rows.append(_worker_row(reader, studies[:count], batch, gpu))
            _print_row(rows[-1])
            report()
            if with_peer:
                inputs = [reader.prepare(study) for study in studies[:count]]
                assert all(isinstance(item, StudyInput) for item in inputs)
                row, tokens = _peer_row(backend, reader, inputs, batch, gpu)  # type: ignore[arg-type]
                rows.append(row)
                _print_row(row)
                if batch == 1:
                    single_tokens = tokens
                elif single_tokens:
                    divergence[batch] = _divergence(single_tokens, tokens)
                report()
            reader.close()
            if batch == cudnn_ab and gpu.cuda and fits(batch, 1):
                cudnn_reader = StudyReader(settings.model, backend=backend_for(max_new_tokens, cudnn=True))
                row = _worker_row(cudnn_reader, studies[:count], batch, gpu)
                row.path = "worker path, cuDNN SDPA allowed"
                rows.append(row)
                _print_row(row)
                cudnn_reader.close()
                backend = backend_for(max_new_tokens)  # cuDNN off again for the rows after this one
                report()
    report()
    print("\n".join(_lines(header, rows, notes, divergence)))
    return 0


def _estimate_s(rows: list[Row], batch: int) -> float:
    """Seconds one path of a row at ``batch`` (one generate call) should take, from the rows measured so far.

    Decoding is bound by launching kernels, so a call costs about the same per step whatever its batch, plus a
    part that grows with the batch: linear through the two measured batch sizes nearest to it (with one only,
    twice its time per 128 more studies, more than any step time measured on an H200 so far).
    """
    calls = {row.batch: row.seconds / -(-row.studies // row.batch) for row in rows}
    points = sorted(calls.items())
    if not points:
        return 0.0
    if len(points) == 1:
        (b0, c0) = points[0]
        return c0 * (1 + max(0, batch - b0) / 128)
    nearest = sorted(sorted(points, key=lambda point: abs(point[0] - batch))[:2])
    (b0, c0), (b1, c1) = nearest
    return max(0.0, c0 + (c1 - c0) * (batch - b0) / (b1 - b0))


def _write(out: Path | None, header: list[str], rows: list[Row], notes: list[str], divergence: dict[int, Any]) -> None:
    if out is None:
        return
    out.write_text("\n".join(_lines(header, rows, notes, divergence)) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(
        json.dumps(
            {"rows": [asdict(row) for row in rows], "divergence": divergence, "header": header, "notes": notes},
            indent=1,
        ),
        encoding="utf-8",
    )


def _lines(header: list[str], rows: list[Row], notes: list[str], divergence: dict[int, Any]) -> list[str]:
    lines = [*header, "", *_table(rows), "", *notes]
    for batch, found in divergence.items():
        lines.append(
            f"greedy tokens at batch {batch} vs batch 1: {found['differing']} of {found['compared']} "
            f"studies differ (first differing position: {found['first_difference_at'] or '-'})"
        )
    return lines


def _kind(row: Row) -> str:
    """worker or peer: a row's speed-up is against the batch-1 row of its own kind."""
    return row.path.split()[0]


def _print_row(row: Row) -> None:
    print(
        f"  measured {row.path}: batch {row.batch}, {row.studies} studies in {row.seconds:.1f} s "
        f"({row.studies_per_s:.2f} studies/s, {row.tokens_per_s:.0f} tokens/s, peak {row.peak_gpu_gib} GiB; "
        f"{row.stages or 'prepared beforehand'})",
        flush=True,
    )


def _table(rows: list[Row]) -> list[str]:
    baseline = {_kind(row): row.studies_per_s for row in rows if row.batch == 1}
    lines = [
        f"| {'path':<38} | batch | studies | {'s':>6} | studies/s | gen tokens/s | x batch 1 | peak GPU GiB | "
        "worker stages, s |",
        f"|{'-' * 40}|------:|--------:|-------:|----------:|-------------:|----------:|-------------:|---|",
    ]
    for row in rows:
        speedup = row.studies_per_s / baseline[_kind(row)] if _kind(row) in baseline else float("nan")
        peak = f"{row.peak_gpu_gib:.1f}" if row.peak_gpu_gib is not None else "-"
        lines.append(
            f"| {row.path:<38} | {row.batch:>5} | {row.studies:>7} | {row.seconds:>6.1f} | {row.studies_per_s:>9.2f} "
            f"| {row.tokens_per_s:>12.0f} | {speedup:>9.1f} | {peak:>12} | {row.stages} |"
        )
    return lines


def main() -> int:
    """``python bench/full_size.py``: the same run as ``bench/inference.py --full-size``, with its GPU-run knobs."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-config", action="store_true", help="tiny layers, for CPU tests")
    parser.add_argument("--batches", default="1,8,32,64", help="batch sizes, comma-separated, measured in this order")
    parser.add_argument("--peer-batches", default=None, help="batch sizes that also get a bare-generate row (all)")
    parser.add_argument("--single-studies", type=int, default=_SINGLE_STUDIES, help="studies read at batch 1")
    parser.add_argument("--cudnn-ab", type=int, default=None, help="also measure this batch with cuDNN SDPA allowed")
    parser.add_argument("--budget-s", type=float, default=None, help="skip a row that would end past this")
    parser.add_argument("--cache", choices=("dynamic", "static"), default="dynamic")
    parser.add_argument("--max-new-tokens", type=int, default=768)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (and .json beside it)")
    args = parser.parse_args()

    def sizes(text: str | None) -> list[int] | None:
        return None if text is None else [int(size) for size in text.split(",") if size]

    return run_full_size(
        batches=sizes(args.batches) or [1],
        max_new_tokens=args.max_new_tokens,
        tiny_config=args.tiny_config,
        device=args.device,
        cache=args.cache,
        out=args.out,
        single_studies=args.single_studies,
        peer_batches=sizes(args.peer_batches),
        cudnn_ab=args.cudnn_ab,
        budget_s=args.budget_s,
    )


if __name__ == "__main__":
    raise SystemExit(main())
