"""The QA API's access log names a static file's mount (``/console/static/{path}``), at DEBUG when the file is served.

Found on a hospital's first night: every console page load logged its styles and scripts at INFO as
"GET (no route) -> 200" (FastAPI sets no route in the scope for a mount), lines that named nothing and read like
requests nothing answered. A static file that is not found, and every page, stay at INFO, named by their route.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from console_support import console_client, console_settings
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def test_static_files_are_logged_by_their_mount_at_debug_and_pages_at_info(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    client = console_client(store, console_settings(tmp_path, store))
    with caplog.at_level(logging.DEBUG, logger="radtrace.audit.api"):
        assert client.get("/console/static/console.css").status_code == 200
        assert client.get("/static-offline-docs/swagger-ui.css").status_code == 200
        assert client.get("/console/static/no-such-file.css").status_code == 404
        assert client.get("/console/login").status_code == 200
        assert client.get("/no/such/page").status_code == 404
    lines = [
        (record.levelno, re.sub(r"^testclient | \(\d+ ms\)$", "", record.getMessage()))
        for record in caplog.records
        if record.name == "radtrace.audit.api"
    ]
    assert lines == [
        (logging.DEBUG, "GET /console/static/{path} -> 200"),
        (logging.DEBUG, "GET /static-offline-docs/{path} -> 200"),
        (logging.INFO, "GET /console/static/{path} -> 404"),
        (logging.INFO, "GET /console/login -> 200"),
        (logging.INFO, "GET (no route) -> 404"),  # nothing answered it
    ]
