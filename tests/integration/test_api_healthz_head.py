"""``HEAD /healthz``: a load balancer's health check made with HEAD (HAProxy's common ``option httpchk HEAD /healthz``)
must get what GET gets, without the body.

Before: the route answered GET only, so ``HEAD /healthz`` was ``405 Method Not Allowed`` and such a balancer took a
healthy API out of service (report-hostile open 6). Served by radtrace's own guarded uvicorn server, as ``radtrace
api`` serves it.
"""

from __future__ import annotations

import httpx
import pytest

from http_support import guarded_serving
from radtrace.audit.api import create_api
from radtrace.http_limits import PeerLimits
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def test_head_healthz_answers_as_get_does_without_a_body(sqlite_store: Store) -> None:
    with (
        guarded_serving(create_api(sqlite_store), PeerLimits()) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        got, head = client.get("/healthz"), client.head("/healthz")
        assert got.status_code == 200
        assert head.status_code == 200, head.text
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert client.get("/healthz").status_code == 200  # the connection and the server are still well
