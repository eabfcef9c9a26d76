"""How the console's pages write a time: in the site's zone (``qa.time_zone``, default UTC), as the QA dashboard
counts its days. The audit explorer and the review page (its revisions, its decisions, the conflict page) use this one
function, so a time reads alike on every page."""

from __future__ import annotations

from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

__all__ = ["UTC_ZONE", "shown_time"]

#: The zone of a site that sets none (``qa.time_zone``'s default).
UTC_ZONE: Final = ZoneInfo("UTC")


def shown_time(at: datetime, zone: ZoneInfo, *, ms: bool = False, named: bool = False) -> str:
    """``at`` in the site's zone as the pages write it (to the second, or the millisecond); outside UTC followed by
    the zone's abbreviation (EST, EDT), which tells the two occurrences of a DST overlap's hour apart. ``named``: a
    UTC time is followed by "UTC" too (a page with no heading that names the zone)."""
    local = at.astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ms else local.strftime("%Y-%m-%d %H:%M:%S")
    return text if zone.key == "UTC" and not named else f"{text} {local.strftime('%Z')}"
