"""radtrace's exception tree.

Every failure that crosses a package edge is one of these. The split that matters operationally is
*retryable* (the same step may succeed later: a peer is down, the database is busy, the GPU ran out
of memory) versus *permanent* (running it again cannot help: the DICOM is unparsable, a setting is
wrong, the peer rejected the message). Workers retry the first kind with backoff and move a study
to ``failed(reason)`` on the second.

Library exceptions are translated where they are caught: ``raise SpoolError(...) from exc``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "DicomInputError",
    "DispatchError",
    "DispatchRejectedError",
    "ModelError",
    "ModelFilesError",
    "ModelLoadError",
    "ModelServerError",
    "ModelServerUnavailableError",
    "PeerUnavailableError",
    "PermanentError",
    "RadtraceError",
    "ReadsHeldError",
    "ReportError",
    "RetryableError",
    "StoreUnavailableError",
    "is_retryable",
]


class RadtraceError(Exception):
    """Base of every error radtrace raises on purpose.

    ``reason`` is a short, patient-data-free phrase suitable for a study's ``failed(reason)``
    state, an audit outcome or a DICOM error comment.
    """

    retryable: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableError(RadtraceError):
    """The step may succeed if tried again later (transient resource or peer failure)."""

    retryable = True


class PermanentError(RadtraceError):
    """Trying again cannot help; the input, the configuration or the peer's verdict must change."""

    retryable = False


# --- permanent ---------------------------------------------------------------------------------


class ConfigError(PermanentError):
    """A setting is missing or invalid. The message names the setting."""


class DicomInputError(PermanentError):
    """A received or read DICOM object is malformed or not something radtrace can process."""


class ModelLoadError(PermanentError):
    """Model weights or processor files are missing, incomplete or not loadable."""


class ModelFilesError(ModelLoadError):
    """A checkpoint's files are all there but cannot be loaded (a truncated weights file, a configuration that is not
    JSON or does not fit the weights). Restarting cannot help until the files change: ``directory`` is what to
    watch."""

    def __init__(self, reason: str, directory: Path) -> None:
        super().__init__(reason)
        self.directory = directory

    def __reduce__(self) -> tuple[type[ModelFilesError], tuple[str, Path]]:
        return type(self), (self.reason, self.directory)


class DispatchRejectedError(PermanentError):
    """A peer refused an outbound message for good (HL7 AR/CR, DICOM failure status that will recur)."""


# --- retryable ---------------------------------------------------------------------------------


class StoreUnavailableError(RetryableError):
    """The database could not be reached or is temporarily busy."""


class PeerUnavailableError(RetryableError):
    """A network peer (PACS, RIS, broker, model server) did not answer or dropped the connection."""


class DispatchError(RetryableError):
    """An outbound delivery did not complete and may be tried again (timeout, HL7 AE, DICOM warning-less failure)."""


class ModelError(RetryableError):
    """Inference failed for a reason that may pass (e.g. out of GPU memory, model server overloaded)."""


class ModelServerError(ModelError):
    """The model server itself failed the call: it did not answer in time, or answered 429 or 5xx. Any study would
    have failed alike, so a batch is retried whole. ``retry_after_s``: the wait it asked for (Retry-After, in
    seconds), if it gave one."""

    def __init__(self, reason: str, retry_after_s: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[ModelServerError], tuple[str, int | None]]:
        return type(self), (self.reason, self.retry_after_s)  # keeps the wait across a pickle


def is_retryable(exc: BaseException) -> bool:
    """Whether a caught exception should be retried. Unknown exceptions are treated as permanent.

    Treating the unknown as permanent bounds the damage of a bug: the study ends ``failed`` with a
    reason instead of looping through retries forever.
    """
    return isinstance(exc, RadtraceError) and exc.retryable


class ReportError(PermanentError):
    """A report (SR, HL7, FHIR) cannot be built from the reading and sources given (e.g. a missing image)."""


class DraftProcessLostError(RetryableError):
    """The process building a revision's drafts died (killed, out of memory) before it finished: the attempt is
    retried, the reading with it."""


class ModelServerUnavailableError(PermanentError):
    """The model server has not answered for longer than the worker holds reads for it (its circuit breaker gave up,
    :mod:`radtrace.worker.breaker`): the study ends ``failed`` with "model server unavailable since …"."""


class ReadsHeldError(RetryableError):
    """A read held for a model server that is down was given back unread (the worker is shutting down): the revision
    is queued again and the attempt is not counted."""


class ModelRequestError(PermanentError):
    """A model server refused a request for good (bad request, unknown model, not authorised)."""
