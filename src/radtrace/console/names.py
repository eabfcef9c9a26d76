"""A DICOM person name (PS3.5 6.2, VR PN) as the console shows it to a reader.

A PN value holds up to three component groups separated by ``=`` (alphabetic, ideographic, phonetic), each of up
to five components separated by ``^`` (family, given, middle, prefix, suffix). The console writes the components
of a group separated by single spaces, in their order, and the groups after the first that has a name in
parentheses: ``Doe^John^^Dr=ドウ^ジョン`` reads ``Doe John Dr (ドウ ジョン)``. The value itself is kept as received
(the audit, the SR and the HL7 draft carry it); this is only how a page writes it (HTML escaping is the template's).
"""

from __future__ import annotations

from typing import Final

__all__ = ["NO_NAME", "person_name"]

NO_NAME: Final = "(no name)"


def person_name(value: object) -> str:
    """``value`` (a PN as stored, or None) written for a reader; :data:`NO_NAME` when it names nobody."""
    text = str(value) if value is not None else ""
    groups = [" ".join(part.strip() for part in group.split("^") if part.strip()) for group in text.split("=")]
    named = [group for group in groups if group]
    if not named:
        return NO_NAME
    first, *others = named
    return f"{first} ({' · '.join(others)})" if others else first
