"""A NUL or another control character in a console field is refused with a 4xx and a reason, never a 500.

PostgreSQL refuses NUL in any text parameter (psycopg DataError), so before this check a user name, an audit
explorer filter or a dashboard label holding one ended in HTTP 500 there (and a truncated CSV export); the same
requests run on SQLite too, which must answer the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from console_support import PASSWORD, add_user, console_client, console_settings, csrf_of, sign_in
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

REASON = "control characters"


def test_a_user_name_with_a_nul_is_refused_with_a_reason(store: Store, tmp_path: Path) -> None:
    with console_client(store, console_settings(tmp_path, store)) as client:
        form = client.get("/console/login")
        answer = client.post(
            "/console/login",
            data={"username": "dr.a\x00b", "password": PASSWORD, "csrf_token": csrf_of(form.text)},
            follow_redirects=False,
        )
        assert answer.status_code == 400
        assert REASON in answer.text


@pytest.mark.parametrize(
    "url",
    [
        "/console/dashboard/agreement?label=Edema%00&decision=accept",
        "/console/audit?accession=ACC%00",
        "/console/audit?patient_id=RT%00",
        "/console/audit?actor=dr%1B",
        "/console/audit?model_name=m%00",
        "/console/audit?model_version=v%00",
        "/console/audit?label=Edema%00",
        "/console/audit/export.csv?accession=ACC%00",
    ],
)
def test_a_filter_with_a_control_character_is_refused_with_a_reason(store: Store, tmp_path: Path, url: str) -> None:
    add_user(store, "admin.ctl", "admin")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "admin.ctl")
        answer = client.get(url)
        assert answer.status_code == 400, answer.text[:300]
        assert REASON in answer.text
