"""``radtrace status``'s lines for drafts read from an image the PACS re-sent under another patient or study, or
rejected: part of the status report (so ``--json`` and the text say the same, and a status without a database
prints the rest), and bounded: the flags are never cleared, so a site's list grows; the line names at most
FLAGGED_SHOWN studies and counts the rest (``--json`` lists them all)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from radtrace.dicom_listener.reassigned import FlaggedRevision
from radtrace.worker.status import FLAGGED_SHOWN, ServiceStatus

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def _status(reassigned: list[FlaggedRevision], rejected: list[FlaggedRevision]) -> ServiceStatus:
    return ServiceStatus({}, {}, {}, {}, None, reassigned=reassigned, rejected=rejected)


def test_no_flag_no_line() -> None:
    status = _status([], [])
    assert status.flag_lines() == []
    assert status.as_json()["reassigned_images"] == {"studies": [], "revisions": 0, "checked": 0}


def test_many_studies_are_counted_past_the_first_ones_and_listed_in_full_in_json() -> None:
    reassigned = [FlaggedRevision(f"1.2.3.{n:02d}", revision, WHEN) for n in range(12) for revision in (1, 2)]
    rejected = [FlaggedRevision("1.2.9", 1, WHEN)]
    [moved, refused] = _status(reassigned, rejected).flag_lines()
    assert moved.startswith("reassigned images: 12 study(ies), 24 revision(s) read from an image the PACS re-sent")
    assert moved.endswith(f"{', '.join(f'1.2.3.{n:02d}' for n in range(FLAGGED_SHOWN))} and 2 more"), moved
    assert refused.startswith("rejected images: 1 study(ies), 1 revision(s)")
    assert refused.endswith("(details: radtrace study show UID): 1.2.9"), refused
    data = _status(reassigned, rejected).as_json()
    assert data["reassigned_images"] == {
        "studies": [f"1.2.3.{n:02d}" for n in range(12)],
        "revisions": 24,
        "checked": 0,
    }
    assert data["rejected_images"] == {"studies": ["1.2.9"], "revisions": 1, "checked": 0}


def test_revisions_a_radiologist_checked_are_counted_as_checked() -> None:
    """A flagged revision checked on the study page (accepting its draft allowed) is still listed, counted as
    checked; before, the line had no word for it."""
    reassigned = [FlaggedRevision("1.2.3", 1, WHEN, "rad.one", WHEN), FlaggedRevision("1.2.4", 1, WHEN)]
    [moved] = _status(reassigned, []).flag_lines()
    assert moved.startswith("reassigned images: 2 study(ies), 2 revision(s) (1 checked on the console) read from")
    assert _status(reassigned, []).as_json()["reassigned_images"]["checked"] == 1
