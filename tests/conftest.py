"""Fixtures shared by every test tier.

Real services, never mocks: ``postgres_url`` is a fresh database on the local PostgreSQL,
``redis_namespace`` a private key prefix on the local Redis; both servers are started if down.
``settings`` is an embedded-defaults configuration rooted in the test's own temporary directory.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import heavy_sampling
from radtrace.config import Settings, load_settings
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.services import (
    RedisNamespace,
    free_port,
    temporary_postgres_database,
    temporary_redis_namespace,
)
from sqlite_upgrade_support import in_production, install_from_environment, watching

if TYPE_CHECKING:
    from radtrace.model.loading import LoadedVLM

# pytest-xdist gives its workers COLUMNS and LINES (the controller's terminal: 80 x 24 where there is none). rich reads
# them once, when radtrace.cli's consoles are made at import, and then ignores the COLUMNS a test passes to
# CliRunner: tables wrapped at 80 under `make test` and not in one process. The CLI as users run it is unchanged.
for _inherited in ("COLUMNS", "LINES"):
    os.environ.pop(_inherited, None)

# SQLite transactions that read and then write without the write lock are watched in every test's process (a check
# per statement) and fail the test that made one in radtrace's code (_no_sqlite_write_after_read);
# SQLITE_UPGRADE_REPORT=<file> also records them, test code's too, in this process and the ones the tests start
# (tests/sqlite_upgrade_support.py).
install_from_environment(always=True)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's RADTRACE_* variables or reaches a model hub."""
    import os

    for name in list(os.environ):
        if name.startswith("RADTRACE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _no_sqlite_write_after_read() -> Iterator[None]:
    """A radtrace transaction on SQLite that read and then wrote without taking the write lock at BEGIN fails the test
    that ran it. SQLite refuses such a transaction the write lock at once ("database is locked", no busy wait) when
    another connection committed since its read: under load (listener, workers, dispatcher, API on one file) a random
    503 or failure. Take the lock up front (``store.session(..., immediate=True)``) or split the read from a
    conditional write. Only this process is watched (and the threads the test runs); a test that makes one on
    purpose wraps it in ``sqlite_upgrade_support.expected()``."""
    with watching() as offenders:
        yield
    found = in_production(offenders)
    if found:
        pytest.fail("SQLite write after a read without the write lock:\n" + "\n".join(found), pytrace=False)


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """configure_logging (entry points, logging tests) sets the root logger's level and installs radtrace's handler:
    put the level back, or later tests' caplog sees other loggers, and take away a radtrace handler the test
    installed. A command run in-process (typer's CliRunner) installs it on the stderr CliRunner gives the command
    and closes afterwards: left there, every later log call in this process printed '--- Logging error ---'
    (ValueError: I/O operation on closed file)."""
    root = logging.getLogger()
    level = root.level
    before = list(root.handlers)
    yield
    root.setLevel(level)
    for handler in [h for h in root.handlers if getattr(h, "_radtrace", False) and h not in before]:
        root.removeHandler(handler)


@pytest.fixture(params=["text", "json"])
def captured_log(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """What radtrace's own log handler writes from DEBUG up, in each format (text, json)."""
    from radtrace.logging import configure_logging

    stream = io.StringIO()
    handler = configure_logging(request.param, "DEBUG", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings with every file under this test's temporary directory."""
    return load_settings(data_dir=tmp_path / "radtrace")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a new, empty PostgreSQL database, dropped after the test."""
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture
def redis_namespace() -> Iterator[RedisNamespace]:
    """The local Redis with a key prefix private to this test, cleaned up afterwards."""
    with temporary_redis_namespace() as namespace:
        yield namespace


@pytest.fixture
def listener_port() -> int:
    """A free TCP port on 127.0.0.1 for a listener started by the test."""
    return free_port()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-VL built offline once per test run, shared by the xdist workers (see
    radtrace.model.tiny_model and tests/tiny_model_support.py); read-only to tests."""
    from tiny_model_support import shared_tiny_model

    return shared_tiny_model(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_vlm(tiny_model_dir: Path) -> Iterator[LoadedVLM]:
    """The tiny model loaded once per session on the CPU, offline, through the production loader."""
    from radtrace.model.loading import load_vlm

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield load_vlm(tiny_model_dir, device="cpu")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A migrated embedded (SQLite) work + audit database under ``tmp_path``."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    yield store
    store.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once for SQLite (the embedded default) and once for the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'radtrace.db'}"
    else:
        with temporary_postgres_database() as url:
            yield url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A migrated work + audit database on SQLite and on PostgreSQL."""
    migrated = Store.from_url(database_url)
    upgrade(migrated)
    yield migrated
    migrated.dispose()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    """A migrated work + audit database on PostgreSQL alone, for what SQLite cannot show (READ COMMITTED, row locks,
    concurrent writers)."""
    migrated = Store.from_url(postgres_url)
    upgrade(migrated)
    yield migrated
    migrated.dispose()


#: Tests that take ``database_url`` (or ``store``) run on both stores with ``RADTRACE_FULL_STORES=1`` or when tests
#: are picked with ``-k`` (``-k sqlite``); otherwise (``make test``, CI) each runs on one of the two, chosen by a
#: stable hash of its name, so both stores carry about half of them (CI's 30-minute budget).
FULL_STORES = os.environ.get("RADTRACE_FULL_STORES") == "1"
#: The heavy tests (tests/heavy_tests.txt) all run with ``RADTRACE_FULL_HEAVY=1`` or ``-k``; otherwise about a third of
#: them, by a seed (tests/heavy_sampling.py).
FULL_HEAVY = os.environ.get("RADTRACE_FULL_HEAVY") == "1"


def pytest_report_header(config: pytest.Config) -> str:
    if FULL_HEAVY or config.option.keyword:
        return "heavy tests: all (RADTRACE_FULL_HEAVY=1 or -k)"
    return f"heavy tests: about a third, RADTRACE_HEAVY_SEED={heavy_sampling.seed()} (RADTRACE_FULL_HEAVY=1 runs all)"


def _leave_out_half_of_the_heavy_tests(items: list[pytest.Item]) -> None:
    names = heavy_sampling.heavy_names()
    run_seed = heavy_sampling.seed()
    reason = f"heavy test left out of this run (RADTRACE_HEAVY_SEED={run_seed}; RADTRACE_FULL_HEAVY=1 runs it)"
    for item in items:
        name = f"{item.nodeid.split('::')[0]}::{getattr(item, 'originalname', item.name)}"
        if name in names and heavy_sampling.left_out(name, run_seed):
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL_HEAVY or config.option.keyword:
        pass
    else:
        _leave_out_half_of_the_heavy_tests(items)
    if FULL_STORES or config.option.keyword:
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        store = callspec.params.get("database_url") if callspec is not None else None
        if store is None:
            kept.append(item)
            continue
        other_params = "-".join(f"{k}={v}" for k, v in sorted(callspec.params.items()) if k != "database_url")
        digest = hashlib.sha256(f"{item.module.__name__}::{item.originalname}[{other_params}]".encode()).digest()
        wanted = ("sqlite", "postgresql")[digest[0] % 2]
        (kept if store == wanted else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
