"""The QA HTTP API as a client meets it, over real SQLite and PostgreSQL: tokens, roles, errors, rows, CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from audit_support import STUDY_A, STUDY_B, Seeded, seed_audit_log
from radtrace.audit.api import create_api
from radtrace.audit.events import Actor
from radtrace.audit.presentation import CSV_COLUMNS
from radtrace.audit.schema import AuditEventRow
from radtrace.audit.tokens import create_token, revoke_token
from radtrace.store.engine import Store
from radtrace.store.migrate import head_revision

pytestmark = pytest.mark.integration

OPERATOR = Actor(user="root", host="radtrace-host")


@dataclass
class Api:
    """A client on the API over a seeded store, with one qa and one admin token."""

    client: TestClient
    store: Store
    seeded: list[Seeded]
    qa: dict[str, str]
    admin: dict[str, str]

    def rows(self, *event_types: str) -> list[sa.RowMapping]:
        """Audit rows recorded so far, of these types or all (read with SQL, not through the API)."""
        table = AuditEventRow.__table__
        query = sa.select(table).order_by(table.c.seq)
        if event_types:
            query = query.where(table.c.event_type.in_(event_types))
        with self.store.engine.connect() as connection:
            return list(connection.execute(query).mappings())


@pytest.fixture
def api(store: Store) -> Iterator[Api]:
    seeded = seed_audit_log(store)
    qa = create_token(store, "qa.nurse", "qa", OPERATOR)
    admin = create_token(store, "audit.lead", "admin", OPERATOR)
    with TestClient(create_api(store)) as client:
        yield Api(
            client,
            store,
            seeded,
            {"Authorization": f"Bearer {qa.secret}"},
            {"Authorization": f"Bearer {admin.secret}"},
        )


def test_no_token_or_a_wrong_one_is_401_with_a_bearer_challenge_and_recorded_without_the_token(api: Api) -> None:
    presented = "Zm9yZ2VkLXRva2VuLXRoYXQtbXVzdC1uZXZlci1iZS1zdG9yZWQ"
    for headers in ({}, {"Authorization": f"Bearer {presented}"}, {"Authorization": f"Basic {presented}"}):
        response = api.client.get("/v1/events", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    failures = api.rows("api_authentication_failed")
    assert [json.loads(row["payload"])["reason"] for row in failures] == [
        "no bearer token", "unknown token", "no bearer token",
    ]  # fmt: skip
    assert all(row["actor_host"] == "testclient" and row["outcome"] == "minor_failure" for row in failures)
    assert all(presented not in str(value) for row in api.rows() for value in row.values())


def test_a_revoked_token_is_refused_and_the_refusal_names_it(api: Api) -> None:
    assert api.client.get("/v1/events", headers=api.qa).status_code == 200
    revoke_token(api.store, "qa.nurse", OPERATOR)
    response = api.client.get("/v1/events", headers=api.qa)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    (failure,) = api.rows("api_authentication_failed")
    assert json.loads(failure["payload"])["token_name"] == "qa.nurse"


def test_qa_reads_but_may_not_verify_or_export(api: Api) -> None:
    assert api.client.get(f"/v1/studies/{STUDY_A}/timeline", headers=api.qa).status_code == 200
    for path in ("/v1/verify", "/v1/export.csv"):
        response = api.client.get(path, headers=api.qa)
        assert response.status_code == 403, path
        assert "admin" in response.json()["detail"]
    assert not api.rows("audit_verified", "audit_exported")


BAD_PARAMETERS = [
    ("/v1/events?event_type=inference_done", "inference_completed"),  # the valid types are listed
    ("/v1/events?since=2025-03-02T00:00:00Z&until=2025-03-01T00:00:00Z", "after until"),
    ("/v1/events?limit=0", "greater than or equal to 1"),
    ("/v1/events?limit=1001", "less than or equal to 1000"),
    ("/v1/events?since=2025-03-01T08:00:00", "timezone"),
    ("/v1/events?after_seq=-5", "greater than or equal to 0"),
    ("/v1/events?outcome=fine", "success"),
    ("/v1/events?colour=red", "Extra inputs"),
    ("/v1/events?label=Effusion,Mass", "pattern"),
    (f"/v1/studies/{'1' * 65}/timeline", "at most 64 characters"),
    # a NUL was a 500 on PostgreSQL (psycopg refuses it in text), a 200 with nothing found on SQLite
    ("/v1/events?accession=ACC%00", "control characters"),
    ("/v1/events?study_uid=1.2%00", "control characters"),
    ("/v1/events?patient_id=PAT%1b%5b2J", "control characters"),
    ("/v1/events?actor=qa%00", "control characters"),
    ("/v1/events?model_name=m%00", "control characters"),
    ("/v1/events?label=Mass%00", "control characters"),
    ("/v1/studies/1.2%00/timeline", "pattern"),
]


def test_bad_parameters_are_422_with_the_reason(api: Api) -> None:
    for url, complaint in BAD_PARAMETERS:
        response = api.client.get(url, headers=api.qa)
        assert response.status_code == 422, url
        assert complaint in response.text, (url, response.text)
    assert not api.rows("audit_queried")  # a refused query reads nothing, so there is nothing to record
    refused = api.client.get("/v1/export.csv?accession=ACC%00", headers=api.admin)  # was a 500 on PostgreSQL
    assert (refused.status_code, "control characters" in refused.text) == (422, True), refused.text


def test_events_are_filtered_paged_and_each_read_is_recorded_as_the_token(api: Api) -> None:
    expected = [s.seq for s in api.seeded if s.event.study_uid == STUDY_A]
    first = api.client.get("/v1/events", params={"study_uid": STUDY_A, "limit": 5}, headers=api.qa).json()
    assert [event["seq"] for event in first["events"]] == expected[:5]
    assert first["next_after_seq"] == expected[4]
    assert first["events"][4]["labels"] == ["Cardiomegaly", "Pleural Effusion"]
    assert first["events"][4]["payload"]["tokens"] == 512
    assert first["events"][0]["recorded_at"] == "2025-03-03T08:00:00Z"
    params = {"study_uid": STUDY_A, "limit": 5, "after_seq": first["next_after_seq"]}
    second = api.client.get("/v1/events", params=params, headers=api.qa).json()
    assert [event["seq"] for event in second["events"]] == expected[5:]
    assert second["next_after_seq"] is None
    by_patient = api.client.get("/v1/events", params={"patient_id": "PAT-0002"}, headers=api.qa).json()
    assert {event["study_uid"] for event in by_patient["events"]} == {STUDY_B}
    recorded = api.rows("audit_queried")
    assert [(row["actor_user"], row["actor_host"], row["patient_id"]) for row in recorded] == [
        ("qa.nurse", "testclient", None), ("qa.nurse", "testclient", None), ("qa.nurse", "testclient", "PAT-0002"),
    ]  # fmt: skip


def test_events_page_newest_first_and_back_with_before_seq_and_the_default_is_unchanged(api: Api) -> None:
    """order=desc lists the newest events first and pages back with next_before_seq; a cursor out of range is a
    422 naming before_seq, as after_seq's is. Without the new parameters a page is what it was (oldest first)."""
    expected = [s.seq for s in api.seeded if s.event.study_uid == STUDY_A][::-1]

    def page(**params: object) -> dict[str, object]:
        answer = api.client.get("/v1/events", params={"study_uid": STUDY_A, "limit": 5, **params}, headers=api.qa)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    newest = page(order="desc")
    assert [event["seq"] for event in newest["events"]] == expected[:5]
    assert (newest["next_after_seq"], newest["next_before_seq"]) == (None, expected[4])
    older = page(order="desc", before_seq=newest["next_before_seq"])
    assert [event["seq"] for event in older["events"]] == expected[5:]
    assert older["next_before_seq"] is None
    default = page()
    assert [event["seq"] for event in default["events"]] == expected[::-1][:5]
    assert (default["next_after_seq"], default["next_before_seq"]) == (expected[::-1][4], None)
    for value in ("0", str(2**63)):
        refused = api.client.get("/v1/events", params={"before_seq": value}, headers=api.qa)
        assert refused.status_code == 422, refused.text
        (problem,) = refused.json()["detail"]
        assert problem["loc"][-1] == "before_seq"
    crossed = api.client.get("/v1/events", params={"after_seq": 9, "before_seq": 4}, headers=api.qa)
    assert crossed.status_code == 422
    assert "after_seq (9) is not below before_seq (4)" in crossed.text


