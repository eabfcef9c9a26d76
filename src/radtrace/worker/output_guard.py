"""Stop reading when the model's output stops being a reading: :data:`STOP_AFTER` unparseable outputs in a row.

A model that produces garbage (corrupt or wrongly quantised weights, a chat template that does not fit after an
upgrade, an engine writing ``!!!!`` or one token over and over from NaN logits) answers every study at once with
text that does not parse. Before, each study became an ``unparsed`` draft, delivered to the PACS and RIS and put on
the radiologists' worklist: a night of empty drafts. The model server answers its health check, so the breaker
(:mod:`radtrace.worker.breaker`) saw nothing.

Now each reading is counted as it comes out of the model (:class:`OutputGuard`, the pipeline's reader): one flagged
``unparsed`` (the profile's parser found neither the answer nor the reasoning it is trained to write) adds its study
to the *streak*; any other reading ends it (a parsed one, the model's own refusal of a non-chest film, a trace cut
short at the token limit). Skips and errors are no output and leave it as it is. The streak counts *different*
studies (by their films' SOP Instance UIDs), so one odd study read again does not count twice; it belongs to one
model (name and version): another model's reading starts it again. Readings of the tiny random test model are noise
by design and never counted.

When the streak reaches :data:`STOP_AFTER` studies, the batch in hand is not recorded: its readings are dropped and
:class:`ModelOutputStoppedError` holds it through the breaker, like a model server that is down: kept under its
claims, no attempt counted, the waiting reason on it and on every queued revision (``radtrace status``, ``study
show``), one ``application_stopped`` audit entry per deployment with the reason "model output unparseable for 4
consecutive studies (model …): check the weights and the chat template", one warning line (no patient data: the
model's name and version only). The drafts made before, from the first outputs of the streak, stay as they were:
flagged ``unparsed`` and delivered, as a single odd study's draft is (at most ``STOP_AFTER - 1`` of them, none
when a batch holds the whole streak).

It is persisted: the stop is the model server's open outage (its ``model_outages`` row, kept with its audit entry,
:mod:`radtrace.worker.outage_table`). Every worker on the database looks at it before each batch (a primary-key
lookup) and holds without reading while it is open, so a worker killed while stopped and started again, and a second
worker, read nothing meanwhile.

It ends by a *probe reading*: at each of the breaker's probes (2 s doubling up to ``model.server_probe_max_s``) the
held batch is read again, and once one of its readings parses the stop ends (``application_started``), those
readings are recorded and every held study is read. A fixed model (new weights or template, the engine restarted)
is found without anyone having to say so, and the probe costs one read of studies that have to be read anyway. A
model that is only sometimes garbage is stopped again after :data:`STOP_AFTER` more, and a batch stopped three
times in one attempt has that attempt counted (the pipeline's flapping bound). After ``model.server_hold_max_s``
(2 h) the held studies end ``failed`` with the reason, as for any outage.

Or it is lifted by a person: output is deterministic, so a healthy model that happened to write four odd studies in a
row fails its probe reading again and again. ``radtrace model resume`` (after checking the model and the held study)
closes it (:func:`radtrace.worker.outage.lift_stop`: its ``application_started``, its row deleted). A worker whose
stop is no longer open reads again, its count from zero, without a probe reading: before its next batch, or, held,
within about a second (its breaker asks :meth:`OutputGuard.lifted`, one primary-key lookup, every
:data:`radtrace.worker.breaker.RECHECK_S` between probes; before, at its next probe, up to ``model.server_probe_max_s``
later: 14 s in ``test_model_resume``'s two-process case, 0.4-1 s now). A stop ended by another worker's probe
reading reaches the others the same way. A model that really writes garbage stops again after :data:`STOP_AFTER`
more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from radtrace.errors import ModelServerError, RadtraceError
from radtrace.model.reading import Reading, ReadingFlag
from radtrace.model.study import Skipped, StudyImage

__all__ = ["STOPPED_MARK", "STOP_AFTER", "ModelOutputStoppedError", "OutputGuard", "unparseable"]

log = logging.getLogger(__name__)

#: Unparseable readings of different studies in a row, from one model, that stop reading (see the module docstring).
STOP_AFTER: Final = 4
#: How a stop's reason begins (in the audit entry and the waiting revisions' reasons).
STOPPED_MARK: Final = "model output unparseable for"
_RANDOM_MODEL: Final = "(random weights, not for clinical use)"  # how radtrace.model.identity names the tiny model

Outcome = Reading | Skipped | RadtraceError


class _Reads(Protocol):
    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Outcome]: ...


class ModelOutputStoppedError(ModelServerError):
    """The model's output is garbage: the batch is held like one a model server that is down did not read."""


def unparseable(reading: Reading) -> bool:
    """Whether a reading counts towards a stop: flagged ``unparsed`` and not the model's own refusal."""
    return ReadingFlag.UNPARSED in reading.flags and ReadingFlag.REFUSED not in reading.flags


def _model_of(reading: Reading) -> str:
    identity = reading.identity
    version = identity.revision or (identity.weights_sha256 or "")[:12] or "unversioned"
    return f"{identity.model_name} {version} via {identity.backend}"


