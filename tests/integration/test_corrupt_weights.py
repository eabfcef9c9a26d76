"""Weights that are there but cannot be loaded (a truncated safetensors file, a config.json that is not JSON or does
not fit the weights) are treated like missing ones: said once, naming the file, and nothing is tried again until the
model directory changes; studies wait in ``queued``.

Before, the start-up check passed them (every file was present), serve started the GPU worker, the load failed
("Error while deserializing header: incomplete metadata, file not fully covered", naming no file) and serve restarted
the worker with backoff for ever, loading the model each time."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import radtrace.worker.service
from radtrace.config import load_settings
from radtrace.errors import ModelFilesError
from radtrace.model.loading import checkpoint_problem, load_vlm
from radtrace.preflight import check_model_weights
from radtrace.supervisor import WEIGHTS_RECHECK_S, Component, Supervisor
from radtrace.worker.service import warm_when_loadable
from radtrace.worker.tasks import WorkerRuntime

pytestmark = pytest.mark.integration


def _truncate(directory: Path) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _cut_header(directory: Path) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _config_not_json(directory: Path) -> None:
    config = directory / "config.json"
    config.write_text(config.read_text(encoding="utf-8")[:200], encoding="utf-8")


def _tokenizer_not_json(directory: Path) -> None:
    tokenizer = directory / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text(encoding="utf-8")[:300], encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (_truncate, "model.safetensors is truncated"),
        (_cut_header, "model.safetensors is 100 bytes"),
        (_config_not_json, "config.json is not valid JSON (Unterminated string"),
        (_tokenizer_not_json, "tokenizer.json is not valid JSON"),
    ],
)
def test_a_damaged_file_is_named_by_the_check_and_by_the_loader(
    tiny_model_dir: Path, tmp_path: Path, damage: object, said: str
) -> None:
    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken"))
    damage(broken)  # type: ignore[operator]

    problem = checkpoint_problem(broken)
    assert problem is not None
    assert said in problem
    check = check_model_weights(load_settings(data_dir=tmp_path, model={"path": broken}))
    assert check.status == "warning"
    assert said in check.detail
    with pytest.raises(ModelFilesError, match=said.replace("(", r"\(")) as raised:
        load_vlm(broken, device="cpu")
    assert raised.value.directory == broken
    assert checkpoint_problem(tiny_model_dir) is None


def test_serve_does_not_start_the_worker_on_truncated_weights_until_the_directory_changes(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights = Path(shutil.copytree(tiny_model_dir, tmp_path / "weights"))
    _truncate(weights)
    settings = load_settings(data_dir=tmp_path / "data", model={"path": weights, "device": "cpu"})
    supervisor = Supervisor(settings, [Component("worker", ("--help",), needs_model=True)])
    child = supervisor.children[0]
    caplog.set_level(logging.INFO, logger="radtrace.supervisor")

    now = time.monotonic()
    for step in range(4):  # four rechecks, the directory unchanged
        supervisor._start(child, now + step * (WEIGHTS_RECHECK_S + 1))
        assert child.process is None
    waiting = [r.getMessage() for r in caplog.records if "inference is waiting" in r.getMessage()]
    assert len(waiting) == 1, waiting  # said once
    assert "model.safetensors is truncated" in waiting[0]
    assert "change" in waiting[0]

    shutil.copy2(tiny_model_dir / "model.safetensors", weights / "model.safetensors")  # copied again
    supervisor._start(child, now + 5 * (WEIGHTS_RECHECK_S + 1))
    process = child.process
    assert process is not None  # started once the files changed
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert "model weights found" in caplog.text


def test_a_worker_whose_configuration_does_not_fit_the_weights_waits_for_the_files_to_change(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found only by loading (config.json is JSON, its sizes are not the weights'): the worker, not serve, waits."""
    monkeypatch.setattr(radtrace.worker.service, "WEIGHTS_RECHECK_S", 0.1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = Path(shutil.copytree(tiny_model_dir, tmp_path / "weights"))
    config = json.loads((weights / "config.json").read_text(encoding="utf-8"))
    config["text_config"]["hidden_size"] = 128
    (weights / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert checkpoint_problem(weights) is None  # the cheap check cannot see this one
    (tmp_path / "data").mkdir()
    settings = load_settings(data_dir=tmp_path / "data", model={"path": weights, "device": "cpu"})
    runtime = WorkerRuntime(settings)
    caplog.set_level(logging.INFO, logger="radtrace.worker.service")
    stop = threading.Event()
    loaded: list[bool] = []
    worker = threading.Thread(target=lambda: loaded.append(warm_when_loadable(runtime, stop)), daemon=True)
    worker.start()

    deadline = time.monotonic() + 30
    while "takes no studies" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # several rechecks of an unchanged directory
    assert worker.is_alive()
    said = [r.getMessage() for r in caplog.records if "takes no studies" in r.getMessage()]
    assert len(said) == 1, said
    assert "config.json does not fit the weights" in said[0]

    shutil.copy2(tiny_model_dir / "config.json", weights / "config.json")
    worker.join(timeout=30)
    stop.set()
    assert loaded == [True]
    assert "model loaded: this worker takes studies now" in caplog.text
