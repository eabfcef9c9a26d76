"""Exactly which weights produced a reading: a sha256 over the weight files, computed once per file state.

The digest is the sha256 of the weight files' bytes concatenated in name order (``cat $(ls *.safetensors) |
sha256sum`` reproduces it). Hashing a 3B checkpoint (~7.5 GB) takes tens of seconds, so the result is cached
by each file's name, size and modification time: in memory for the process, and in an optional JSON file so a
restarted worker does not hash again. A changed file (new size or mtime) is hashed afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from radtrace.model.tiny_model import TINY_MARKER_FILE

if TYPE_CHECKING:
    from radtrace.model.profiles.base import Profile

__all__ = ["WEIGHT_PATTERNS", "model_name_of", "weight_files", "weights_sha256"]

logger = logging.getLogger(__name__)

WEIGHT_PATTERNS: Final = ("*.safetensors", "*.bin", "*.pt", "*.onnx", "*.onnx.data", "*.gguf")
_CHUNK: Final = 8 * 1024 * 1024
_memory: dict[str, str] = {}
_lock = threading.Lock()


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, in name order (symlinks into an HF cache followed)."""
    files = {path for pattern in WEIGHT_PATTERNS for path in directory.glob(pattern) if path.is_file()}
    return sorted(files, key=lambda path: path.name)


def weights_sha256(directory: Path, *, cache_file: Path | None = None) -> str | None:
    """The sha256 over ``directory``'s weight files, or ``None`` where it has none.

    ``cache_file`` (JSON) keeps digests across processes; it is rewritten atomically and a damaged one is
    ignored.
    """
    files = weight_files(directory)
    if not files:
        return None
    key = _state_key(files)
    with _lock:
        if key in _memory:
            return _memory[key]
        stored = _read_cache(cache_file)
        digest = stored.get(key)
        if digest is None:
            logger.info("hashing %d weight file(s) in %s", len(files), directory)
            hasher = hashlib.sha256()
            for path in files:
                with path.open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        hasher.update(chunk)
            digest = hasher.hexdigest()
            if cache_file is not None:
                stored[key] = digest
                _write_cache(cache_file, stored)
        _memory[key] = digest
        return digest


def _state_key(files: list[Path]) -> str:
    parts = []
    for path in files:
        stat = path.stat()
        parts.append(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _read_cache(cache_file: Path | None) -> dict[str, str]:
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        loaded = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {str(k): str(v) for k, v in loaded.items() if isinstance(v, str) and len(v) == 64}


def _write_cache(cache_file: Path, entries: dict[str, str]) -> None:
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
        temporary.replace(cache_file)
    except OSError as exc:  # a read-only data dir costs a re-hash next time, nothing more
        logger.warning("cannot write the weights hash cache %s: %s", cache_file, exc)


def model_name_of(directory: Path, profile: Profile) -> str:
    """The model's name in a reading's identity, the same for every backend: the profile's, or the tiny random
    model's own name with a warning when the checkpoint (or export) carries the tiny model's marker."""
    marker = directory / TINY_MARKER_FILE
    if marker.is_file():
        try:
            return f"{json.loads(marker.read_text(encoding='utf-8'))['name']} (random weights, not for clinical use)"
        except (OSError, ValueError, KeyError, TypeError):
            return "radtrace tiny test model (random weights, not for clinical use)"
    return profile.model_name
