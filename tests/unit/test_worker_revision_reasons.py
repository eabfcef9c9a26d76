"""A waiting reason's earlier failure is found by structure (radtrace.worker.revision_reasons): whatever the wait's
error text and the failure's own error say (a model server's error body is the peer's text, and may contain the
``; earlier, attempt `` that joins them), the reason restored after the wait is exactly the failure it waited after."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from radtrace.worker.revision_reasons import EARLIER, WAITING, after_wait, retried, waiting

AT = datetime(2026, 12, 6, 12, 0, 5, tzinfo=UTC)
MARKER = f"{EARLIER}attempt "
#: Texts that are mostly the pieces of a reason, so the marker and its near misses come up often.
PIECES = st.sampled_from([MARKER, EARLIER, "; earlier", "; ", ";", " earlier, ", ", ", "attempt ", "1 of 3 failed: ",
                          WAITING, "; no attempt counted", "; tried again at 12:00:05 UTC", "x", "("])  # fmt: skip
ERROR_TEXTS = st.one_of(st.text(), st.lists(st.one_of(PIECES, st.text(max_size=3)), max_size=12).map("".join))


def wait_text(error: str) -> str:
    """A wait as the worker writes one (outage.py, attempts.put_back), its error the peer's text."""
    return f"{WAITING}model server unavailable since 2026-12-06T12:00:00+00:00 ({error}); no attempt counted"


@given(earlier_error=ERROR_TEXTS, wait_errors=st.lists(ERROR_TEXTS, min_size=1, max_size=3))
def test_the_reason_after_a_wait_is_exactly_the_failure_it_waited_after(
    earlier_error: str, wait_errors: list[str]
) -> None:
    failure = retried(1, 3, earlier_error, AT)
    reason: str | None = failure
    for error in wait_errors:  # a wait, then another replacing it (each probe rewrites it), keeping the failure
        reason = waiting(wait_text(error), reason)
        assert reason.startswith(WAITING)
        assert after_wait(reason) == failure
    assert after_wait(after_wait(reason)) == failure  # the restored reason is kept as it is


@given(wait_errors=st.lists(ERROR_TEXTS, min_size=1, max_size=3))
def test_a_wait_with_no_failure_before_it_is_none_after_it(wait_errors: list[str]) -> None:
    reason: str | None = None
    for error in wait_errors:
        reason = waiting(wait_text(error), reason)
        assert after_wait(reason) is None, reason


@given(error=ERROR_TEXTS)
def test_the_wait_s_own_text_is_kept_but_for_the_joining_words(error: str) -> None:
    reason = waiting(wait_text(error), retried(2, 3, "timed out", AT))
    wait, _, earlier = reason.partition(EARLIER)
    assert earlier == retried(2, 3, "timed out", AT)
    assert EARLIER not in wait
    said = wait_text(error)  # kept character for character, but for a ";" of the joining words written ","
    assert len(wait) == len(said)
    assert all(ours == theirs or (ours, theirs) == (",", ";") for ours, theirs in zip(wait, said, strict=True))


def test_a_server_error_body_that_names_an_earlier_attempt_is_not_taken_for_one() -> None:
    forged = "engine died; earlier, attempt 9 of 9 failed: nothing; tried again at 00:00:00 UTC"
    assert after_wait(waiting(wait_text(forged), None)) is None
    failure = retried(1, 3, "HTTP 500", AT)
    assert after_wait(waiting(wait_text(forged), failure)) == failure
    reason = waiting(wait_text(forged), failure)
    assert "engine died, earlier, attempt 9 of 9 failed" in reason  # what the server said, still readable
