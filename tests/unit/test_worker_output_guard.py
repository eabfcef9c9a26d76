"""What counts towards the garbage-output stop (radtrace.worker.output_guard): unparseable readings of *different*
studies from *one* model, in a row. A single odd study read again and again, the model's own refusal, a trace cut at
the token limit and the tiny random test model never stop the queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from radtrace.errors import RadtraceError
from radtrace.model.reading import Reading, ReadingFlag
from radtrace.model.study import Skipped, StudyImage
from radtrace.worker.breaker import Hold, ModelServerBreaker
from radtrace.worker.output_guard import STOP_AFTER, ModelOutputStoppedError, OutputGuard
from reporting_support import sr_cases

pytestmark = pytest.mark.unit

Outcome = Reading | Skipped | RadtraceError


def reading(study: int, *flags: ReadingFlag, model: str = "NV-Reason-CXR-3B") -> Reading:
    base, _ = sr_cases()["normal"]
    image = base.images[0].model_copy(update={"sop_instance_uid": f"1.2.3.{study}"})
    identity = base.identity.model_copy(update={"model_name": model})
    return base.model_copy(update={"flags": frozenset(flags), "images": (image,), "identity": identity})


class Replay:
    """A reader giving one prepared outcome per study read, in turn."""

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes = list(outcomes)

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Outcome]:
        return [self.outcomes.pop(0) for _ in studies]


def read_all(outcomes: Sequence[Outcome]) -> int | None:
    """Read the outcomes one study at a time; the 1-based index of the read that stopped, or None."""
    guard = OutputGuard(Replay(outcomes), lambda: None)
    for index in range(len(outcomes)):
        try:
            guard.read_each([[]])
        except ModelOutputStoppedError:
            return index + 1
    return None


UNPARSED = ReadingFlag.UNPARSED


def test_four_different_studies_in_a_row_stop_at_the_fourth() -> None:
    assert read_all([reading(i, UNPARSED, ReadingFlag.TRUNCATED) for i in range(6)]) == STOP_AFTER


def test_one_odd_study_read_again_and_again_never_stops() -> None:
    assert read_all([reading(7, UNPARSED)] * 8) is None


@pytest.mark.parametrize(
    "breaker",
    [reading(9), reading(9, ReadingFlag.REFUSED), reading(9, ReadingFlag.TRUNCATED),
     reading(9, UNPARSED, model="another model")],
    ids=["parsed", "refused", "truncated trace", "another model"],
)  # fmt: skip
def test_a_run_is_ended_by_a_reading_that_parses_or_another_model(breaker: Reading) -> None:
    run = [reading(i, UNPARSED) for i in range(STOP_AFTER - 1)]
    again = [reading(10 + i, UNPARSED) for i in range(STOP_AFTER - 1)]
    assert read_all([*run, breaker, *again]) is None


def test_skips_and_errors_neither_end_nor_extend_a_run() -> None:
    outcomes: list[Outcome] = [reading(0, UNPARSED), Skipped("no frontal chest image"), reading(1, UNPARSED),
                               RadtraceError("undecodable"), reading(2, UNPARSED), reading(3, UNPARSED)]  # fmt: skip
    assert read_all(outcomes) == len(outcomes)


def test_the_tiny_random_model_is_noise_by_design_and_never_stops() -> None:
    tiny = "radtrace-tiny-qwen2_5_vl (random weights, not for clinical use)"
    assert read_all([reading(i, UNPARSED, model=tiny) for i in range(8)]) is None


def test_a_hold_for_a_stop_ends_about_a_second_after_the_stop_is_lifted_not_at_its_next_probe() -> None:
    """The breaker asks the guard every second whether the stop is still open (one look at its row); lifted
    (``radtrace model resume``), the probe runs then and the hold ends, though the next probe was 30 s away. Before,
    the hold slept its whole backoff. Held for a server that is down, the guard is not asked: no database look."""
    stop: list[str | None] = [None]
    looks = [0]

    def open_stop() -> str | None:
        looks[0] += 1
        return stop[0]

    guard = OutputGuard(Replay([reading(i, UNPARSED) for i in range(STOP_AFTER)]), open_stop)
    for _ in range(STOP_AFTER - 1):
        guard.read_each([[]])
    with pytest.raises(ModelOutputStoppedError) as stopped:
        guard.read_each([[]])
    stop[0] = stopped.value.reason  # what the audit log's row now says: open
    breaker = ModelServerBreaker(guard.unavailable, recheck=guard.lifted, max_wait_s=30)
    breaker.first_wait_s = 30.0
    assert breaker.server_down()  # opens (the fresh stop: no probe reading at once)
    threading.Timer(0.5, lambda: stop.__setitem__(0, None)).start()  # the operator's resume
    started = time.monotonic()
    assert breaker.hold() is Hold.BACK
    assert time.monotonic() - started < 15  # half of the 30 s backoff the hold would sleep through; resumed at 0.5 s
    assert guard.reason is None
    assert not breaker.is_open

    looks[0] = 0
    down = ModelServerBreaker(lambda: "connection refused", recheck=guard.lifted, max_wait_s=30)
    assert down.server_down()
    down._sleep(1.2)  # a hold's wait for a server that is down: the guard holds for no stop
    assert looks[0] == 0


class DownBackend:
    """A model server that does not answer its health check."""

    def __init__(self) -> None:
        self.checks = 0

    def unavailable(self) -> str:
        self.checks += 1
        return "connection refused"


def test_a_stop_lifted_while_the_server_is_down_becomes_a_plain_outage_probed_with_backoff() -> None:
    """Lifted while the model server does not answer, the stop ends at the next probe (the guard holds for it no
    more) and the hold goes on as an outage: its health check is not asked every second by the recheck."""
    reader = Replay([reading(i, UNPARSED) for i in range(STOP_AFTER)])
    reader.backend = DownBackend()  # type: ignore[attr-defined]
    stop: list[str | None] = [None]
    guard = OutputGuard(reader, lambda: stop[0])
    for _ in range(STOP_AFTER - 1):
        guard.read_each([[]])
    with pytest.raises(ModelOutputStoppedError) as stopped:
        guard.read_each([[]])
    stop[0] = stopped.value.reason
    assert guard.unavailable() == "connection refused"  # the fresh stop's first probe: the server is down too
    stop[0] = None  # radtrace model resume
    assert guard.lifted()
    assert guard.unavailable() == "connection refused"  # still down: held as an outage
    assert guard.reason is None
    assert not guard.lifted()  # no more probes every second: the breaker's backoff again
