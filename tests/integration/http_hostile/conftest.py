"""The hostile HTTP client's servers: one real ``radtrace api`` process for the whole directory (``served``: started
once per test process, its start is most of these tests' time), and the same guarded server with short deadlines in a
thread of the test (``quick``; ``quick_store`` its database). Tools: tests/http_hostile_support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from http_hostile_support import OPERATOR, Served, guarded
from radtrace.audit.tokens import create_token
from radtrace.http_limits import PeerLimits
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from tests_support import running_api


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("http-hostile")
    store = Store.from_url(f"sqlite:///{data_dir / 'radtrace.db'}")
    upgrade(store)
    token = create_token(store, "qa.http", "qa", OPERATOR).secret
    try:
        with running_api({"RADTRACE_DATA_DIR": str(data_dir)}, data_dir / "api.log") as api:
            served = Served(api.port, api.process.pid, token, api.log_file, store)
            yield served
            # every line these tests made it write, as the fuzz checks after each request (the fuzz was last in the
            # one file these tests were: it read them all)
            assert served.log_problems() == []
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def quick_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store.from_url(f"sqlite:///{tmp_path_factory.mktemp('http-quick') / 'radtrace.db'}")
    upgrade(store)
    yield store
    store.dispose()


@pytest.fixture(scope="module")
def quick(quick_store: Store) -> Iterator[tuple[int, PeerLimits]]:
    """The guarded server with short deadlines: (port, limits)."""
    limits = PeerLimits(header_timeout_s=0.3, body_timeout_s=0.6)
    with guarded(quick_store, limits) as port:
        yield port, limits
