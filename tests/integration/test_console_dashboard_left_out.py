"""QA can open the list behind the dashboard's note "N decisions on M drafts withdrawn as wrong-patient".

The agreement figures leave out the current decisions on drafts withdrawn as wrong-patient and the dashboard says
how many; before, nothing listed them: QA could not see which studies, readers and findings the note stood for nor
why each draft was withdrawn. Now the note links to ``/console/dashboard/left-out``: one row per decision (when,
the study linked by its handle, revision, accession as the console shows it, finding, decision, reader, why left
out), newest first, paged, and a CSV of the whole window. Both stores.
"""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from console_support import add_user, console_client, console_settings, sign_in, study_path
from dashboard_support import decided, draft_tables, insert_story
from radtrace.audit.schema import AuditEventRow
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

ROOT = "1.2.826.0.1.3680043.10.1207.91"
#: Each study: how its revision 1 was withdrawn (None: not withdrawn) and its accession as recorded.
STUDIES: dict[str, tuple[dict[str, Any] | None, str]] = {
    "moved": ({"reassigned": True}, "ACC-MOVED"),
    "wrong_entry": ({"rejection_code": "113038"}, "RT12\u202e345"),  # a right-to-left override inside
    "safety": ({"rejection_code": "113037"}, "=HYPERLINK(1)"),  # a spreadsheet formula
    "quality": ({"rejection_code": "113001"}, "ACC-QUALITY"),  # this patient's film: counted, not left out
    "kept": (None, "ACC-KEPT"),
}
CSV_COLUMNS = ["decided_at", "study_uid", "revision", "accession", "label", "decision", "reader",
               "left_out_because", "audit_seq"]  # fmt: skip


def _seed(store: Store, start: datetime) -> dict[str, str]:
    """Each study of :data:`STUDIES` read once and decided on Cardiomegaly (reject) and as a whole draft (reject) by
    dr.one; the moved study's Atelectasis accepted, then rejected by dr.two (one current decision)."""
    revisions: dict[str, dict[int, dict[str, Any]]] = {}
    for name, (withdrawn, _accession) in STUDIES.items():
        if withdrawn and withdrawn.get("reassigned"):
            revisions[name] = {1: {"reassigned_at": start}}
        elif withdrawn:
            revisions[name] = {1: {"rejected_at": start, "rejection_code": withdrawn["rejection_code"]}}
        else:
            revisions[name] = {1: {}}
    accessions = {name: accession for name, (_, accession) in STUDIES.items()}
    uids, tables = draft_tables(ROOT, start, revisions, accessions)
    story = []
    for name, uid in uids.items():
        story += [
            decided(uid, "Cardiomegaly", "reject", user="dr.one", accession=accessions[name]),
            decided(uid, None, "reject", user="dr.one", accession=accessions[name]),
        ]
        if name == "moved":
            story += [
                decided(uid, "Atelectasis", "accept", user="dr.two", accession=accessions[name]),
                decided(uid, "Atelectasis", "reject", user="dr.two", accession=accessions[name]),
            ]
    insert_story(store, tables, story, start)
    return uids


def _early_today() -> datetime:
    """01:00 UTC of the day three hours ago: every decision falls in the dashboard's default window."""
    return datetime.combine((datetime.now(UTC) - timedelta(hours=3)).date(), time(1), tzinfo=UTC)