def test_timeline_and_404_for_a_study_without_events(api: Api) -> None:
    timeline = api.client.get(f"/v1/studies/{STUDY_A}/timeline", headers=api.qa).json()
    assert [entry["seconds_since_previous"] for entry in timeline["entries"]][:3] == [None, 2.0, 12.0]
    assert {stage["name"]: stage["seconds"] for stage in timeline["stages"]}["inference"] == 41.5
    missing = api.client.get("/v1/studies/1.2.3.4.5/timeline", headers=api.qa)
    assert missing.status_code == 404
    assert len(api.rows("audit_queried")) == 2  # the miss is recorded too


def test_request_log_lines_name_routes_not_study_uids_or_patient_ids(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="radtrace.audit.api"):
        api.client.get(f"/v1/studies/{STUDY_A}/timeline", headers=api.qa)
        api.client.get("/v1/events", params={"patient_id": "PAT-0002"}, headers=api.qa)
    lines = [record.getMessage() for record in caplog.records]
    assert any("GET /v1/studies/{study_uid}/timeline -> 200" in line for line in lines), lines
    assert any("GET /v1/events -> 200" in line for line in lines), lines
    assert not [line for line in lines if STUDY_A in line or "PAT-0002" in line]


def test_admin_verifies_the_chain(api: Api) -> None:
    report = api.client.get("/v1/verify", headers=api.admin).json()
    assert report["ok"] is True
    assert report["first_break_seq"] is None
    assert "rows removed from the end" in report["not_checked"]  # a valid chain does not prove an intact tail
    assert report["rows_checked"] == report["head_seq"] == len(api.seeded) + 2  # + two token creations
    (verified,) = api.rows("audit_verified")
    assert verified["actor_user"] == "audit.lead"


