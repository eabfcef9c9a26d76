"""What the tests of a worker reading through the tests' vLLM-like server share: its answers, and the fixtures.

A module imports the fixtures it uses (``from model_server_support import quick_probes_fixture, server_fixture,
store_fixture  # noqa: F401``: pytest takes fixtures from the module's names, an autouse one included, and knows them
as ``quick_probes``, ``server`` and ``store``) and defines its own ``settings`` fixture
(:func:`worker_support.vllm_worker_settings` with its batch size), which ``store`` and ``server`` then use.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import radtrace.worker.breaker
from radtrace.config import Settings
from radtrace.store.engine import Store
from radtrace.worker.output_guard import STOP_AFTER
from worker_support import FakeVllm, completion, fake_vllm_server, migrated_store

__all__ = ["GARBAGE", "PARSED", "STOPPED", "quick_probes_fixture", "server_fixture", "store_fixture"]

#: An engine writing '!!!!' from NaN logits: one token to the limit.
GARBAGE = completion("!" * 400, tokens=400, finish="length")
PARSED = completion("<think>Lungs clear. Heart normal.</think><answer>No Finding</answer>")
#: How the stop for unparseable output begins its reason.
STOPPED = f"model output unparseable for {STOP_AFTER} consecutive studies (model NV-Reason-CXR-3B"


@pytest.fixture(name="quick_probes", autouse=True)
def quick_probes_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """The breaker's first probe after 0.2 s (in-process pipelines; the settings cap probes at 0.4 s)."""
    monkeypatch.setattr(radtrace.worker.breaker, "PROBE_FIRST_S", 0.2)


@pytest.fixture(name="store")
def store_fixture(settings: Settings) -> Iterator[Store]:
    """The module's ``settings``' database, migrated."""
    with migrated_store(settings) as opened:
        yield opened


@pytest.fixture(name="server")
def server_fixture(settings: Settings) -> Iterator[FakeVllm]:
    """The vLLM-like server on the port of the module's ``settings``."""
    port = int(str(settings.model.vllm_url).rsplit(":", 1)[1])
    with fake_vllm_server(port) as fake:
        yield fake
