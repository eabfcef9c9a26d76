"""A batch read through a vLLM server that fails as a whole: the server's fault (no answer in time, 429, 5xx, not
reachable) is retried as a batch after a backoff, or after the server's Retry-After, up to the longest backoff; a
study the server refuses (its image) fails alone and the others of its batch are reported.

The server is a small local one speaking vLLM's protocol; the client is radtrace's own (the types of its errors are
what :mod:`radtrace.worker.model_failures` reads, so they are checked here against the real client).
"""

from __future__ import annotations

import base64
import io
import pickle
import struct
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from radtrace.config import Settings, load_settings
from radtrace.errors import RadtraceError
from radtrace.model.reader import StudyReader
from radtrace.model.study import StudyImage, study_image
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import RevisionState
from radtrace.testing.services import free_port
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from radtrace.worker.attempts import Result
from radtrace.worker.model_failures import affects_every_study, retry_after
from radtrace.worker.pipeline import StudyPipeline
from worker_support import FakeVllm, Reply, completion, fake_vllm_server, revision_row, spool_study

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "model_outputs"


def picture_size(request: dict[str, Any]) -> tuple[int, int]:
    """(width, height) of the request's first picture, from its PNG header."""
    url = request["messages"][0]["content"][0]["image_url"]["url"]
    png = base64.b64decode(url.split(",", 1)[1][:64])
    width, height = struct.unpack(">II", png[16:24])
    return width, height


@pytest.fixture
def fake_vllm() -> Iterator[FakeVllm]:
    with fake_vllm_server() as server:
        yield server


def settings_for(tmp_path: Path, url: str, **broker: Any) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        model={
            "backend": "vllm", "vllm_url": url, "vllm_model": "m", "request_timeout_s": 1.0,
            "batch_size": 8, "batch_wait_ms": 0,
        },
        broker={"max_attempts": 2, "retry_backoff_initial_s": 0.1, "retry_backoff_max_s": 0.2, **broker},
    )  # fmt: skip


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[[Settings], Store]]:
    opened: list[Store] = []

    def open_for(settings: Settings) -> Store:
        settings.data_dir.mkdir(parents=True)
        store = Store.from_url(settings.store_url)
        upgrade(store)
        opened.append(store)
        return store

    yield open_for
    for store in opened:
        store.dispose()


def queue(settings: Settings, store: Store, count: int, *, wide: int | None = None) -> list[str]:
    """``count`` one-image studies, oldest first; study number ``wide`` is landscape (the server refuses it)."""
    uids = []
    for index in range(count):
        image = ImageSpec(rows=256, columns=512) if index == wide else ImageSpec()
        uid, _ = spool_study(settings, store, make_study(StudySpec(seed=70 + index), [image]))
        uids.append(uid)
        time.sleep(0.002)  # oldest first is an order, not a tie
    return uids


def assert_one_timeout_window(arrivals: list[float]) -> None:
    """Every request of one attempt reached the server before the first could time out (1 s): the batch waited once
    for all of them, not once per study (a study read after another's timeout arrives 1 s or more after it).

    Arrival order, not the attempt's wall time: the wall time also counts the worker's own work, which a loaded CI
    machine stretches (4.7 s once for one 1 s timeout). One at a time, the 8 arrive over 7 s or more (each after the
    one before timed out): the bound is half that, as the server's threads also wait for the CPU to see a request."""
    assert len(arrivals) == 8
    assert max(arrivals) - min(arrivals) < 3.5, [round(at - arrivals[0], 3) for at in arrivals]


def test_a_batch_of_8_against_a_hanging_server_costs_one_timeout_per_attempt(
    tmp_path: Path, fake_vllm: FakeVllm, open_store: Callable[[Settings], Store]
) -> None:
    fake_vllm.answer = lambda request: None
    settings = settings_for(tmp_path, fake_vllm.url)
    store = open_store(settings)
    uids = queue(settings, store, 8)
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")

    first = pipeline.process_batch(uids[0], 1)
    assert sorted(key[0] for key, _ in first) == sorted(uids)
    assert {result.result for _, result in first} == {Result.RETRY}
    assert fake_vllm.requests == 8  # one request per study: not read again alone (16)
    assert_one_timeout_window(fake_vllm.arrivals[:8])
    for uid in uids:
        revision = revision_row(store, uid)
        assert (revision.state, revision.attempts) == (RevisionState.QUEUED, 1)

    time.sleep(0.3)  # the backoff
    second = pipeline.process_batch(uids[0], 1)
    assert {result.result for _, result in second} == {Result.FAILED}
    assert fake_vllm.requests == 16
    assert_one_timeout_window(fake_vllm.arrivals[8:])
    for uid in uids:
        revision = revision_row(store, uid)
        assert (revision.state, revision.attempts) == (RevisionState.FAILED, 2)
        assert revision.reason is not None
        assert revision.reason.startswith("gave up after 2 attempts: ")
        assert "did not answer /v1/chat/completions within 1 s" in revision.reason


