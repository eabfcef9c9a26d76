"""The agreement page (/console/agreement) over a million assessment events: the counts it shows are the current
decisions, and the median server time per request is printed (not asserted: a measurement, see the report).

A million ``finding_assessed`` and ``draft_assessed`` events (tests/dashboard_support.py :func:`seed_decisions`;
a tenth decided twice) are written straight into the audit table. Seeding takes a minute or two, so the test runs
only when asked: ``AGREEMENT_SCALE=1 .venv/bin/pytest -s -q tests/integration/test_console_agreement_scale.py``
(``-k sqlite`` or ``-k postgresql`` for one database; ``AGREEMENT_EVENTS`` for another count).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from console_support import add_user, console_client, console_settings, median_ms, sign_in
from dashboard_support import seed_decisions
from radtrace.store.engine import Store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("AGREEMENT_SCALE") != "1", reason="AGREEMENT_SCALE=1 runs it (seeding: minutes)"),
]

EVENTS = int(os.environ.get("AGREEMENT_EVENTS", "1000000"))


def _row(page: str, label: str) -> list[str]:
    row = re.search(rf'<tr data-label="{re.escape(label)}">(.*?)</tr>', page, re.S)
    assert row is not None, label
    return re.findall(r'<td class="num[^"]*">([^<]*)</td>', row.group(1))


def test_the_agreement_page_over_a_million_decisions(store: Store, tmp_path: Path) -> None:
    started = time.perf_counter()
    expected = seed_decisions(store, EVENTS)
    seeding_s = time.perf_counter() - started
    settings = console_settings(tmp_path, store, sync_interval_s=3600)
    add_user(store, "qa.scale", "qa")
    with console_client(store, settings) as client:
        sign_in(client, "qa.scale")
        started = time.perf_counter()
        page = client.get("/console/agreement").text
        first_ms = 1000 * (time.perf_counter() - started)
        drafts = expected.pop("")
        reasons = expected.pop("reasons")
        assert _row(page, "whole draft")[:4] == [str(drafts.total()), str(drafts["accept"]), "0",
                                                 str(drafts["reject"])]  # fmt: skip
        for label, verdicts in expected.items():
            assert _row(page, label)[:4] == [str(verdicts.total()), str(verdicts["accept"]), str(verdicts["modify"]),
                                             str(verdicts["reject"])]  # fmt: skip
        for code, count in reasons.items():
            assert re.search(rf"<td>{code}</td><td>[^<]*</td><td class=\"num\">{count}</td>", page), code
        ms = median_ms(lambda: client.get("/console/agreement"), repeat=5)
    print(f"\n{store.engine.dialect.name}: {EVENTS} assessment events ({seeding_s:.0f} s to seed)")
    print(f"  agreement page, first request        {first_ms:9.1f} ms")
    print(f"  agreement page, median of 5          {ms:9.1f} ms")
