"""The QA API with its console off (``console.enabled = false``): a JSON body holding a lone surrogate (``"\\ud800"``:
valid JSON, no text) gets a 422 naming the field, and nothing of the request, nor a traceback, reaches the log.

Before: e49ecca gave the console's app the handler that answers FastAPI's 422 itself; ``create_api`` alone (what
``radtrace api`` serves with the console off) kept FastAPI's, whose answer echoes the input and cannot be encoded in
UTF-8: ``POST /v1/events/search {"patient_id": "X\\ud800"}`` was a ``500`` and uvicorn logged the traceback (found
with curl against ``radtrace serve``, report-hostile open 1). Served here by radtrace's own guarded uvicorn server,
whose log is the one that held it.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from http_support import guarded_serving
from radtrace.audit.api import create_api
from radtrace.audit.events import Actor
from radtrace.audit.tokens import create_token
from radtrace.http_limits import PeerLimits
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

PATIENT_ID = "MRN-4711-CANARY"


def test_a_lone_surrogate_in_a_json_body_is_a_422_naming_the_field_and_the_log_holds_nothing_of_it(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    token = create_token(sqlite_store, "qa.lead", "qa", Actor(user="root", host="radtrace-host")).secret
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = {
        "patient_id": '{"patient_id": "' + PATIENT_ID + '\\ud800", "limit": 5}',
        "accession": '{"accession": "\\udfff' + PATIENT_ID + '"}',
        "limit": '{"patient_id": "' + PATIENT_ID + '", "limit": "\\ud83d"}',  # half an emoji, in a number field
    }
    caplog.set_level(logging.DEBUG)
    with (
        guarded_serving(create_api(sqlite_store), PeerLimits()) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        for field, body in bodies.items():
            answer = client.post("/v1/events/search", content=body.encode(), headers=headers)
            assert answer.status_code == 422, (field, answer.text)
            [problem] = answer.json()["detail"]
            assert problem["loc"] == ["body", field]
            assert "\\ud" in problem["input"].lower()  # said back to the client as text, not dropped
        still = client.post("/v1/events/search", json={"patient_id": PATIENT_ID, "limit": 5}, headers=headers)
        assert still.status_code == 200
    assert PATIENT_ID not in caplog.text
    assert "Traceback" not in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
