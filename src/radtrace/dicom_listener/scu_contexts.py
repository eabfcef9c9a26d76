"""Why a peer refused the presentation contexts a C-STORE client proposed, in words an operator can act on.

A peer answers each proposed context in its A-ASSOCIATE-AC (PS3.8 table 9-18: 0 acceptance, 1 user rejection, 2 no
reason given, 3 abstract syntax not supported, 4 transfer syntaxes not supported). ``radtrace send`` proposes each
file's own SOP class in its own transfer syntax only, so a listener that does not take that syntax (radtrace's own
does not take the retired Explicit VR Big Endian) refuses the context; where it refuses every one, pynetdicom aborts
the association it has just been granted, and the file was said to have failed for want of a listener
("association … aborted: is a DICOM listener running there?") though one answered at once.
"""

from __future__ import annotations

from typing import Final

from pydicom.uid import UID
from pynetdicom.association import Association

__all__ = ["NO_CONTEXT", "refused_contexts"]

NO_CONTEXT: Final = "no accepted presentation context"

_RESULTS: Final = {
    1: "refused by the peer (user rejection)",
    2: "refused by the peer (no reason given)",
    3: "the peer does not take this SOP class",
    4: "the peer does not take this transfer syntax",
}
_CONVERT: Final = "; send it in one the peer takes (dcmtk: dcmconv +te FILE OUT writes Explicit VR Little Endian)"


def refused_contexts(assoc: Association) -> dict[tuple[str, str], str]:
    """One note per refused context, keyed by its (SOP class UID, transfer syntax UID) as proposed."""
    notes: dict[tuple[str, str], str] = {}
    for context in assoc.rejected_contexts:
        if context.abstract_syntax is None or not context.transfer_syntax:
            continue
        sop_class, syntax = UID(context.abstract_syntax), UID(context.transfer_syntax[0])
        said = _RESULTS.get(context.result or 0, f"refused by the peer (result {context.result})")
        named = f"{sop_class.name} in {syntax.name}" if syntax.is_transfer_syntax else f"{sop_class.name} in {syntax}"
        notes[(str(sop_class), str(syntax))] = (
            f"{NO_CONTEXT}: {said}: {named} (A-ASSOCIATE-AC result {context.result})"
            + (_CONVERT if context.result == 4 else "")
        )
    return notes