@pytest.mark.parametrize(
    ("status", "asked", "expected_s"),
    [
        (503, "7", 7.0),  # the server's wait, longer than the backoff
        (429, "86400", 30.0),  # a day: no longer than broker.retry_backoff_max_s
        (429, "0", 2.0),  # never shorter than the backoff
        (500, None, 2.0),  # no Retry-After: the backoff
    ],
)
def test_a_batch_the_server_is_too_busy_for_is_retried_whole_after_its_retry_after(
    tmp_path: Path,
    fake_vllm: FakeVllm,
    open_store: Callable[[Settings], Store],
    status: int,
    asked: str | None,
    expected_s: float,
) -> None:
    headers = {"Retry-After": asked} if asked is not None else {}
    fake_vllm.answer = lambda request: Reply(status, b'{"object": "error", "message": "busy"}', headers)
    settings = settings_for(tmp_path, fake_vllm.url, retry_backoff_initial_s=2.0, retry_backoff_max_s=30.0)
    store = open_store(settings)
    uids = queue(settings, store, 4)
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")

    before = utc_now()
    results = pipeline.process_batch(uids[0], 1)
    after = utc_now()
    assert {result.result for _, result in results} == {Result.RETRY}
    assert fake_vllm.requests == 4  # not read again alone
    for uid in uids:
        revision = revision_row(store, uid)
        assert revision.state is RevisionState.QUEUED
        assert revision.next_attempt_at is not None
        waited = revision.next_attempt_at.replace(tzinfo=before.tzinfo)
        assert before + timedelta(seconds=expected_s) <= waited <= after + timedelta(seconds=expected_s)


def test_a_study_the_server_refuses_fails_alone_and_the_rest_of_its_batch_is_reported(
    tmp_path: Path, fake_vllm: FakeVllm, open_store: Callable[[Settings], Store]
) -> None:
    text = (FIXTURES / "nv_normal.txt").read_text(encoding="utf-8")

    def answer(request: dict[str, Any]) -> Reply:
        width, height = picture_size(request)
        if width > height:
            return Reply(400, b'{"object": "error", "message": "this picture is too wide"}')
        return completion(text)

    fake_vllm.answer = answer
    settings = settings_for(tmp_path, fake_vllm.url)
    store = open_store(settings)
    uids = queue(settings, store, 4, wide=2)
    pipeline = StudyPipeline(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), worker="w1")

    results = dict(pipeline.process_batch(uids[0], 1))
    assert results[(uids[2], 1)].result is Result.FAILED
    refused = revision_row(store, uids[2])
    assert refused.state is RevisionState.FAILED
    assert refused.reason is not None
    assert "refused /v1/chat/completions with 400" in refused.reason
    assert "this picture is too wide" in refused.reason
    for uid in (uids[0], uids[1], uids[3]):
        assert results[(uid, 1)].result is Result.REPORTED
        assert revision_row(store, uid).state is RevisionState.REPORTED
    assert fake_vllm.requests == 8  # the batch, then each study alone


def one_study(seed: int) -> list[StudyImage]:
    buffer = io.BytesIO()
    make_study(StudySpec(seed=seed), [ImageSpec()])[0].save_as(buffer, enforce_file_format=True)
    return [study_image(buffer.getvalue())]


def _reason_of(read: Callable[[list[list[StudyImage]]], object], studies: list[list[StudyImage]]) -> RadtraceError:
    try:
        read(studies)
    except RadtraceError as exc:
        return exc
    raise AssertionError("the read did not fail")


@pytest.mark.parametrize(
    ("reply", "every_study", "asked_s"),
    [
        (None, True, None),  # no answer in time
        (Reply(500, b"{}"), True, None),
        (Reply(503, b"{}", {"Retry-After": "12"}), True, 12),
        (Reply(429, b"{}", {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}), True, None),
        (Reply(503, b"{}", {"Retry-After": "9" * 5000}), True, None),  # int() of it raised ValueError: a crash
        (Reply(400, b'{"message": "answered 503 to /v1/chat/completions; it asks to retry after 99 s"}'), False, None),
        (Reply(200, b'{"object": "error", "message": "vLLM server at http://x answered 503 to /v1/c"}'), False, None),
        (Reply(200, b'{"choices": []}'), False, None),  # malformed
    ],
)
def test_the_client_s_own_errors_say_whether_the_server_is_at_fault(
    tmp_path: Path, fake_vllm: FakeVllm, reply: Reply | None, every_study: bool, asked_s: int | None
) -> None:
    """The phrases the pipeline reads are the real client's; a server's own message cannot pass for them."""
    fake_vllm.answer = lambda request: reply
    settings = settings_for(tmp_path, fake_vllm.url)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    error = _reason_of(reader.read_each, [one_study(90), one_study(91)])
    assert affects_every_study(error) is every_study, error.reason
    expected = None if asked_s is None else timedelta(seconds=asked_s)
    assert retry_after(error) == expected
    copied = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own error, as it crosses a process
    assert (affects_every_study(copied), retry_after(copied), copied.reason) == (every_study, expected, error.reason)


def test_a_model_server_that_is_not_reachable_is_the_server_s_fault(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"http://127.0.0.1:{free_port()}")
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    error = _reason_of(reader.read_each, [one_study(92), one_study(93)])
    assert affects_every_study(error), error.reason
    assert retry_after(error) is None
