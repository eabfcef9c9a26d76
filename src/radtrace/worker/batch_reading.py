"""The model's reading of a worker's claimed batch, through a model server that may fail, flap or be away.

:class:`radtrace.worker.pipeline.StudyPipeline` claims the revisions, gathers their images, and records, drafts and
finishes each one; :class:`BatchReading` only reads the gathered studies, in one batched call:

- a batch the model cannot read as a whole is read one study at a time (one study's fault fails that study alone);
- unless the model server is at fault (not reachable, no answer in time, 429 or 5xx:
  :func:`radtrace.worker.model_failures.affects_every_study`): then every study's attempt fails with that error and
  the batch is retried after the backoff;
- unless the server does not answer a health check either: then the batch is held, no attempt counted, until it does
  (:mod:`radtrace.worker.breaker`, bounded by ``model.server_hold_max_s``) and read again; a server that answers its
  health check and fails the batch again and again costs attempts after a few holds;
- garbage output stops reading, held like an outage (:mod:`radtrace.worker.output_guard`), and an outage is told once
  for every worker (:mod:`radtrace.worker.outage`).

Each study read is observed as one ``read`` stage of the batch's duration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from radtrace.config_sections import ModelSettings
from radtrace.errors import ModelServerUnavailableError, RadtraceError, ReadsHeldError
from radtrace.model.reading import Reading
from radtrace.model.study import Skipped, StudyImage
from radtrace.store.base import utc_now
from radtrace.worker.breaker import Hold, ModelServerBreaker
from radtrace.worker.claims import Claim
from radtrace.worker.model_failures import affects_every_study
from radtrace.worker.outage import OutageNotice
from radtrace.worker.output_guard import OutputGuard
from radtrace.worker.settlement import StageObserver

__all__ = ["BatchReading", "Reader"]

log = logging.getLogger("radtrace.worker.pipeline")  # one logger for the pipeline, as before the split

_HOLDS_PER_ATTEMPT = 3  # holds for one batch in one attempt: a server that keeps coming back and failing costs attempts


class Reader(Protocol):
    """What the pipeline needs of the model: :class:`radtrace.model.reader.StudyReader` is one."""

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Reading | Skipped | RadtraceError]:
        """Read several studies in as few batched calls as the model allows; one outcome per study, in order.
        A study that cannot be read yields its error; an error of the whole call (the model) is raised."""
        ...


class BatchReading:
    """One worker's reading of its claimed batches: the model behind its output guard, and the server's breaker."""

    def __init__(
        self,
        settings: ModelSettings,
        reader: Reader,
        outage: OutageNotice,
        observer: StageObserver,
        *,
        clock: Callable[[], datetime] = utc_now,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.outage = outage
        self.observer = observer
        # garbage output stops reading, held like an outage
        self.reader = OutputGuard(reader, outage.open_reason, stop_after=settings.unparsed_stop_after)
        self.breaker = ModelServerBreaker(self._probe_server, stopping=stopping, on_open=outage.opened,
                                          on_close=outage.closed, on_still_down=outage.still_down,
                                          clock=clock, max_wait_s=settings.server_probe_max_s,
                                          give_up_after_s=settings.server_hold_max_s,
                                          recheck=self._hold_may_end)  # fmt: skip

    def read(
        self, gathered: list[tuple[list[StudyImage], list[Any]]], claims: Sequence[Claim]
    ) -> list[Reading | Skipped | RadtraceError]:
        """Read every gathered study (of ``claims``), batched. When the batch fails as a whole, each study alone,
        unless the model server is at fault (away, slow, overloaded: :func:`affects_every_study`): then each study's
        attempt fails with that error and the batch is retried after its backoff; or, when the server does not
        answer a health check either, the batch is held until it does and read again (:meth:`_hold`)."""
        if not gathered:
            return []
        studies = [images for images, _ in gathered]
        started = time.monotonic()
        outcomes = self._read_batch(studies, claims)
        elapsed = time.monotonic() - started
        for _ in studies:
            self.observer.observe("read", elapsed)
        return outcomes

    def _read_batch(
        self, studies: list[list[StudyImage]], claims: Sequence[Claim]
    ) -> list[Reading | Skipped | RadtraceError]:
        down = self.breaker.is_open and self.breaker.server_down()  # still down since an earlier batch
        holds = 0
        while True:
            if down and (ended := self._hold(claims)) is not None:
                return [ended] * len(studies)
            try:
                outcomes = self.reader.read_each(studies)
            except RadtraceError as exc:
                # not the batch's fault when the server is away; but a server that answers its health check and then
                # fails the batch again and again (flapping) costs attempts again after a few free reads
                if affects_every_study(exc) and holds < _HOLDS_PER_ATTEMPT and self.breaker.server_down():
                    down, holds = True, holds + 1
                    continue
                if len(studies) == 1 or affects_every_study(exc):  # the server's fault: retried as a batch, later
                    return [exc] * len(studies)
                # maybe one study's: read alone, it fails alone and the others are recorded
                log.warning("a batch of %d failed as a whole (%s); reading each study alone", len(studies), exc.reason)
                return [self._read_alone(images) for images in studies]
            except Exception as exc:  # a bug must end in failed(reason), not a claim nobody explains
                log.exception("unexpected error reading a batch of %d", len(studies))
                return [RadtraceError(f"unexpected {type(exc).__name__}: {exc}")] * len(studies)
            if any(isinstance(outcome, Reading) for outcome in outcomes):
                self.outage.answered()  # the server reads: an outage another worker told and did not end ends here
            return outcomes

    def _hold(self, claims: Sequence[Claim]) -> RadtraceError | None:
        """Hold the claimed batch while the model server does not answer (its claims are renewed meanwhile): None
        once it answers (read it again, same attempt); else the error that ends each attempt: given back uncounted
        when the worker stops, failed with the reason after the breaker's limit."""
        self.outage.held = [claim.revision_id for claim in claims]
        if not self.breaker.gave_up:
            self.outage.still_down(self.breaker)
        try:
            ended = self.breaker.hold()
        finally:
            self.outage.held = []
        if ended is Hold.BACK:
            return None
        if ended is Hold.STOPPING:
            return ReadsHeldError(self.breaker.reason)
        return ModelServerUnavailableError(self.breaker.reason)

    def _hold_may_end(self) -> bool:
        """The breaker's recheck, every second of a hold: a stop for garbage output lifted, or a server outage that
        another worker saw end (:mod:`radtrace.worker.outage`): probe now rather than after the backoff."""
        return self.reader.lifted() if self.reader.reason is not None else self.outage.ended_elsewhere()

    def _probe_server(self) -> str | None:
        """The backend's health check of its server (None: it answers, or the model runs in this process), and while
        reading is stopped for garbage output a probe reading (:mod:`radtrace.worker.output_guard`)."""
        try:
            problem = self.reader.unavailable()
        except Exception:  # a bug in the check must not hold reads: the failed batch is retried as before
            log.exception("the model server's health check failed unexpectedly")
            return None
        return problem if isinstance(problem, str) else None

    def _read_alone(self, images: list[StudyImage]) -> Reading | Skipped | RadtraceError:
        try:
            return self.reader.read_each([images])[0]
        except RadtraceError as exc:
            return exc