def _rows(page: str) -> list[dict[str, str]]:
    """The list's rows: seq, study link, accession cell, finding, decision, reader, why."""
    table = page.split('<table class="list" id="left-out">', 1)[1].split("</table>", 1)[0]
    found = []
    for seq, row in re.findall(r'<tr data-seq="(\d+)">(.*?)</tr>', table, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        link = re.search(r'href="([^"]+)"', cells[1])
        found.append({"seq": seq, "link": link.group(1) if link else "", "revision": cells[2],
                      "accession": cells[3], "label": re.sub(r"<[^>]+>", "", cells[4]), "decision": cells[5],
                      "reader": cells[6],
                      "because": html.unescape(re.sub(r"<[^>]+>", "", cells[7]))})  # fmt: skip
    return found


def _pager(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}"', page)
    return html.unescape(found.group(1)) if found else None


def test_the_note_leads_to_a_paged_list_of_the_decisions_it_leaves_out(store: Store, tmp_path: Path) -> None:
    uids = _seed(store, _early_today())
    add_user(store, "qa.one", "qa")
    add_user(store, "rad.one", "radiologist")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.one")
        dashboard = client.get("/console/dashboard").text
        note = dashboard.split('id="agreement-left-out">', 1)[1].split("</p>", 1)[0]
        assert "7 decisions on 3 drafts withdrawn as wrong-patient" in " ".join(note.split())
        link = re.search(r'<a id="agreement-left-out-list" href="([^"]+)">List them</a>', note)
        assert link is not None, note  # before: no list behind the note

        first = client.get(html.unescape(link.group(1)) + "&limit=2")
        assert first.status_code == 200, first.text
        assert "7 decisions on 3 drafts withdrawn as wrong-patient" in " ".join(first.text.split())
        pages, rows = [first.text], _rows(first.text)
        while (older := _pager(pages[-1], "next")) is not None:
            pages.append(client.get(older).text)
            rows += _rows(pages[-1])
        assert [len(_rows(p)) for p in pages] == [2, 2, 2, 1]
        assert "last page" in pages[-1]
        seqs = [int(row["seq"]) for row in rows]
        assert seqs == sorted(seqs, reverse=True)  # newest first
        assert len(set(seqs)) == 7  # each once
        back = _pager(pages[-1], "prev")
        assert back is not None
        assert [row["seq"] for row in _rows(client.get(back).text)] == [row["seq"] for row in _rows(pages[-2])]

        paths = {study_path(store, uid): name for name, uid in uids.items()}  # by the study's handle, never its UID
        assert sorted({paths[row["link"]] for row in rows}) == ["moved", "safety", "wrong_entry"]
        by_study = {}
        for row in rows:
            by_study.setdefault(re.sub(r"<[^>]+>", "", row["accession"]), []).append(row)
        assert set(by_study) == {"ACC-MOVED", "RT12⟨U+202E⟩345", "=HYPERLINK(1)"}  # not quality's, not kept's
        moved = {(row["label"], row["decision"], row["reader"]) for row in by_study["ACC-MOVED"]}
        assert moved == {("Cardiomegaly", "rejected", "dr.one"), ("(whole draft)", "rejected", "dr.one"),
                         ("Atelectasis", "rejected", "dr.two")}  # fmt: skip
        assert {row["because"] for row in by_study["ACC-MOVED"]} == {
            "an image it read was re-sent by the PACS under another patient or study"
        }
        assert {row["because"] for row in by_study["RT12⟨U+202E⟩345"]} == {
            "an image it read was rejected by the PACS: Incorrect Modality Worklist Entry (113038)"
        }
        assert "\u202e" not in first.text + "".join(pages)  # shown as a visible escape, never applied

        export = client.get("/console/dashboard/left-out/export.csv")
        assert export.status_code == 200, export.text
        table = list(csv.reader(io.StringIO(export.text)))
        assert table[0] == CSV_COLUMNS
        assert [int(row[-1]) for row in table[1:]] == seqs  # the same decisions, in the same order
        accessions = {row[3] for row in table[1:]}
        assert accessions == {"ACC-MOVED", "RT12⟨U+202E⟩345", "'=HYPERLINK(1)"}  # escaped, formula defused
        safety = next(row for row in table[1:] if row[3] == "'=HYPERLINK(1)")
        assert safety[7] == "an image it read was rejected by the PACS: Rejected for Patient Safety Reasons (113037)"
        assert safety[1] == uids["safety"]

        sign_in(client, "rad.one")
        assert client.get("/console/dashboard/left-out").status_code == 403
        assert client.get("/console/dashboard/left-out/export.csv").status_code == 403

    with store.session() as session:  # viewing and exporting are audited like every other use of the console
        views = session.scalars(
            sa.select(AuditEventRow.payload).where(AuditEventRow.event_type.in_(["audit_queried", "audit_exported"]),
                                                   AuditEventRow.actor_user == "qa.one")
        ).all()  # fmt: skip
    assert sum('"list":"left_out"' in view.replace(" ", "") for view in views) == 5  # the 4 pages and the way back
    assert sum('"chart":"left_out"' in view.replace(" ", "") for view in views) == 1


def test_a_window_with_nothing_left_out_says_so(store: Store, tmp_path: Path) -> None:
    add_user(store, "qa.one", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.one")
        shown = client.get("/console/dashboard/left-out")
        assert shown.status_code == 200, shown.text
        assert "No decision was left out in this window." in shown.text
        assert list(csv.reader(io.StringIO(client.get("/console/dashboard/left-out/export.csv").text))) == [CSV_COLUMNS]
