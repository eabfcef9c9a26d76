"""After signing in, the console goes back to the study a signed-out user was sent away from, and never to a page
outside the console (no open redirect through ``next``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from console_support import PASSWORD, UNKNOWN_STUDY, add_user, console_client, console_settings, csrf_of
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

STUDY = UNKNOWN_STUDY  # a study by its handle, as every console link names one
OLD_STUDY = "/console/studies/1.2.3/1"  # an address from before handles: the Study UID in the path


@pytest.mark.parametrize(
    ("given", "lands"),
    [
        (STUDY, STUDY),
        ("//evil.example/console/", "/console/worklist"),
        ("https://evil.example/", "/console/worklist"),
        ("/console//evil.example", "/console/worklist"),
        ("/console/../v1/export.csv", "/console/worklist"),
        (f"{STUDY}\r\nSet-Cookie: x=y", "/console/worklist"),
    ],
)
def test_sign_in_goes_back_to_a_console_page_only(store: Store, tmp_path: Path, given: str, lands: str) -> None:
    add_user(store, "dr.next", "radiologist")
    with console_client(store, console_settings(tmp_path, store)) as client:
        form = client.get("/console/login", params={"next": given})
        assert form.status_code == 200
        answer = client.post(
            "/console/login",
            data={"username": "dr.next", "password": PASSWORD, "csrf_token": csrf_of(form.text), "next": given},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == lands


def test_a_signed_out_link_to_a_study_keeps_the_study_and_a_signed_out_post_says_nothing_was_recorded(
    store: Store, tmp_path: Path
) -> None:
    with console_client(store, console_settings(tmp_path, store)) as client:
        sent = client.get(STUDY, follow_redirects=False)
        assert sent.headers["location"] == f"/console/login?next={STUDY}"
        assert client.get("/console/worklist", follow_redirects=False).headers["location"] == "/console/login"
        refused = client.post(f"{STUDY}/findings", data={"label": "Edema", "decision": "accept"})
        assert refused.status_code == 401
        assert "Nothing was recorded" in refused.text
        assert f'href="/console/login?next={STUDY}"' in refused.text


def test_a_signed_out_old_link_with_a_study_uid_leads_to_the_sign_in_without_saying_the_uid_again(
    store: Store, tmp_path: Path
) -> None:
    """Before: /console/login?next=/console/studies/<UID>/1, the UID in a second URL (history, logs)."""
    with console_client(store, console_settings(tmp_path, store)) as client:
        sent = client.get(OLD_STUDY, follow_redirects=False)
        assert sent.status_code == 303
        assert sent.headers["location"] == "/console/login"
        refused = client.post(f"{OLD_STUDY}/draft", data={"decision": "accept"})
        assert refused.status_code == 401
        assert "1.2.3" not in refused.text
        assert 'href="/console/login"' in refused.text
