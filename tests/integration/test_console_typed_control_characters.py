"""A control character typed into a decision's free text (a finding's comment, a modified impression) is refused
with a 4xx and its reason, and nothing is recorded; the refusal leads back to the study.

The console recorded ``a\\x00b`` (NUL, BEL, DEL, a C1 NEL alike) as the radiologist's comment or impression with a
303: invisible on the study page, and changed or dropped by the assessment SR's and ORU's text rules, so the audit's
record of what the radiologist wrote and the report that carries it differed, silently. Hostile text a person can
type (HTML, right-to-left overrides and isolates, the Persian ZWNJ, tabs) is still recorded exactly as typed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from console_support import (
    add_user,
    console_client,
    console_settings,
    csrf_of,
    finding_decisions,
    reported_study,
    sign_in,
    study_path,
)
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

REFUSED = ["a\x00b", "bell\x07", "del\x7f", "next line\x85"]
KEPT = '<img src=x onerror=alert(1)> & "q" left \u202eRIGHT\u202c \u2067iso\u2069 Ali\u200czadeh\ttab'


def _seen(html: str, label: str) -> str:
    found = re.search(rf'name="label" value="{re.escape(label)}">\s*<input type="hidden" name="seen" value="([^"]*)"',
                      html)  # fmt: skip
    assert found is not None
    return found.group(1)


def test_control_characters_in_typed_text_are_refused_with_a_reason_and_typed_text_is_kept(
    tmp_path: Path, store: Store
) -> None:
    settings = console_settings(tmp_path, store)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=81)
    add_user(store, "rad.one", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "rad.one")
        path = study_path(store, study_uid)
        page = client.get(path)
        label = re.findall(r'name="label" value="([^"]*)"', page.text)[0]
        form = {"csrf_token": csrf_of(page.text), "label": label, "seen": _seen(page.text, label), "status": "absent",
                "decision": "modify"}  # fmt: skip
        html = {"accept": "text/html"}
        for text in REFUSED:
            answer = client.post(f"{path}/findings", data={**form, "comment": text}, headers=html)
            assert answer.status_code == 422, text
            assert "comment: control characters (such as NUL) are not allowed; nothing was recorded" in answer.text
            assert f'href="{path}" id="problem-back">Back to the study</a>' in answer.text  # where they go on
            answer = client.post(f"{path}/impression", data={**form, "impression": text, "comment": ""}, headers=html)
            assert answer.status_code == 422, text
            assert "impression: control characters" in answer.text
        assert finding_decisions(store, study_uid) == []  # nothing recorded

        answer = client.post(f"{path}/findings", data={**form, "comment": KEPT}, follow_redirects=False)
        assert answer.status_code == 303
        client.cookies.clear()  # the session is gone: the typed text is shown back whole, not refused unseen
        answer = client.post(f"{path}/findings", data={**form, "comment": "seen\x07 back"}, headers=html)
        assert answer.status_code == 401
        assert "seen\x07 back" in answer.text
    [recorded] = finding_decisions(store, study_uid)
    assert recorded["comment"] == KEPT  # exactly as typed
