"""The console's picture-cache checker thread stops when the server serving the console shuts down.

While the picture cache (:class:`radtrace.console.images.PictureCache`) holds anything, a checker thread looks at
the spooled files every few seconds. Nothing stopped it when the server did: ``radtrace serve``/``api`` (uvicorn,
as :func:`radtrace.http_server.guarded_config` configures it) ended its lifespan and the thread kept running in the
process, looking at the spool. :func:`radtrace.console.web.mount_console` now closes the cache at the lifespan's
end, after whatever lifespan the QA API had.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from console_support import console_settings
from radtrace.audit.api import create_api
from radtrace.console.web import mount_console
from radtrace.http_server import guarded_config
from radtrace.reporting.draft_store import drafts_root
from radtrace.store.engine import Store
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

CHECKER = "console-picture-check"


def _checkers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == CHECKER and thread.is_alive()]


def test_the_picture_checker_stops_when_the_server_shuts_down(store: Store, tmp_path: Path) -> None:
    import uvicorn

    settings = console_settings(tmp_path, store)
    app = create_api(store, drafts_dir=drafts_root(settings))
    mount_console(app, store, settings)
    config = guarded_config(app, port=free_port())  # as radtrace serve and radtrace api serve it
    config.log_config = None
    server = uvicorn.Server(config)
    serving = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    serving.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert serving.is_alive(), "the console did not start"
        assert time.monotonic() < deadline, "the console did not start within 10 s"
        time.sleep(0.02)
    spooled = tmp_path / "spooled.dcm"  # a picture kept, made from a file still in the spool: the checker runs
    spooled.write_bytes(b"DICM")
    stat = spooled.stat()
    fingerprint = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cache = app.state.console.pictures
    cache.put(("1.2.3", 1, ("0" * 64,), "prepared"), {"1.2.3.4": b"\x89PNG"}, ((spooled, fingerprint),))
    assert len(_checkers()) == 1
    try:
        server.should_exit = True
        serving.join(timeout=15)
        assert not serving.is_alive(), "the server did not stop"
        assert _checkers() == [], "the picture checker outlived the server"
        assert cache.size_bytes == 4  # the pictures are not dropped by the shutdown; only the thread ends
    finally:
        cache.close()
