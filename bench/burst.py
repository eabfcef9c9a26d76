"""``bench/pipeline.py --burst N``: N studies arriving at once through ``radtrace serve``, batch 1 against batched.

The same N synthetic two-image studies (PA + lateral, 12-bit DX) are sent in one ``storescu`` association to a
fresh ``radtrace serve`` (embedded defaults, TINY model on the CPU, dcmtk ``storescp`` as the PACS), with
``model.batch_size = 1`` and with ``--batch`` (8), each with the drafts built in the worker's own thread
(``model.draft_processes = 0``) and in ``--draft-processes`` (1) processes beside it: the figure is the wall time
from the first byte sent to the N-th SR stored at the PACS (its file's mtime), after one warm-up study each. The
peers are the same service at batch 1 and without draft processes, in the same run. With the tiny model and short
traces the reading costs little and the drafts (about 0.15 s of CPU a study) dominate; ``--max-new-tokens`` sets
the trace length (a real reasoning trace is about 768 tokens). On a GPU the generate call dominates and batching
is worth far more (``bench/inference.py --full-size``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline import CALLING_AE, DRAFT_SR_PREFIXES, _serve_env, _sr_count, _wait_until, child, pacs, prepare_studies
from radtrace.dicom_listener.dcmtk import echoscu, storescu
from radtrace.model.tiny_model import build_tiny_model
from radtrace.testing.studies import StudySpec, make_study, write_study


def _newest_mtime(directory: Path) -> float:
    """When the last draft SR arrived."""
    with os.scandir(directory) as entries:
        return max(entry.stat().st_mtime for entry in entries if entry.name.startswith(DRAFT_SR_PREFIXES))


def _one_run(args: argparse.Namespace, root: Path, model_dir: Path, files: list[Path], warm: list[Path], batch: int,
             draft_processes: int) -> float:  # fmt: skip
    """Seconds from the burst's first byte to its last SR stored at the PACS, at ``batch`` and ``draft_processes``."""
    from radtrace.testing.services import free_port

    with pacs(root / "pacs") as pacs_port:
        ports = {"listener": free_port(), "api": free_port(), "pacs": pacs_port}
        env = _serve_env(args, root, model_dir, ports) | {
            "RADTRACE_MODEL__BATCH_SIZE": str(batch),
            "RADTRACE_MODEL__DRAFT_PROCESSES": str(draft_processes),
        }
        log_file = root / "serve.log"
        with child([sys.executable, "-m", "radtrace", "serve"], env, log_file) as serve:
            _wait_until(
                lambda: serve.process.poll() is None and echoscu(ports["listener"], timeout=10).returncode == 0,
                90, "radtrace serve answering C-ECHO", log_file,
            )  # fmt: skip
            if storescu(warm, ports["listener"], calling=CALLING_AE).returncode != 0:
                raise RuntimeError("storescu of the warm-up study failed")
            _wait_until(lambda: _sr_count(root / "pacs") >= 1, 180, "the warm-up SR at the PACS", log_file)
            started = time.time()
            sent = storescu(files, ports["listener"], calling=CALLING_AE, timeout=600)
            if sent.returncode != 0:
                raise RuntimeError(f"storescu of the burst failed: {sent.stderr[-800:]}")
            serve.note_descendants()
            expected = 1 + args.burst
            _wait_until(lambda: _sr_count(root / "pacs") >= expected, 900, f"{args.burst} SRs at the PACS", log_file)
            if (held := _sr_count(root / "pacs")) != expected:
                raise RuntimeError(f"the PACS holds {held} draft SRs, not {expected}")
            return _newest_mtime(root / "pacs") - started


def run_burst(args: argparse.Namespace, workspace: Path, console: Console) -> int:
    """Measure the burst at batch 1 and at ``args.batch``, each with drafts built in the worker's own thread
    (``model.draft_processes = 0``, the service before draft processes) and in ``args.draft_processes``
    processes beside it; print the table."""
    with console.status("building the tiny model and the studies …"):
        model_dir = build_tiny_model(workspace / "tiny-model")
        studies = prepare_studies(workspace / "studies", args.burst)
        warm = write_study(make_study(StudySpec(seed=99_999)), workspace / "warm")
    files = [path for study in studies for path in study.files]
    seconds: dict[tuple[int, int], float] = {}
    for drafts in dict.fromkeys((0, args.draft_processes)):
        for batch in dict.fromkeys((1, args.batch)):
            with console.status(f"{args.burst} studies at once, model.batch_size {batch}, {drafts} draft processes …"):
                root = workspace / f"batch-{batch}-drafts-{drafts}"
                seconds[batch, drafts] = _one_run(args, root, model_dir, files, warm, batch, drafts)

    table = Table(title=f"burst: {args.burst} studies at once through radtrace serve (embedded), TINY model on CPU, "
                        f"settle {args.settle:g} s, max_new_tokens {args.max_new_tokens}")  # fmt: skip
    for column in ("model.batch_size", "model.draft_processes", "burst → last SR at PACS, s", "studies/s",
                   "x batch 1", "x batch 1, no draft processes"):  # fmt: skip
        table.add_column(column, justify="right")
    for (batch, drafts), wall in seconds.items():
        table.add_row(str(batch), str(drafts), f"{wall:.1f}", f"{args.burst / wall:.2f}",
                      f"{seconds[1, drafts] / wall:.2f}", f"{seconds[1, 0] / wall:.2f}")  # fmt: skip
    console.print(table)
    console.print("peers: the same service and burst at batch size 1, and with no draft processes, in the same run")
    return 0
