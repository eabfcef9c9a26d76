"""``radtrace-onnx.json``: what an export holds, checked before a single graph is loaded.

The manifest names every file of the export with its sha256 (graphs, their weight data, tokenizer and processor
files), the sha256 of the source checkpoint's weights (as :func:`radtrace.model.identity.weights_sha256` computes
it), the opset, the dtype, and the model dimensions the greedy loop needs. :func:`read_manifest` refuses a
manifest of another format or version, a missing file and a file whose bytes changed, each with a
:class:`ModelLoadError` that says which. Once the directory holds a manifest, every such fault is a
:class:`ModelFilesError` naming the directory: restarting cannot help until its files change, so a worker says it
once and waits for that (``worker.service.warm_when_loadable``), as for damaged safetensors weights.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Final

from radtrace.errors import ModelFilesError, ModelLoadError

__all__ = ["MANIFEST_FILE", "MANIFEST_FORMAT", "MANIFEST_VERSION", "file_sha256", "read_manifest"]

MANIFEST_FILE: Final = "radtrace-onnx.json"
MANIFEST_FORMAT: Final = "radtrace-onnx-export"
MANIFEST_VERSION: Final = 1
GRAPHS: Final = ("vision", "embed", "decoder")

_CHUNK: Final = 8 * 1024 * 1024
_hashed: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """The sha256 of one file, memoised for the process by path, size and modification time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key not in _hashed:
            hasher = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    hasher.update(chunk)
            _hashed[key] = hasher.hexdigest()
        return _hashed[key]


def read_manifest(directory: Path, *, verify: bool = True) -> dict[str, Any]:
    """Read and check an export's manifest; with ``verify``, also hash every file it names.

    Raises:
        ModelLoadError: no such directory or no manifest in it (the export is not there).
        ModelFilesError: unreadable JSON, another format or version, a graph missing from the manifest, a file
            missing from the directory, or a file whose sha256 differs (the export is there but damaged).
    """
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise ModelLoadError(f"ONNX export directory {directory} does not exist")
    if not path.is_file():
        raise ModelLoadError(
            f"{directory} has no {MANIFEST_FILE}: not a radtrace ONNX export "
            "(make one with 'radtrace model export-onnx')"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFilesError(f"cannot read {path}: {exc}", directory) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ModelFilesError(
            f"{path} is not a radtrace ONNX export manifest (format {MANIFEST_FORMAT!r} expected)", directory
        )
    if manifest.get("version") != MANIFEST_VERSION:
        raise ModelFilesError(
            f"{path} has manifest version {manifest.get('version')!r}; this radtrace reads version "
            f"{MANIFEST_VERSION}: export the model again with this radtrace",
            directory,
        )
    graphs = manifest.get("graphs")
    files = manifest.get("files")
    if not isinstance(graphs, dict) or not isinstance(files, dict) or any(name not in graphs for name in GRAPHS):
        raise ModelFilesError(f"{path} lacks the graphs {', '.join(GRAPHS)} or the file list", directory)
    missing = sorted(name for name in files if not (directory / name).is_file())
    if missing:
        raise ModelFilesError(f"ONNX export {directory} lacks {', '.join(missing)} named in its manifest", directory)
    if verify:
        changed = sorted(name for name, digest in files.items() if file_sha256(directory / name) != digest)
        if changed:
            raise ModelFilesError(
                f"ONNX export {directory}: the sha256 of {', '.join(changed)} differs from the manifest "
                "(files changed or damaged since the export)",
                directory,
            )
    return manifest
