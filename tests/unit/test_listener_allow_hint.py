"""The allow-list suggestion in a refused caller's log line can be pasted as it is.

It used to print ``RADTRACE_LISTENER__ALLOWED_CALLERS='[{...only this caller...}]'``: an admin who
pasted it replaced the whole allow list and locked out every other modality. It now carries the
rules in force plus the new one, and an AE title (printable ASCII, any of ``' " $ ` ;``) can break
neither the JSON nor the shell's single quotes.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from radtrace.config import ListenerSettings, load_settings
from radtrace.dicom_listener.policy import AssociationRequest, caller_allowed, check_association, how_to_allow

pytestmark = pytest.mark.unit

EXISTING = [{"ae_title": "PACS"}, {"ae_title": "CT_ROOM", "host": "192.168.10.0/24"}]


def _refused_hint(calling: str, settings: ListenerSettings) -> str:
    request = AssociationRequest(calling, "RADTRACE", "10.1.2.3", active_associations=1, free_bytes=10**12)
    rejection = check_association(request, settings)
    assert rejection is not None
    return how_to_allow(rejection, request, settings)


def _pasted(hint: str) -> str:
    """What bash makes of the suggested assignment, pasted as it is."""
    match = re.search(r"(RADTRACE_LISTENER__ALLOWED_CALLERS='[^']*')", hint)
    assert match is not None, hint
    shown = subprocess.run(
        ["bash", "-c", match.group(1) + '; printf %s "$RADTRACE_LISTENER__ALLOWED_CALLERS"'],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout


def test_the_suggestion_keeps_the_rules_in_force_and_adds_the_refused_caller() -> None:
    settings = ListenerSettings(allowed_callers=EXISTING)  # type: ignore[arg-type]
    value = _pasted(_refused_hint("NEW_DX", settings))
    admitted = load_settings(listener={"allowed_callers": json.loads(value)}).listener
    assert caller_allowed("PACS", "10.9.9.9", admitted.allowed_callers)  # still in
    assert caller_allowed("CT_ROOM", "192.168.10.4", admitted.allowed_callers)  # still in, still pinned
    assert not caller_allowed("CT_ROOM", "10.1.2.3", admitted.allowed_callers)
    assert caller_allowed("NEW_DX", "10.1.2.3", admitted.allowed_callers)  # and the new one


@pytest.mark.parametrize("title", ["O'BRIEN", 'A"B', "$(touch x)", "`id`", "X;Y 'Z'", "'; rm -rf ~ #"])
def test_an_ae_title_with_quotes_or_shell_characters_survives_the_paste_intact(title: str) -> None:
    settings = ListenerSettings(allowed_callers=EXISTING)  # type: ignore[arg-type]
    hint = _refused_hint(title, settings)
    assert "\n" not in hint
    value = _pasted(hint)
    admitted = load_settings(listener={"allowed_callers": json.loads(value)}).listener
    assert caller_allowed(title, "10.1.2.3", admitted.allowed_callers)
    assert len(admitted.allowed_callers) == len(EXISTING) + 1


@pytest.mark.parametrize("title", ["BAD\\TITLE", "LINE\nINFO forged", "A" * 17, "NUL\x00"])
def test_a_title_no_setting_can_admit_gets_no_setting_to_paste(title: str) -> None:
    hint = _refused_hint(title, ListenerSettings(allowed_callers=EXISTING))  # type: ignore[arg-type]
    assert "RADTRACE_LISTENER__ALLOWED_CALLERS" not in hint
    assert "not a valid AE title" in hint
    assert not any(ord(char) < 32 for char in hint)


def test_an_allow_list_too_long_for_a_log_line_is_not_cut_but_replaced_by_one_entry_to_add() -> None:
    """The log cuts a message at 8,000 characters: a cut JSON list would fail to load when pasted."""
    many = [{"ae_title": f"MODALITY{n:04d}", "host": f"10.0.{n // 250}.{n % 250}"} for n in range(200)]
    hint = _refused_hint("NEW'DX", ListenerSettings(allowed_callers=many))  # type: ignore[arg-type]
    assert len(hint) < 1000
    assert "RADTRACE_LISTENER__ALLOWED_CALLERS" not in hint
    assert "[[listener.allowed_callers]]" in hint
    assert 'ae_title = "NEW\'DX"' in hint
    assert 'host = "10.1.2.3"' in hint
    assert "the 200 rules in force" in hint