class OutputGuard:
    """The pipeline's reader, counting unparseable outputs (see the module docstring)."""

    def __init__(self, reader: _Reads, open_stop: Callable[[], str | None], *, stop_after: int | None = None) -> None:
        """``reader``: what reads (:class:`radtrace.model.reader.StudyReader`); ``open_stop``: the reason of a stop
        the audit log has open, or None (:meth:`radtrace.worker.outage.OutageNotice.open_reason`)."""
        self.reader = reader
        self.open_stop = open_stop
        self.stop_after = STOP_AFTER if stop_after is None else stop_after  # read here, so a test can shorten it
        self.streak: list[tuple[str, ...]] = []  # the studies (their films) of the current run of unparseable ones
        self.model = ""  # the model the streak is of
        self.reason: str | None = None  # set while this worker holds for a stop (its own or the audit log's)
        self._held: Sequence[Sequence[StudyImage]] = ()  # the batch in hand: what a probe reads
        self._probe_read: tuple[Sequence[Sequence[StudyImage]], list[Outcome]] | None = None
        self._fresh = False  # the stop was found this moment: its first probe does not read the batch again

    @property
    def backend(self) -> Any:
        """The reader's backend (the breaker's health check, the worker's warm-up)."""
        return getattr(self.reader, "backend", None)

    def read_each(self, studies: Sequence[Sequence[StudyImage]]) -> list[Outcome]:
        """Read like the reader; raise :class:`ModelOutputStoppedError` instead while reading is stopped, or when
        this batch completes a streak (its readings are dropped)."""
        self._held = studies
        if self._probe_read is not None and self._probe_read[0] is studies:  # the probe that ended the stop read it
            outcomes, self._probe_read = self._probe_read[1], None
            return outcomes
        self._probe_read = None
        if self.reason is not None and self.open_stop() is None:  # lifted since (or ended by another's probe)
            self._resume()
        if self.reason is None and (reason := self.open_stop()) is not None:
            self.reason = reason  # another worker's stop, or this one's before a restart
            log.warning("%s: reads are held until a probe reading parses", reason)
        if self.reason is not None:
            self._fresh = True
            raise ModelOutputStoppedError(self.reason)
        outcomes = self.reader.read_each(studies)
        if (reason := self._count(outcomes)) is not None:
            self.reason, self._fresh = reason, True
            log.warning("%s: the batch in hand (%d) is held, not recorded, and reading stops until a probe reading "
                        "parses", reason, len(studies))  # fmt: skip
            raise ModelOutputStoppedError(reason)
        return outcomes

    def unavailable(self) -> str | None:
        """The breaker's probe: the backend's health check, then, while reading is stopped, a probe reading of the
        held batch (None once one of its readings parses: the stop ends and that read is what the pipeline gets)."""
        fresh, self._fresh = self._fresh, False  # just read and found garbage (or found stopped): no read at once
        if self.reason is not None and not fresh and self.open_stop() is None:
            self._resume()  # lifted, or ended by another's probe: the server's own health decides the rest
        backend = self.backend
        check = getattr(backend, "unavailable", None) if backend is not None else None
        problem = check() if callable(check) else None
        if problem is not None or self.reason is None:
            return problem if isinstance(problem, str) else None
        if fresh:
            return self.reason
        held = self._held
        try:
            outcomes = self.reader.read_each(held)
        except RadtraceError as exc:
            return f"{self.reason}; the probe reading failed: {exc.reason}"
        readings = [outcome for outcome in outcomes if isinstance(outcome, Reading)]
        if readings and all(unparseable(reading) for reading in readings):
            return self.reason
        if not readings and self.open_stop() is not None:  # nothing to judge by (all skipped): still stopped
            return self.reason
        log.warning("a probe reading parses again (%d of %d): %s ends", sum(not unparseable(r) for r in readings),
                    len(readings), self.reason)  # fmt: skip
        self.reason, self.streak, self._probe_read = None, [], (held, outcomes)
        return None

    def lifted(self) -> bool:
        """The breaker's recheck while it holds: whether this worker holds for a stop that is no longer open (lifted
        by ``radtrace model resume``, or ended by another worker's probe reading); the probe that follows reads
        again. One primary-key lookup; nothing asked while it holds for anything else (a server that is down)."""
        return self.reason is not None and self.open_stop() is None

    def _resume(self) -> None:
        """The audit log no longer has the stop open: read again, the count from zero (nothing read here)."""
        log.warning("%s: no longer open in the audit log (lifted by radtrace model resume, or ended by a probe "
                    "reading elsewhere): reads resume and the count starts from zero; %d more unparseable studies in a "
                    "row stop reading again", self.reason, self.stop_after)  # fmt: skip
        self.reason, self.streak, self._probe_read, self._fresh = None, [], None, False

    def _count(self, outcomes: Sequence[Outcome]) -> str | None:
        """Add the batch's readings to the streak, in order; the stop's reason once it reaches :attr:`stop_after`."""
        for outcome in outcomes:
            if not isinstance(outcome, Reading) or _RANDOM_MODEL in outcome.identity.model_name:
                continue
            model = _model_of(outcome)
            if model != self.model:
                self.model, self.streak = model, []
            if not unparseable(outcome):
                self.streak = []
                continue
            films = tuple(sorted(image.sop_instance_uid for image in outcome.images))
            if films not in self.streak:
                self.streak.append(films)
        if self.stop_after <= 0 or len(self.streak) < self.stop_after:
            return None
        return (f"{STOPPED_MARK} {len(self.streak)} consecutive studies (model {self.model}): "
                "check the weights and the chat template")  # fmt: skip
