"""A decision's time and a revision's reported time, as the review page and the conflict page write them: in the
site's zone with the audit explorer's function, named (UTC, EST, EDT); before, always "UTC"."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from radtrace.console.review import Decision, StudyReview
from radtrace.console.times import shown_time

NEW_YORK = ZoneInfo("America/New_York")
WINTER = datetime(2026, 1, 10, 3, 30, tzinfo=UTC)
SUMMER = datetime(2026, 7, 10, 3, 30, 5, tzinfo=UTC)
OVERLAP = (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC))  # 01:30 twice


def _decision(at: datetime | None, unreadable: str | None = None) -> Decision:
    return Decision(seq=7, user="dr.one", at=at, verdict="accept", at_unreadable=unreadable)


def test_a_decision_is_dated_in_the_sites_zone_with_its_abbreviation() -> None:
    assert _decision(WINTER).when(NEW_YORK) == "at 2026-01-09 22:30:00 EST"
    assert _decision(SUMMER).when(NEW_YORK) == "at 2026-07-09 23:30:05 EDT"
    assert [_decision(at).when(NEW_YORK) for at in OVERLAP] == [
        "at 2026-11-01 01:30:00 EDT",
        "at 2026-11-01 01:30:00 EST",
    ]
    assert _decision(SUMMER).when(ZoneInfo("Europe/Berlin")) == "at 2026-07-10 05:30:05 CEST"


def test_a_utc_site_reads_what_it_read_and_an_edited_time_is_still_said() -> None:
    assert _decision(WINTER).when() == "at 2026-01-10 03:30:00 UTC"
    assert _decision(WINTER).when(ZoneInfo("UTC")) == "at 2026-01-10 03:30:00 UTC"
    assert (
        _decision(None, "yesterday").when(NEW_YORK) == "at an unreadable time ('yesterday': the audit row was edited)"
    )


def test_the_page_uses_the_explorers_function_naming_the_zone() -> None:
    review = StudyReview(
        study_uid="1.2.3", revision=1, accession=None, item=None, reading={}, identity={}, findings=(), reasoning=(),
        impression=None, flags=(), images=(), timings={}, revisions=(), draft_decision=None, zone=NEW_YORK,
    )  # fmt: skip
    assert review.shown(WINTER) == shown_time(WINTER, NEW_YORK) == "2026-01-09 22:30:00 EST"
    # the explorer's own rows in UTC carry no zone (its headings name it); the review page's do
    assert shown_time(WINTER, ZoneInfo("UTC")) == "2026-01-10 03:30:00"
    assert shown_time(WINTER, ZoneInfo("UTC"), named=True) == "2026-01-10 03:30:00 UTC"
