"""The QA dashboard shows a failure reason holding control characters, markup or a right-to-left override as it is.

A failure (or skip) reason is free text: a model server's error body, an exception's message. QA staff read them on
the dashboard's volume table and in the volume CSV's column names. Before, a reason with a right-to-left override
(U+202E) showed the rest of its table cell reversed ("LIAF" read "FAIL"), and its CR/LF went raw into the CSV's
header line, breaking it across lines in tools that read line by line; the audit explorer's rows showed it raw too.
Now the page and the explorer write each invisible character as a visible escape (``⟨U+202E⟩``, marked ``.control``)
inside an isolated ``<bdi>``, markup escaped; the CSV's column name carries the same escapes. Also: an empty
database's dashboard and its operational CSVs answer.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from dashboard_support import _event, draft_tables, insert_story
from radtrace.audit.events import EventType
from radtrace.store.engine import Store
from radtrace.store.models import Revision

pytestmark = pytest.mark.integration

ROOT = "1.2.826.0.1.3680043.10.1207.96"
HOSTILE = 'model server said:\r\n<script>alert(1)</script> \u202eLIAF\u202c 500\n=HYPERLINK("x")'
OPERATIONS = ("volume", "failures", "latency")


def _seed_failed(store: Store) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    uids, tables = draft_tables(ROOT, start, {"failed": {1: {}}})
    tables[Revision][0].update(state="failed", reason=HOSTILE, finished_at=start)
    failed = _event(
        EventType.STUDY_FAILED, uids["failed"], {"revision": 1, "reason": HOSTILE}, outcome="serious_failure"
    )
    insert_story(store, tables, [failed], start)


def test_a_hostile_failure_reason_is_shown_escaped_on_one_line_in_its_own_order(store: Store, tmp_path: Path) -> None:
    _seed_failed(store)
    add_user(store, "qa.night", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.night")
        page = client.get("/console/dashboard")
        volume = client.get("/console/dashboard/volume.csv")
        audit = client.get("/console/audit", params={"event_type": "study_failed"})
    assert page.status_code == 200, page.text
    cell = re.search(r'<tr class="bad"><td>failed attempt: (.*?)</td>', page.text, re.S)
    assert cell is not None, page.text
    shown = cell.group(1)
    for raw in ("\u202e", "\u202c", "\r", "\n", "<script>"):
        assert raw not in shown, (raw, shown)  # before: the override and the line breaks raw
    assert shown.startswith('<bdi class="free-text">'), shown
    for code in ("000D", "000A", "202E", "202C"):
        assert f"⟨U+{code}⟩" in shown, (code, shown)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown

    # the audit explorer's row shows the same reason the same way (before: raw, the override reversing the row)
    assert audit.status_code == 200, audit.text
    reason = re.search(r'<p class="event-reason" data-testid="event-reason">(.*?)</p>', audit.text, re.S)
    assert reason is not None, audit.text
    assert reason.group(1) == shown, reason.group(1)

    assert volume.status_code == 200, volume.text
    header_line = volume.text.split("\r\n", 1)[0]
    header = next(csv.reader(io.StringIO(header_line)))
    failed = [name for name in header if name.startswith("failed: ")]
    assert failed == ["failed: model server said:⟨U+000D⟩⟨U+000A⟩<script>alert(1)</script> ⟨U+202E⟩LIAF⟨U+202C⟩ 500"
                      '⟨U+000A⟩=HYPERLINK("x")'], header  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(volume.text)))
    assert sum(int(row[failed[0]]) for row in rows) == 1


def test_an_empty_database_answers_the_dashboard_and_its_operational_csvs(store: Store, tmp_path: Path) -> None:
    add_user(store, "qa.empty", "qa")
    with console_client(store, console_settings(tmp_path, store)) as client:
        sign_in(client, "qa.empty")
        page = client.get("/console/dashboard")
        assert page.status_code == 200, page.text
        for chart in OPERATIONS:
            answer = client.get(f"/console/dashboard/{chart}.csv")
            assert answer.status_code == 200, (chart, answer.text)
            assert next(csv.reader(io.StringIO(answer.text))), chart  # a header at least
