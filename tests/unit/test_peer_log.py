"""The lines a peer causes in the listener's log: one per source and kind per interval, the rest counted."""

from __future__ import annotations

import pytest

from radtrace.dicom_listener.peer_log import MAX_SOURCES, PeerLog

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_from_one_source_is_one_line_then_one_line_that_counts_the_rest() -> None:
    clock = Clock()
    peer_log = PeerLog(60.0, clock=clock)
    assert peer_log.admit("10.0.0.9", "rejected association") == ""
    for _ in range(999):
        clock.now += 0.01
        assert peer_log.admit("10.0.0.9", "rejected association") is None
    clock.now += 60.0
    suffix = peer_log.admit("10.0.0.9", "rejected association")
    assert suffix == " (999 more like it from this source not logged in the last 70 s)"
    assert peer_log.admit("10.0.0.9", "rejected association") is None


def test_other_sources_and_other_kinds_are_logged_each_on_their_own() -> None:
    peer_log = PeerLog(60.0, clock=Clock())
    assert peer_log.admit("10.0.0.9", "rejected association") == ""
    assert peer_log.admit("10.0.0.10", "rejected association") == ""
    assert peer_log.admit("10.0.0.9", "aborted") == ""
    assert peer_log.admit("10.0.0.9", "aborted") is None


def test_a_quiet_source_is_forgotten_and_a_flood_of_sources_is_counted_together() -> None:
    clock = Clock()
    peer_log = PeerLog(60.0, clock=clock)
    for n in range(MAX_SOURCES):
        assert peer_log.admit(f"10.1.{n // 256}.{n % 256}", "aborted") == ""
    assert peer_log.admit("10.9.9.9", "aborted") == ""  # the first of the sources past the bound, as "*"
    assert peer_log.admit("10.9.9.10", "aborted") is None
    assert len(peer_log._seen) == MAX_SOURCES + 1  # bounded, whatever the number of sources
    clock.now += 61.0
    assert peer_log.admit("10.9.9.11", "aborted") == ""  # the quiet ones are forgotten: room again
    assert len(peer_log._seen) == 2  # the new one, and "*" that still owes its count
