"""The weights hash: over the weight files in name order, cached by size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from radtrace.model import identity
from radtrace.model.identity import weights_sha256

pytestmark = pytest.mark.unit


def test_hash_is_over_the_weight_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"second")
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"first")
    (tmp_path / "config.json").write_text("{}")
    assert weights_sha256(tmp_path) == hashlib.sha256(b"firstsecond").hexdigest()
    assert weights_sha256(tmp_path / "empty-dir-does-not-exist") is None


def test_cached_by_size_and_mtime_in_memory_and_on_disk(tmp_path: Path) -> None:
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights v1")
    cache = tmp_path / "cache" / "weights-sha256.json"
    first = weights_sha256(weights.parent, cache_file=cache)
    assert first == hashlib.sha256(b"weights v1").hexdigest()
    assert list(json.loads(cache.read_text()).values()) == [first]

    # a new process reads the cache instead of hashing: prove it by planting a digest for the same file state
    identity._memory.clear()
    key = next(iter(json.loads(cache.read_text())))
    cache.write_text(json.dumps({key: "f" * 64}))
    assert weights_sha256(weights.parent, cache_file=cache) == "f" * 64

    # a changed file (size and mtime) is hashed afresh
    weights.write_bytes(b"weights version 2")
    os.utime(weights, ns=(1, 1))
    assert weights_sha256(weights.parent, cache_file=cache) == hashlib.sha256(b"weights version 2").hexdigest()


def test_damaged_cache_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"w")
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    identity._memory.clear()
    assert weights_sha256(tmp_path, cache_file=cache) == hashlib.sha256(b"w").hexdigest()
