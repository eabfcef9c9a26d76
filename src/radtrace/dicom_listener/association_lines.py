"""The lines an established association's instances cause, bounded per association: the first of each kind logged at
once, the others counted into one line when the association ends.

A peer sending instances whose SOP Instance UID breaks PS3.5 9.1 (a component with a leading zero, ``...498.07.1``)
wrote, per instance, nine of pydicom's ``Invalid value for VR UI`` warnings, pynetdicom's ``Non-conformant ... UID``
(bounded per association already) and the listener's ``quarantined an unusable instance as <file>: (0008,0018) SOP
Instance UID: not a valid UID``: 3,002 lines (612 kB) for a 300-instance association, at the rate the peer sent; 4
now. Each quarantined instance is still audited (``instance_quarantined``: its file, its reason) and counted in the
metrics; the log says the first of each reason, then how many more when the association ends. pynetdicom's and
pydicom's UID warnings are bounded by :data:`radtrace.logging.pynetdicom_lines.NONCONFORMANT`, whose count the same
line says.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from radtrace.logging import nonconformant_uid_lines_ended

__all__ = ["MAX_REASONS", "QuarantineLines"]

#: Distinct quarantine reasons told apart per association (a reason may name an offset); past it, counted together.
MAX_REASONS: Final = 8
_OTHER: Final = "other reasons"


class QuarantineLines:
    """Which quarantine lines of an association are logged, and the association's closing count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def first(self, assoc: Any, reason: str) -> bool:
        """Whether to log this quarantine of ``assoc`` (the first of its reason); else it is counted."""
        with self._lock:
            counts: dict[str, int] | None = getattr(assoc, "radtrace_quarantined", None)
            if counts is None:
                counts = {}
                setattr(assoc, "radtrace_quarantined", counts)  # noqa: B010 - read back when the association ends
            if reason not in counts and len(counts) >= MAX_REASONS:
                reason = _OTHER
            if reason in counts:
                counts[reason] += 1
                return False
            counts[reason] = 0
            return reason != _OTHER

    def ended(self, assoc: Any) -> str | None:
        """The association has ended: what its unlogged lines were, in one message (``None``: there were none).
        Says it once (an abort ends an association twice: EVT_ABORTED, then EVT_CONN_CLOSE)."""
        with self._lock:
            counts: dict[str, int] = getattr(assoc, "radtrace_quarantined", None) or {}
            setattr(assoc, "radtrace_quarantined", None)  # noqa: B010
        parts = []
        if unlogged := nonconformant_uid_lines_ended(assoc):
            parts.append(
                f"{unlogged} more of pynetdicom's 'Non-conformant ... UID' warnings (and pydicom's 'Invalid value for "
                "VR UI')"
            )
        if quarantined := sum(counts.values()):  # no reason here: the audit log has each instance's, with its file
            parts.append(f"{quarantined} more quarantined instances (each in the audit log: instance_quarantined)")
        return " and ".join(parts) if parts else None
