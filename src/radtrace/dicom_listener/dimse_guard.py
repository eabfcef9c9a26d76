"""Which fragments of a DIMSE message an association takes: pure checks before pynetdicom sees them.

A DIMSE message travels as a command set and, when its command says so, one data set, each split
into fragments (PDVs) of P-DATA-TF PDUs (PS3.8 Annex E). pynetdicom appends whatever arrives to the
message being received, in memory (the command set, and any data set not streamed to a file) or
in the C-STORE's file, with no end: fragments never marked last grow them until memory or disk
runs out; a fragment on a context that was never negotiated, or a command in the middle of a data
set, raises inside its DUL thread. Here each fragment is judged first; a problem aborts the
association (PS3.8 9.3.8: the peer broke the protocol, nothing can be answered on it).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any, Final

__all__ = ["MAX_COMMAND_BYTES", "MAX_IN_MEMORY_DATA_SET_BYTES", "command_problem", "fragment_problem"]

#: Longest command set taken (a C-STORE-RQ's is some 200 bytes; its elements are all short).
MAX_COMMAND_BYTES: Final = 64 * 1024
#: Longest data set kept in memory: C-STORE data sets are streamed to a file, and no other service
#: here takes one (a C-ECHO has none).
MAX_IN_MEMORY_DATA_SET_BYTES: Final = 64 * 1024

_COMMAND: Final = 0x01  # message control header bits (PS3.8 E.2)


def _name(message: Any) -> str:
    return type(message).__name__.replace("_", "-")


def _decoded(message: Any) -> bool:
    """Whether the message's command set is complete (pynetdicom then turns it into its command's class)."""
    return message is not None and type(message).__name__ != "DIMSEMessage"


def fragment_problem(
    message: Any,
    accepted_contexts: Container[int],
    context_id: int,
    control: int,
    length: int,
    *,
    max_data_set_bytes: int | None = None,
) -> str | None:
    """Why this fragment may not be taken, or ``None``.

    ``message`` is the DIMSE message being received (``None`` between messages), ``length`` the
    fragment's bytes after its message control header; ``max_data_set_bytes`` bounds a data set
    streamed to a file (``None``: unbounded).
    """
    if context_id not in accepted_contexts:
        return f"P-DATA-TF on presentation context {context_id}, which was not accepted"
    if control & _COMMAND:
        if _decoded(message):
            return f"a command set began before the data set of the {_name(message)} ended"
        held = message.encoded_command_set.tell() if message is not None else 0
        if held + length > MAX_COMMAND_BYTES:
            return f"a command set longer than {MAX_COMMAND_BYTES} bytes"
        return None
    if not _decoded(message):
        return "a data set fragment came before its command set"
    if message.context_id != context_id:
        return f"a data set on presentation context {context_id}, its command on {message.context_id}"
    data_file = getattr(message, "_data_set_file", None)
    if data_file is None:
        if message.data_set.tell() + length > MAX_IN_MEMORY_DATA_SET_BYTES:
            return f"a data set for a {_name(message)} longer than {MAX_IN_MEMORY_DATA_SET_BYTES} bytes"
        return None
    if max_data_set_bytes is not None and data_file.tell() + length > max_data_set_bytes:
        return f"a data set longer than {max_data_set_bytes} bytes (listener.max_image_pixels)"
    return None


#: The command elements of the requests served that pynetdicom cannot do without (PS3.7 9.3.1.1, 9.3.5.1), and
#: Command Data Set Type for any command, as the messages name them.
_ELEMENTS: Final = {
    "MessageID": "Message ID (0000,0110)",
    "AffectedSOPClassUID": "Affected SOP Class UID (0000,0002)",
    "Priority": "Priority (0000,0700)",
    "CommandDataSetType": "Command Data Set Type (0000,0800)",
    "AffectedSOPInstanceUID": "Affected SOP Instance UID (0000,1000)",
}
_REQUIRED: Final = {
    0x0001: ("C-STORE-RQ", tuple(_ELEMENTS)),
    0x0030: ("C-ECHO-RQ", ("MessageID", "AffectedSOPClassUID", "CommandDataSetType")),
}


def command_problem(command_set: Any) -> str | None:
    """The required elements a decoded command set (a pydicom ``Dataset``) lacks, named, or ``None``.

    For the log and audit of a command pynetdicom failed to turn into a request: ``undecodable DIMSE message
    (AttributeError)`` said nothing of which element was missing.
    """
    if command_set is None:
        return None
    field = command_set.get("CommandField")
    if field is None:
        return "a command set without Command Field (0000,0100)"
    name, required = _REQUIRED.get(int(field), (f"command 0x{int(field):04X}", ("CommandDataSetType",)))
    missing = [keyword for keyword in required if keyword not in command_set]
    return f"a {name} without {', '.join(_ELEMENTS[k] for k in missing)}" if missing else None
