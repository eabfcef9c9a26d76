"""A damaged ONNX export is waited out like damaged safetensors weights: said once, then nothing until its files
change (:class:`~radtrace.errors.ModelFilesError`, ``worker.service.warm_when_loadable``).

Before, a file whose sha256 differs from the manifest, a file or graph missing from it, or a graph ONNX Runtime
cannot load were plain ``ModelLoadError``: the worker exited 1 and ``radtrace serve`` started it again, for ever.

The export here is made by hand, not by ``radtrace model export-onnx`` (exporting the tiny model takes far longer
than these checks): a manifest as the exporter writes it over three graph files that are no ONNX graphs, and the
processor stubbed (only its image token id is compared with the manifest).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import radtrace.model.loading
import radtrace.worker.service
from radtrace.config import load_settings
from radtrace.errors import ModelFilesError, ModelLoadError
from radtrace.model.backends.onnxruntime import load_export
from radtrace.model.onnx.manifest import GRAPHS, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, file_sha256
from radtrace.worker.service import warm_when_loadable
from radtrace.worker.tasks import WorkerRuntime

pytestmark = pytest.mark.integration

IMAGE_TOKEN_ID = 151655


def _export(directory: Path) -> Path:
    """An export whose manifest matches its files; its graphs are bytes ONNX Runtime cannot load."""
    directory.mkdir()
    for name in GRAPHS:
        (directory / f"{name}.onnx").write_bytes(f"not an ONNX graph: {name}".encode())
    _write_manifest(directory)
    return directory


def _write_manifest(directory: Path, **changes: Any) -> None:
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "graphs": {name: {"file": f"{name}.onnx"} for name in GRAPHS},
        "files": {f"{name}.onnx": file_sha256(directory / f"{name}.onnx") for name in GRAPHS},
        "model": {"image_token_id": IMAGE_TOKEN_ID},
        "dtype": "float32",
        "opset": 17,
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest | changes), encoding="utf-8")


@pytest.fixture(autouse=True)
def processor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        radtrace.model.loading, "load_processor", lambda *_, **__: SimpleNamespace(image_token_id=IMAGE_TOKEN_ID)
    )


def _changed(directory: Path) -> None:
    (directory / "decoder.onnx").write_bytes(b"changed since the export")


def _missing(directory: Path) -> None:
    (directory / "vision.onnx").unlink()


def _graph_left_out(directory: Path) -> None:
    _write_manifest(directory, graphs={"vision": {"file": "vision.onnx"}})


def _manifest_cut(directory: Path) -> None:
    manifest = directory / MANIFEST_FILE
    manifest.write_text(manifest.read_text(encoding="utf-8")[:40], encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (_changed, "the sha256 of decoder.onnx differs from the manifest"),
        (_missing, "lacks vision.onnx named in its manifest"),
        (_graph_left_out, "lacks the graphs vision, embed, decoder"),
        (_manifest_cut, "cannot read"),
        (lambda _: None, "ONNX Runtime cannot load"),  # every sha256 right, the graphs still no ONNX
    ],
    ids=["changed", "missing", "graph-left-out", "manifest-cut", "onnxruntime-cannot-load"],
)
def test_a_damaged_export_is_a_files_error_naming_its_directory(tmp_path: Path, damage: Any, said: str) -> None:
    export = _export(tmp_path / "export")
    damage(export)
    with pytest.raises(ModelFilesError) as raised:
        load_export(export, min_pixels=1, max_pixels=1 << 20)
    assert said in raised.value.reason
    assert raised.value.directory == export


def test_an_export_that_is_not_there_is_not_waited_for(tmp_path: Path) -> None:
    """Nothing there (or no manifest) is a missing model, as missing safetensors weights are: exit 1 as before."""
    for directory in (tmp_path / "nothing", tmp_path):
        with pytest.raises(ModelLoadError) as raised:
            load_export(directory, min_pixels=1, max_pixels=1 << 20)
        assert not isinstance(raised.value, ModelFilesError)


def test_a_worker_on_a_damaged_export_says_it_once_and_waits_for_the_files_to_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = _export(tmp_path / "export")
    _changed(export)
    monkeypatch.setattr(radtrace.worker.service, "WEIGHTS_RECHECK_S", 0.05)
    settings = load_settings(data_dir=tmp_path / "data", model={"path": export, "backend": "onnxruntime"})
    runtime = WorkerRuntime(settings)
    caplog.set_level(logging.INFO, logger="radtrace.worker.service")
    stop = threading.Event()
    loaded: list[bool] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            loaded.append(warm_when_loadable(runtime, stop))
        except BaseException as exc:  # before: the ModelLoadError that ended the worker (exit 1, restarted)
            failed.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "takes no studies" in r.getMessage()]

    deadline = time.monotonic() + 10
    while not said() and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # ten rechecks of an unchanged directory: nothing more said
    assert failed == []
    assert worker.is_alive()
    assert len(said()) == 1
    assert "sha256 of decoder.onnx differs" in said()[0]

    _write_manifest(export)  # the files changed: tried again, and the next fault is said once too
    deadline = time.monotonic() + 10
    while len(said()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert [("cannot load" in line) for line in said()] == [False, True]
    stop.set()
    worker.join(timeout=10)
    assert loaded == [False]
