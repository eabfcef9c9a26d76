"""What a failed model call says about the studies it was reading, and how long its server asked us to wait.

A batch read that fails as a whole is either the *server's* fault, which would hit every study of it alike (the
server is not reachable, did not answer in time, answered 429 or 5xx), or maybe one study's (a request the server
refused, a malformed or oversized completion, out of memory for the batch). The first kind is retried as a batch
after a backoff, each study's attempt counted once; reading each study alone would only wait for the same server
``batch + 1`` times (:mod:`radtrace.worker.pipeline`). The second kind is read one study at a time, so the study
at fault fails alone and the others are recorded.

The vLLM client (:mod:`radtrace.model.backends.vllm`) names these failures in its reasons: a timeout "did not answer
<path> within N s", an HTTP status "answered <status> to <path>", with "; it asks to retry after N s" when the server
sent a Retry-After in seconds. Those phrases are read here; tests/integration/test_pipeline_batch_failures.py runs
the real client against servers that do each, so a change of wording fails there.
"""

from __future__ import annotations

import re
from datetime import timedelta

from radtrace.errors import ModelError, PeerUnavailableError, RadtraceError

__all__ = ["affects_every_study", "retry_after"]

# The whole reason, so that text a server put into another reason (its error message, quoted) cannot pass for one.
_SERVER_WIDE = re.compile(
    r"vLLM server at \S+ (?:did not answer \S+ within [0-9.e+]+ s"
    r"|answered (?:429|5[0-9][0-9]) to \S+(?:; it asks to retry after (?P<after>[0-9]{1,12}) s)?)"
)


def affects_every_study(error: RadtraceError) -> bool:
    """Whether the failed call would have failed for any study: the model server is away, slow or overloaded."""
    if isinstance(error, PeerUnavailableError):
        return True
    return isinstance(error, ModelError) and _SERVER_WIDE.fullmatch(error.reason) is not None


def retry_after(error: RadtraceError) -> timedelta | None:
    """The wait the server asked for with its Retry-After (429, 503), when the error carries one."""
    found = _SERVER_WIDE.fullmatch(error.reason) if isinstance(error, ModelError) else None
    return None if found is None or found["after"] is None else timedelta(seconds=int(found["after"]))
