"""What ``radtrace status`` says changed in the configuration since a destination was put on hold (a changed
configuration lifts nothing by itself: radtrace.reporting.dispatch.holds)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from radtrace.config import DicomDestination, DispatchSettings
from radtrace.reporting.dispatch.holds import DestinationHold, configuration_changes

pytestmark = pytest.mark.unit

HELD = DestinationHold(destination="PACS@10.0.0.5:104", reason="1/1/3 ...", codes="1/1/3",
                       held_since=datetime(2026, 12, 5, 2, 14, tzinfo=UTC), outbox_id=1, calling_ae_title="RADTRACE",
                       ae_title="PACS", host="10.0.0.5", port=104)  # fmt: skip


def _settings(*pacs: tuple[str, str, int], calling: str = "RADTRACE") -> DispatchSettings:
    return DispatchSettings(
        pacs=[DicomDestination(ae_title=ae, host=host, port=port) for ae, host, port in pacs], calling_ae_title=calling
    )


@pytest.mark.parametrize(
    ("settings", "changes"),
    [
        (_settings(("PACS", "10.0.0.5", 104)), []),
        (_settings(("PACS", "10.0.0.5", 104), calling="NIGHTSHIFT"),
         ["dispatch.calling_ae_title is 'NIGHTSHIFT' (was 'RADTRACE')"]),
        (_settings(("PACS_NEW", "10.0.0.5", 104)),
         ["dispatch.pacs no longer names PACS@10.0.0.5:104; PACS_NEW@10.0.0.5:104 is at its host and port"]),
        (_settings(("PACS", "10.0.0.6", 104)), ["dispatch.pacs no longer names PACS@10.0.0.5:104"]),
    ],
    ids=["unchanged", "calling-ae", "ae-title", "moved-away"],
)  # fmt: skip
def test_the_changes_since_the_hold_are_named(settings: DispatchSettings, changes: list[str]) -> None:
    assert configuration_changes(HELD, settings) == changes
