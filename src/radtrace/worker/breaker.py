"""The worker's circuit breaker for a model server that is down (a vLLM restart, a node reboot).

Without it, each batch due during an outage cost one timeout and one attempt per study, so a queue ended ``failed``
after ``broker.max_attempts`` timeouts of downtime: a 10-minute restart failed the night's studies.

Now a batch the server failed as a whole (:func:`~radtrace.worker.model_failures.affects_every_study`) is followed by
a cheap health check of the server (:meth:`radtrace.model.backends.base.Backend.unavailable`: vLLM's ``/health``,
which answers 5xx once its engine died though its API process still lists models; the model list on a server without
it; bounded in time and bytes like every request). A server whose word is not enough is also asked for a real
completion of one token (one tiny picture, the same deadline): one without ``/health``, and one whose completion
timed out or came back empty since its last such probe answered, because a *wedged* engine (a GPU hang, a stuck
scheduler) answers ``/health`` 200 and reads nothing; the reason then says so ("answers /health but completions time
out"). When it answers, the failure was the batch's and is retried as before (one attempt counted): a study that is
only slow (a long trace past the request timeout) is no outage, its own attempt counts. When it does not, the
breaker *opens*: the worker keeps its claims (renewed by the
heartbeat) and reads nothing, probing with backoff (:data:`PROBE_FIRST_S` doubling to ``model.server_probe_max_s``);
when the server answers it *closes* and the same batch is read again, in the same attempt. No attempt is spent on the
outage. Between probes a hold asks its ``recheck`` every :data:`RECHECK_S` (the output guard's: is the stop for garbage
output still open?) and probes at once when it says so, so a stop lifted elsewhere ends the hold in about a second.

Bounded: after ``model.server_hold_max_s`` (default :data:`GIVE_UP_AFTER_S`, 2 h) of outage the breaker says so (an
error line) and the batch in hand, and every batch after it while the server is still down, ends ``failed`` with the
reason "model server unavailable since …", so nothing waits for ever without a word. Once the server answers again,
reading resumes.

What an operator sees: one warning line when it opens and one when it closes; the waiting revisions' reason
("waiting: model server unavailable since …"); the worker's ``radtrace_model_server_unavailable`` gauge; and, once
per outage of the server however many workers read through it, an audit entry when it begins and one when it ends
(``application_stopped`` / ``application_started``, component ``model reading``; :mod:`radtrace.worker.outage`).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Final

from radtrace.config import ModelSettings
from radtrace.store.base import utc_now

__all__ = ["GIVE_UP_AFTER_S", "PROBE_FIRST_S", "PROBE_MAX_S", "RECHECK_S", "Hold", "ModelServerBreaker"]

log = logging.getLogger(__name__)

#: The first wait before probing a server that did not answer; it doubles up to :data:`PROBE_MAX_S`.
PROBE_FIRST_S: Final = 2.0
#: The longest wait between probes by default (``model.server_probe_max_s``).
PROBE_MAX_S: Final[float] = ModelSettings.model_fields["server_probe_max_s"].default
#: How long reads are held for a server that does not answer before studies are failed with the reason, by default
#: (``model.server_hold_max_s``).
GIVE_UP_AFTER_S: Final[float] = ModelSettings.model_fields["server_hold_max_s"].default
_STOP_POLL_S: Final = 0.25  # how often a hold looks whether the worker is shutting down
#: How often a hold asks its ``recheck`` (one primary-key lookup: is the stop for garbage output still open?) between
#: probes, so that ``radtrace model resume``, or another worker's probe reading that parsed, is acted on in about a
#: second instead of at the next probe (up to ``model.server_probe_max_s``, 60 s).
RECHECK_S: Final = 1.0


class Hold(enum.Enum):
    """How a hold ended."""

    BACK = "back"  # the server answers: read again
    STOPPING = "stopping"  # the worker is shutting down: put the claims back, no attempt counted
    GAVE_UP = "gave-up"  # down for longer than give_up_after_s: fail with the reason


class ModelServerBreaker:
    """Open while the model server does not answer its health check (see the module docstring); one per worker."""

    def __init__(
        self,
        probe: Callable[[], str | None],
        *,
        stopping: Callable[[], bool] = lambda: False,
        on_open: Callable[[ModelServerBreaker], None] | None = None,
        on_close: Callable[[ModelServerBreaker, float], None] | None = None,
        on_give_up: Callable[[ModelServerBreaker], None] | None = None,
        on_still_down: Callable[[ModelServerBreaker], None] | None = None,
        clock: Callable[[], datetime] = utc_now,
        max_wait_s: float | None = None,
        give_up_after_s: float | None = None,
        recheck: Callable[[], bool] | None = None,
    ) -> None:
        """``max_wait_s`` and ``give_up_after_s``: ``model.server_probe_max_s`` and ``model.server_hold_max_s``
        (default :data:`PROBE_MAX_S` and :data:`GIVE_UP_AFTER_S`). ``recheck``: asked every :data:`RECHECK_S` while
        a hold waits for its next probe; True probes at once (the reason to hold may be gone: a stop lifted)."""
        self.probe = probe
        self.stopping = stopping
        self.on_open, self.on_close, self.on_give_up = on_open, on_close, on_give_up
        self.on_still_down = on_still_down  # after each probe of a hold that found the server still down
        self.clock = clock
        # the module's values are read here, not as default arguments, so a test can shorten them
        self.max_wait_s = PROBE_MAX_S if max_wait_s is None else max_wait_s
        self.first_wait_s = min(PROBE_FIRST_S, self.max_wait_s)
        self.give_up_after_s = GIVE_UP_AFTER_S if give_up_after_s is None else give_up_after_s
        self.recheck = recheck
        self.recheck_s = RECHECK_S
        self.since: datetime | None = None  # when the server was first found down (wall clock, for the reason)
        self.last_error = ""
        self.gave_up = False
        self._opened: float | None = None  # time.monotonic() of the same moment

    @property
    def is_open(self) -> bool:
        """Whether reads are held (or, after :attr:`give_up_after_s`, failed) for a server that does not answer."""
        return self._opened is not None

    @property
    def reason(self) -> str:
        """Why reads are held or failed: "model server unavailable since <UTC time> (<its last error>)"."""
        since = self.since.isoformat(timespec="seconds") if self.since is not None else "?"
        return f"model server unavailable since {since} ({self.last_error})"

    def server_down(self) -> bool:
        """Probe the server once: True (the breaker opens, or stays open) when it does not answer, False (it
        closes) when it does."""
        problem = self.probe()
        if problem is None:
            self._close()
            return False
        self.last_error = problem
        if self._opened is None:
            self._opened, self.since = time.monotonic(), self.clock()
            log.warning(
                "%s: reads are held, no attempt is counted; probing it every %.0f-%.0f s, for at most %.0f h",
                self.reason, self.first_wait_s, self.max_wait_s, self.give_up_after_s / 3600,
            )  # fmt: skip
            if self.on_open is not None:
                self.on_open(self)
        return True

    def hold(self) -> Hold:
        """Wait for the server, probing with backoff: :attr:`Hold.BACK` once it answers, :attr:`Hold.STOPPING` when
        the worker is shutting down, :attr:`Hold.GAVE_UP` once it has been down for :attr:`give_up_after_s`."""
        wait = self.first_wait_s
        while self._opened is not None:
            if self._give_up_due():
                return Hold.GAVE_UP
            left = self.give_up_after_s - (time.monotonic() - self._opened)
            if self._sleep(min(wait, max(left, 0.0))):
                return Hold.STOPPING
            if not self.server_down():
                return Hold.BACK
            if self.on_still_down is not None:
                self.on_still_down(self)
            wait = min(wait * 2, self.max_wait_s)
        return Hold.BACK

    def _give_up_due(self) -> bool:
        if self._opened is None or time.monotonic() - self._opened < self.give_up_after_s:
            return False
        if not self.gave_up:
            self.gave_up = True
            log.error(
                "%s, for more than %.0f h: studies now end 'failed' with that reason until it answers again "
                "(radtrace study retry UID queues one again)", self.reason, self.give_up_after_s / 3600,
            )  # fmt: skip
            if self.on_give_up is not None:
                self.on_give_up(self)
        return True

    def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``, less once :attr:`recheck` says to probe now; True (at once) when the worker is shutting
        down."""
        now = time.monotonic()
        end, recheck_at = now + seconds, now + self.recheck_s
        while (left := end - (now := time.monotonic())) > 0:
            if self.stopping():
                return True
            if self.recheck is not None and now >= recheck_at:
                recheck_at = now + self.recheck_s
                if self._recheck():
                    break
            time.sleep(min(left, _STOP_POLL_S))
        return self.stopping()

    def _recheck(self) -> bool:
        try:
            return self.recheck is not None and self.recheck()
        except Exception:  # a bug here must not end the hold: the probes go on as before
            log.exception("the hold's recheck failed unexpectedly")
            return False

    def _close(self) -> None:
        if self._opened is None:
            return
        down_s = time.monotonic() - self._opened
        log.warning("model server answers again after %.0f s down (since %s): reads resume", down_s,
                    self.since.isoformat(timespec="seconds") if self.since else "?")  # fmt: skip
        self._opened, self.gave_up = None, False
        if self.on_close is not None:
            self.on_close(self, down_s)
        self.since, self.last_error = None, ""
