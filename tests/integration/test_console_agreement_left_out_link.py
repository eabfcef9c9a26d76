"""The all-time agreement page leads QA to the decisions it leaves out; other roles see the count.

``/console/agreement`` (every role) says "Left out: N decisions on M drafts withdrawn as wrong-patient". Before, only
the QA dashboard's note linked to the list of them (``/console/dashboard/left-out``, qa and admin only, a window
of at most 366 days): from the all-time page QA had no way to see which studies the count stood for. Now, for qa
and admin, the note links to the list over the days those decisions were recorded (the latest 366 when they span
more, and it says so); a radiologist, who may not open the list, gets the count and no link. Both stores.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import decided, draft_tables, insert_story
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

ROOT = "1.2.826.0.1.3680043.10.1207.95"


def _seed(store: Store, start: datetime, *, second_after: timedelta) -> None:
    """Two drafts withdrawn as wrong-patient (``old``: decided at ``start``; ``new``: decided ``second_after``
    later), two decisions each; one kept draft."""
    revisions = {"old": {1: {"reassigned_at": start}}, "kept": {1: {}},
                 "new": {1: {"rejected_at": start, "rejection_code": "113037"}}}  # fmt: skip
    uids, tables = draft_tables(ROOT, start, revisions)
    story = [decided(uids[name], label, "reject") for name in ("old", "kept") for label in ("Cardiomegaly", None)]
    insert_story(store, tables, story, start)
    later = start + second_after
    insert_story(store, {}, [decided(uids["new"], label, "reject") for label in ("Edema", None)], later)


def _note(page: str) -> str:
    return page.split('id="agreement-left-out">', 1)[1].split("</p>", 1)[0]


@pytest.mark.parametrize("role", ["qa", "admin"])
def test_qa_follows_the_note_to_every_decision_it_counts(store: Store, tmp_path: Path, role: str) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)
    _seed(store, start, second_after=timedelta(days=39))
    add_user(store, "qa.all", role)
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.all")
        note = _note(client.get("/console/agreement").text)
        assert "4 decisions on 2 drafts withdrawn as wrong-patient" in " ".join(note.split()), note
        link = re.search(r'<a id="agreement-left-out-list" href="([^"]+)">List them</a>', note)
        assert link is not None, note  # before: a count and no way to the decisions
        listed = client.get(html.unescape(link.group(1)))
        assert listed.status_code == 200, listed.text
        # the same four decisions: the window spans the first one's day to the last one's
        assert "4 decisions on 2 drafts withdrawn as wrong-patient" in " ".join(listed.text.split())
        assert listed.text.count("<tr data-seq=") == 4


def test_decisions_over_more_than_the_lists_longest_window_link_to_its_latest_days(
    store: Store, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=500)
    _seed(store, start, second_after=timedelta(days=499))
    add_user(store, "qa.long", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.long")
        note = " ".join(_note(client.get("/console/agreement").text).split())
        link = re.search(r'<a id="agreement-left-out-list" href="([^"]+)">List those of (\S+) to (\S+)</a>', note)
        assert link is not None, note
        assert "(the list shows at most 366 days at a time)" in note
        listed = client.get(html.unescape(link.group(1)))
        assert listed.status_code == 200, listed.text  # a window the list takes, not a 422
        assert listed.text.count("<tr data-seq=") == 2  # the latest draft's two decisions


def test_a_radiologist_sees_the_count_without_a_link_to_a_list_it_may_not_open(store: Store, tmp_path: Path) -> None:
    _seed(store, datetime.now(UTC).replace(microsecond=0) - timedelta(days=2), second_after=timedelta(days=1))
    add_user(store, "rad.all", "radiologist")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "rad.all")
        note = _note(client.get("/console/agreement").text)
        assert "4 decisions on 2 drafts withdrawn as wrong-patient" in " ".join(note.split()), note
        assert "<a " not in note
        assert client.get("/console/dashboard/left-out").status_code == 403
