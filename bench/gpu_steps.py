"""Where a decoding step's time goes at large batches: per-step times of a few generate configurations, and a profile.

``bench/full_size.py`` measures whole 768-token reads; on an H200 a decoding step of the random 3B model took
37 ms at batch 64 and 110 ms at batch 256, while the weights and KV cache it reads take a few milliseconds to
stream. This script times the steps themselves (a stopping criterion stamps each one; generate synchronises on
every step anyway) for configurations that change what a step does, then profiles a few steps of the default:

- ``dynamic``: the worker's configuration (DynamicCache, SDPA without cuDNN);
- ``static``: a preallocated KV cache, not compiled (no concatenation of the cache every step);
- ``gqa``: SDPA asked to handle grouped-query attention itself (``TRANSFORMERS_SDPA_FORCE_GQA=1``) instead of
  repeating the KV heads;
- ``static+compile``: transformers' compiled decoding step (CUDA graphs), last, as it compiles for minutes.

First H200 run (2026-12-04, ``python bench/gpu_steps.py --budget-s 165``, torch 2.11, transformers 5.17): at batch
256 the step took 55 ms (median; p90 62 ms) over the first 64 tokens after a 9.1 s prefill, against 110 ms on
average over a whole 768-token read: a step's cost grows with the length of the cache, which points at what a step
does per cached token (the dynamic cache is concatenated anew every step; the KV heads are repeated for SDPA's
mask path), not at the weights. The run then spent its remaining 150 s in the profiler, which is why
``--profile`` is now last and off by default; the other configurations are still to be measured.

    python bench/gpu_steps.py [--tiny-config --device cpu] [--out DIR] [--budget-s 200]

Each result is printed and appended to ``DIR/steps.md`` as soon as it is measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from full_size import _studies
from radtrace.config import load_settings
from radtrace.model.backends.transformers import TransformersBackend, greedy_config
from radtrace.model.reader import StudyReader
from radtrace.model.study import StudyInput
from radtrace.testing.random_model import build_random_vlm

CONFIGS: list[tuple[int, str]] = [(256, "dynamic"), (256, "static"), (256, "gqa"), (512, "dynamic"), (64, "dynamic")]


class _Stamps:
    """A stopping criterion that never stops and notes when each step ended."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-config", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tokens", type=int, default=64, help="decoding steps per configuration")
    parser.add_argument("--budget-s", type=float, default=200.0)
    parser.add_argument("--divide", type=int, default=1, help="divide every batch size by this (CPU tests)")
    parser.add_argument("--profile", action="store_true", help="last, profile 12 steps at batch 256 (slow on a GPU)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-results")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "steps.md"
    started = time.perf_counter()

    def say(line: str) -> None:
        print(line, flush=True)
        with report.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    import torch
    from transformers import StoppingCriteriaList

    with tempfile.TemporaryDirectory() as scratch:
        vlm = build_random_vlm(
            Path(scratch) / "model", size="tiny-config" if args.tiny_config else "3b", device=args.device,
            min_pixels=128 * 128, max_pixels=476 * 476,
        )  # fmt: skip
        cuda = vlm.device.startswith("cuda")
        backend = TransformersBackend(vlm, source="random", max_new_tokens=args.tokens, min_new_tokens=args.tokens)
        settings = load_settings(model={"device": vlm.device, "batch_size": 32})
        reader = StudyReader(settings.model, backend=backend)
        prepared = [reader.prepare(study) for study in _studies(32)]
        assert all(isinstance(item, StudyInput) for item in prepared)
        processor, model = vlm.processor, vlm.model
        prompt = processor.apply_chat_template(reader.profile.messages(1), add_generation_prompt=True, tokenize=False)
        encoded: dict[int, Any] = {}

        def inputs(batch: int) -> Any:
            if batch not in encoded:
                chosen = [prepared[index % len(prepared)] for index in range(batch)]
                encoded[batch] = processor(
                    images=[item.pictures[0].image() for item in chosen], text=[prompt] * batch,  # type: ignore[union-attr]
                    padding=True, return_tensors="pt",
                ).to(vlm.device)  # fmt: skip
            return encoded[batch]

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        def generate(batch: int, how: str, tokens: int) -> tuple[float, list[float]]:
            config = greedy_config(backend)
            config.max_new_tokens = config.min_new_tokens = tokens
            if how.startswith("static"):
                config.cache_implementation = "static"
                config.disable_compile = how == "static"
            os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] = "1" if how == "gqa" else "0"
            stamps = _Stamps()
            batch_inputs = inputs(batch)
            sync()
            begun = time.perf_counter()
            with torch.inference_mode():
                model.generate(
                    **batch_inputs, generation_config=config, stopping_criteria=StoppingCriteriaList([stamps])
                )
            sync()
            steps = [later - earlier for earlier, later in zip(stamps.times, stamps.times[1:], strict=False)]
            return (stamps.times[0] - begun if stamps.times else 0.0), steps

        device = torch.cuda.get_device_name(0) if cuda else "CPU"
        say(f"# decoding steps, {device}, torch {torch.__version__}, {args.tokens} steps per configuration")
        say(f"model built and studies prepared in {time.perf_counter() - started:.1f} s")
        say("| batch | configuration | prefill s | step ms median | step ms p90 | tokens/s at the median |")
        say("|--:|---|--:|--:|--:|--:|")
        for full_batch, how in [*CONFIGS, (64, "static+compile")]:
            batch = max(1, full_batch // args.divide)
            if time.perf_counter() - started > args.budget_s:
                say(f"| {batch} | {how} | skipped: past the {args.budget_s:.0f} s budget | | | |")
                continue
            try:
                prefill, steps = generate(batch, how, args.tokens)
            except Exception as exc:  # a configuration that fails is a finding, not the end
                say(f"| {batch} | {how} | failed: {type(exc).__name__}: {str(exc)[:160]} | | | |")
                continue
            tail = steps[2:] or steps
            median = statistics.median(tail)
            p90 = sorted(tail)[int(0.9 * (len(tail) - 1))]
            say(f"| {batch} | {how} | {prefill:.2f} | {median * 1e3:.1f} | {p90 * 1e3:.1f} | {batch / median:.0f} |")

        if args.profile:
            _profile(lambda: generate(max(1, 256 // args.divide), "dynamic", 12), say, cuda)
    say(f"total {time.perf_counter() - started:.1f} s")
    return 0


def _profile(work: Any, say: Any, cuda: bool) -> None:
    """The operators that take a batch-256 decoding step's time, by device time and by host time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as trace:
        work()
    averages = trace.key_averages()
    for key in ("self_device_time_total", "self_cpu_time_total") if cuda else ("self_cpu_time_total",):
        try:
            table = averages.table(sort_by=key, row_limit=14, max_name_column_width=60)
        except (AttributeError, KeyError, ValueError) as exc:
            table = f"(no table by {key}: {exc})"
        say(f"\nprofile of 12 steps at the first batch size, by {key}:\n```\n{table}\n```\n")


if __name__ == "__main__":
    raise SystemExit(main())
