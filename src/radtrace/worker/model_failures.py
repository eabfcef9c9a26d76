"""What a failed model call says about the studies it was reading, and how long its server asked us to wait.

A batch read that fails as a whole is either the *server's* fault, which would hit every study of it alike (the
server is not reachable, did not answer in time, answered 429 or 5xx), or maybe one study's (a request the server
refused, a malformed or oversized completion, out of memory for the batch). The first kind is retried as a batch
after a backoff, each study's attempt counted once; reading each study alone would only wait for the same server
``batch + 1`` times (:mod:`radtrace.worker.batch_reading`). The second kind is read one study at a time, so the study
at fault fails alone and the others are recorded.

The model client says which by the error's type: :class:`~radtrace.errors.PeerUnavailableError` (not reachable)
and :class:`~radtrace.errors.ModelServerError` (no answer in time, 429, 5xx; with the server's Retry-After), never
by its wording, so nothing a server writes into its own error message can pass for either.
"""

from __future__ import annotations

from datetime import timedelta

from radtrace.errors import ModelServerError, PeerUnavailableError, RadtraceError

__all__ = ["affects_every_study", "retry_after"]


def affects_every_study(error: RadtraceError) -> bool:
    """Whether the failed call would have failed for any study: the model server is away, slow or overloaded."""
    return isinstance(error, PeerUnavailableError | ModelServerError)


def retry_after(error: RadtraceError) -> timedelta | None:
    """The wait the server asked for with its Retry-After (429, 503), when the error carries one."""
    if isinstance(error, ModelServerError) and error.retry_after_s is not None:
        return timedelta(seconds=error.retry_after_s)
    return None
