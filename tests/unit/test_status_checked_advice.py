"""``radtrace status``'s flag lines tell people to check only what is not checked yet.

Before, a line whose every flagged revision a radiologist had recorded as checked on the console still said "do not
sign their drafts before checking" (it counted them as checked, then asked for the check again), and one with some
checked asked for all to be checked.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from radtrace.dicom_listener.reassigned import FlaggedRevision
from radtrace.worker.status import ServiceStatus

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def _line(reassigned: list[FlaggedRevision]) -> str:
    [line] = ServiceStatus({}, {}, {}, {}, None, reassigned=reassigned, rejected=[]).flag_lines()
    return line


def test_a_line_whose_revisions_were_all_checked_does_not_ask_for_a_check() -> None:
    line = _line(
        [FlaggedRevision("1.2.3", 1, WHEN, "rad.one", WHEN), FlaggedRevision("1.2.4", 1, WHEN, "rad.two", WHEN)]
    )
    assert "before checking" not in line
    assert "(2 checked on the console)" in line
    assert "each one checked by a radiologist on the console" in line
    assert line.endswith("(details: radtrace study show UID): 1.2.3, 1.2.4"), line


def test_a_line_with_some_checked_asks_for_the_unchecked_ones_only() -> None:
    line = _line([FlaggedRevision("1.2.3", 1, WHEN, "rad.one", WHEN), FlaggedRevision("1.2.4", 1, WHEN)])
    assert "do not sign the 1 unchecked one(s) before checking" in line, line
    unchecked = _line([FlaggedRevision("1.2.4", 1, WHEN)])
    assert "do not sign their drafts before checking" in unchecked, unchecked