def test_export_streams_csv_that_parses_back_to_the_rows(api: Api) -> None:
    response = api.client.get("/v1/export.csv", params={"until": "2025-03-04T00:00:00Z"}, headers=api.admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    day_one = [s for s in api.seeded if s.at.day == 3]
    assert [int(row["seq"]) for row in rows] == [s.seq for s in day_one]
    for row, seeded in zip(rows, day_one, strict=True):
        assert json.loads(row["payload"]) == dict(seeded.event.payload)
        assert [label for label in row["labels"].split(",") if label] == sorted(seeded.event.labels)
        assert row["study_uid"] == (seeded.event.study_uid or "")
    stored = {row["seq"]: row["hash"] for row in api.rows()}
    assert all(stored[int(row["seq"])] == row["hash"] for row in rows)
    (exported,) = api.rows("audit_exported")
    assert exported["actor_user"] == "audit.lead"
    assert exported["dicom_event_id"] == "110106"  # DICOM "Export"


def test_openapi_documents_the_routes_and_the_bearer_scheme(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    assert set(document["paths"]) == {
        "/healthz", "/v1/events", "/v1/events/search", "/v1/studies/{study_uid}/timeline", "/v1/verify",
        "/v1/export.csv",
        "/v1/studies/{study_uid}/drafts", "/v1/studies/{study_uid}/drafts/{revision}",
        "/v1/studies/{study_uid}/drafts/{revision}/{kind}",
    }  # fmt: skip
    (scheme,) = document["components"]["securitySchemes"].values()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["paths"]["/v1/events"]["get"]["security"] == [{"apiToken": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]
    parameters = {p["name"] for p in document["paths"]["/v1/events"]["get"]["parameters"]}
    assert {"study_uid", "patient_id", "since", "until", "event_type", "label", "limit", "after_seq"} <= parameters
    page = api.client.get("/docs")
    assert page.status_code == 200
    # every script and style of the documentation page is served by the API itself: it works offline
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    for asset in assets:
        assert asset.startswith("/"), asset
        assert api.client.get(asset).status_code == 200, asset


def test_healthz_needs_no_token(api: Api) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "schema_revision": head_revision()}


def test_a_database_that_is_down_or_not_migrated_is_503(tmp_path: Path) -> None:
    down = Store.from_url("postgresql://postgres@127.0.0.1:1/radtrace", connect_timeout_s=2)
    with TestClient(create_api(down)) as client:
        for path, headers in (("/healthz", {}), ("/v1/events", {"Authorization": "Bearer whatever"})):
            response = client.get(path, headers=headers)
            assert response.status_code == 503, path
            assert "database unavailable" in response.json()["detail"]
            assert response.headers["Retry-After"] == "30"
    down.dispose()
    empty = Store.from_url(f"sqlite:///{tmp_path}/empty.db")
    with TestClient(create_api(empty)) as client:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert "radtrace db upgrade" in response.json()["detail"]
    empty.dispose()


def test_a_patient_lookup_can_keep_the_patient_id_out_of_the_url(api: Api) -> None:
    """GET /v1/events?patient_id=... puts the ID in every proxy's access log; the same query goes as a JSON body."""
    body = {"patient_id": "PAT-0001", "event_type": "instance_received", "limit": 2}
    first = api.client.post("/v1/events/search", json=body, headers=api.qa)
    assert first.status_code == 200, first.text
    assert "PAT-0001" not in str(first.request.url)
    by_get = api.client.get("/v1/events", params=body, headers=api.qa).json()
    assert first.json()["events"] == by_get["events"]
    following = api.client.post(
        "/v1/events/search", json=body | {"after_seq": first.json()["next_after_seq"]}, headers=api.qa
    ).json()
    assert [event["patient_id"] for event in first.json()["events"] + following["events"]] == ["PAT-0001"] * 3
    assert api.client.post("/v1/events/search", json={"patient_id": "P\x00"}, headers=api.qa).status_code == 422
    assert api.client.post("/v1/events/search", json=body).status_code == 401
    recorded = [row for row in api.rows("audit_queried") if row["patient_id"] == "PAT-0001"]
    assert len(recorded) == 3  # each lookup is audited with the ID in its own column, whichever way it came
