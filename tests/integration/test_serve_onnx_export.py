"""``radtrace serve`` with ``model.backend = "onnxruntime"`` starts the GPU worker on an export made by ``radtrace
model export-onnx``, and waits, saying what is missing, on one that lacks a file its manifest names.

Before, serve's supervisor judged an export as a transformers checkpoint: "model.path … lacks weights
(model.safetensors or …)", which an export never has, so the worker was never started and every study waited in
``queued`` for ever (a standalone ``radtrace worker`` read them)."""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

import pytest

from radtrace.config import Settings, load_settings
from radtrace.model.onnx.export import export_onnx
from radtrace.preflight import check_model_weights
from radtrace.supervisor import WEIGHTS_RECHECK_S, Component, Supervisor

pytestmark = pytest.mark.integration


class _Quick(Supervisor):
    """One GPU worker child that exits at once instead of ``radtrace worker``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, [Component("worker", ("worker",), needs_model=True)])

    def _argv(self, component: Component) -> list[str]:
        return [sys.executable, "-c", "pass"]


def test_serve_starts_the_worker_on_an_onnx_export_and_waits_on_a_damaged_one(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    export = tmp_path / "onnx"
    export_onnx(tiny_model_dir, export)
    caplog.set_level(logging.INFO, logger="radtrace.supervisor")
    settings = load_settings(data_dir=tmp_path / "data", model={"backend": "onnxruntime", "path": export})

    supervisor = _Quick(settings)
    child = supervisor.children[0]
    supervisor._start(child, time.monotonic())
    assert child.process is not None, caplog.text  # started at once: nothing to wait for
    child.process.wait(timeout=30)
    assert "waiting" not in caplog.text

    caplog.clear()
    damaged = Path(shutil.copytree(export, tmp_path / "damaged"))
    (damaged / "decoder.onnx.data").unlink()
    supervisor = _Quick(load_settings(data_dir=tmp_path / "data", model={"backend": "onnxruntime", "path": damaged}))
    child = supervisor.children[0]
    at = time.monotonic()
    for step in range(3):
        supervisor._start(child, at + step * (WEIGHTS_RECHECK_S + 1))
        assert child.process is None
    [waiting] = [r.getMessage() for r in caplog.records if r.name == "radtrace.supervisor"]
    assert waiting.startswith("inference is waiting for model weights that can be loaded (model.path ")
    assert "lacks decoder.onnx.data named in its manifest" in waiting
    assert "safetensors" not in waiting

    shutil.copy2(export / "decoder.onnx.data", damaged / "decoder.onnx.data")  # copied again
    supervisor._start(child, at + 4 * (WEIGHTS_RECHECK_S + 1))
    assert child.process is not None
    child.process.wait(timeout=30)
    assert caplog.records[-2].getMessage() == f"model weights found (ONNX export {damaged}): starting the worker"


def test_the_start_up_checks_judge_an_onnx_export_by_its_manifest(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The start-up checks table (serve, listen, worker) said a good export 'lacks model.safetensors' while serve
    started its worker: one check now, the supervisor's and the table's."""
    export = tmp_path / "onnx"
    export_onnx(tiny_model_dir, export)
    good = check_model_weights(load_settings(data_dir=tmp_path / "data", model={"backend": "onnxruntime",
                                                                               "path": export}))  # fmt: skip
    assert (good.status, good.detail) == ("ok", f"ONNX export {export}")
    (export / "decoder.onnx.data").unlink()
    damaged = check_model_weights(load_settings(data_dir=tmp_path / "data", model={"backend": "onnxruntime",
                                                                                  "path": export}))  # fmt: skip
    assert damaged.status == "warning"
    assert "lacks decoder.onnx.data named in its manifest" in damaged.detail
    assert "safetensors" not in damaged.detail
