"""The model's read of a claimed batch (radtrace.worker.batch_reading), with no database: a batch that fails as a whole
is read one study at a time, unless its model server is at fault; a server that does not answer its health check holds
the batch (the same attempt), and one that answers and fails again and again costs the attempt after a few holds.
Counted in calls to the model and its health check, never in seconds."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from radtrace.config_sections import ModelSettings
from radtrace.errors import ModelServerError, RadtraceError
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage
from radtrace.worker.batch_reading import _HOLDS_PER_ATTEMPT, BatchReading
from radtrace.worker.claims import Claim

pytestmark = pytest.mark.unit


class _Outage:
    """What the reading tells of an outage (radtrace.worker.outage.OutageNotice), kept in lists."""

    def __init__(self) -> None:
        self.held: list[int] = []
        self.held_seen: list[list[int]] = []
        self.told: list[str] = []

    def open_reason(self) -> str | None:
        return None

    def opened(self, breaker: Any) -> None:
        self.told.append("opened")

    def closed(self, breaker: Any, down_s: float) -> None:
        self.told.append("closed")

    def still_down(self, breaker: Any) -> None:
        self.held_seen.append(list(self.held))
        self.told.append("still down")

    def answered(self) -> None:
        self.told.append("answered")

    def ended_elsewhere(self) -> bool:
        return False


class _Model:
    """A model read in batches: ``fail(studies)`` is the error of a whole call (or None); ``health`` the answers of
    its server's health check, in turn (None: it answers)."""

    def __init__(self, fail: Any, health: Sequence[str | None] = ()) -> None:
        self.fail, self.health = fail, list(health)
        self.calls: list[list[str]] = []
        self.probes = 0
        self.backend = SimpleNamespace(unavailable=self._unavailable)

    def _unavailable(self) -> str | None:
        self.probes += 1
        return self.health.pop(0) if self.health else None

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        names = [str(images[0]) for images in studies]
        self.calls.append(names)
        if (error := self.fail(names)) is not None:
            raise error
        return [Skipped(f"{name} read") for name in names]


class _Observer:
    def __init__(self) -> None:
        self.stages: list[str] = []

    def observe(self, stage: str, seconds: float) -> None:
        self.stages.append(stage)

    def finished_in(self, state: str) -> None:
        pass


def _reading(model: _Model) -> tuple[BatchReading, _Outage, _Observer]:
    outage, observer = _Outage(), _Observer()
    settings = ModelSettings(server_probe_max_s=0.01, server_hold_max_s=600)
    reading = BatchReading(settings, model, cast(Any, outage), observer)
    return reading, outage, observer


def _batch(*names: str) -> tuple[list[tuple[list[StudyImage], list[Any]]], list[Claim]]:
    gathered: list[tuple[list[StudyImage], list[Any]]] = [([cast(StudyImage, name)], []) for name in names]
    claims = [cast(Claim, SimpleNamespace(revision_id=number)) for number, _ in enumerate(names, start=1)]
    return gathered, claims


def test_a_batch_read_whole_gives_each_study_its_outcome_and_one_read_stage_each() -> None:
    model = _Model(fail=lambda names: None)
    reading, _, observer = _reading(model)

    outcomes = reading.read(*_batch("a", "b", "c"))

    assert outcomes == [Skipped("a read"), Skipped("b read"), Skipped("c read")]
    assert model.calls == [["a", "b", "c"]]  # one batched call
    assert (model.probes, observer.stages) == (0, ["read", "read", "read"])
    assert reading.read([], []) == []
    assert len(model.calls) == 1  # nothing gathered: the model is not called


def test_a_batch_failed_by_one_study_is_read_one_study_at_a_time_and_that_study_alone_fails() -> None:
    bad = RadtraceError("the server refused the request")  # not the server's fault: maybe one study's
    model = _Model(fail=lambda names: bad if "b" in names else None)
    reading, _, _ = _reading(model)

    outcomes = reading.read(*_batch("a", "b", "c"))

    assert outcomes == [Skipped("a read"), bad, Skipped("c read")]
    assert model.calls == [["a", "b", "c"], ["a"], ["b"], ["c"]]
    assert model.probes == 0  # a study's fault asks nothing of the server's health


def test_a_server_that_fails_the_batch_but_answers_its_health_check_fails_every_study_once() -> None:
    busy = ModelServerError("model server answered 503")
    model = _Model(fail=lambda names: busy)
    reading, outage, _ = _reading(model)

    outcomes = reading.read(*_batch("a", "b"))

    assert outcomes == [busy, busy]  # each attempt fails with the server's error: retried after its backoff
    assert model.calls == [["a", "b"]]  # not read one study at a time (the same server, batch + 1 times)
    assert (model.probes, outage.told, reading.breaker.is_open) == (1, [], False)


def test_a_server_down_holds_the_batch_in_the_same_attempt_and_reads_it_again_once_it_answers() -> None:
    state = {"down": True}
    model = _Model(fail=lambda names: ModelServerError("no answer in 30 s") if state["down"] else None,
                   health=["connection refused", "connection refused"])  # fmt: skip

    def answers() -> str | None:
        state["down"] = len(model.health) > 0  # the server reads again once its health check answers
        return None

    reading, outage, _ = _reading(model)
    model.backend.unavailable = lambda: model._unavailable() or answers()

    outcomes = reading.read(*_batch("a", "b"))

    assert outcomes == [Skipped("a read"), Skipped("b read")]  # read again, no attempt counted
    assert model.calls == [["a", "b"], ["a", "b"]]
    assert model.probes == 3  # down (the batch is held), down (still), answers
    assert outage.told == ["opened", "still down", "still down", "closed"]
    assert (outage.held_seen[0], outage.held) == ([1, 2], [])  # the held revisions are told while held, then cleared
    assert not reading.breaker.is_open


def test_a_flapping_server_costs_the_attempt_after_a_few_holds() -> None:
    flapping = ModelServerError("model server answered 502")
    model = _Model(fail=lambda names: flapping, health=["connection refused", None] * (_HOLDS_PER_ATTEMPT + 1))
    reading, _, _ = _reading(model)

    outcomes = reading.read(*_batch("a", "b"))

    assert outcomes == [flapping, flapping]
    assert len(model.calls) == _HOLDS_PER_ATTEMPT + 1  # held and read again 3 times, then failed: retried later


def test_a_bug_in_the_model_call_ends_each_attempt_with_its_reason() -> None:
    model = _Model(fail=lambda names: KeyError("logits"))
    reading, _, _ = _reading(model)

    outcomes = reading.read(*_batch("a", "b"))

    assert [type(o) for o in outcomes] == [RadtraceError, RadtraceError]
    assert all(isinstance(o, RadtraceError) and o.reason == "unexpected KeyError: 'logits'" for o in outcomes)
    assert (len(model.calls), model.probes) == (1, 0)  # not read again, nor the server's health asked
