"""A JSON body holding a lone surrogate (``"\\ud800"``: valid JSON, no text) gets a 422 naming the field, and nothing
of the request reaches the log.

Before: ``POST /v1/events/search`` with ``{"patient_id": "MRN-4711\\ud800"}`` was refused by pydantic (no valid
string), and FastAPI's answer, which echoes each invalid input, could not be encoded in UTF-8: the client got a bare
``500 Internal Server Error`` and the log of ``radtrace serve`` a traceback holding the input, the patient ID this
endpoint exists to keep out of logs (found with curl against ``radtrace serve``). The QA API is served as ``radtrace
api`` serves it, with its console; test_api_lone_surrogate_without_console checks ``create_api`` alone (6838a45).
"""

from __future__ import annotations

import logging

import pytest

from console_support import OPERATOR, console_client, console_settings
from radtrace.audit.tokens import create_token
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

PATIENT_ID = "MRN-4711-CANARY"


@pytest.mark.parametrize(
    "body",
    [
        '{"patient_id": "' + PATIENT_ID + '\\ud800", "limit": 5}',
        '{"accession": "\\udfff' + PATIENT_ID + '"}',
        '{"patient_id": "' + PATIENT_ID + '", "limit": "\\ud83d"}',  # half an emoji, in a field that is no text
    ],
    ids=["high-surrogate", "low-surrogate", "in-a-number-field"],
)
def test_a_lone_surrogate_in_a_json_body_is_a_422_naming_the_field_and_nothing_is_logged(
    body: str, sqlite_store: Store, tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    client = console_client(sqlite_store, console_settings(tmp_path, sqlite_store))  # type: ignore[arg-type]
    token = create_token(sqlite_store, "qa.lead", "qa", OPERATOR).secret
    with caplog.at_level(logging.DEBUG):
        answer = client.post(
            "/v1/events/search",
            content=body.encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["loc"][0] == "body"
    assert problem["loc"][-1] in ("patient_id", "accession", "limit")
    assert "\\ud" in problem["input"].lower()  # said as text, not dropped
    assert PATIENT_ID not in caplog.text
    still = client.post(
        "/v1/events/search", json={"patient_id": PATIENT_ID, "limit": 5}, headers={"Authorization": f"Bearer {token}"}
    )
    assert still.status_code == 200
