"""A DICOM person name (PS3.5 6.2, VR PN) as the console shows it to a reader.

A PN value holds up to three component groups separated by ``=`` (alphabetic, ideographic, phonetic), each of up
to five components separated by ``^`` (family, given, middle, prefix, suffix). A page must never leave the reader
to guess which part is the family name (wrong patient identification), so each group is written as PACS and RIS
worklists write it: the family name, a comma, then the prefix, given and middle names, then a comma and the
suffix: ``Adams^John Robert^Quincy^Rev.^B.A.`` reads ``Adams, Rev. John Robert Quincy, B.A.`` (with no given name
the suffix follows the family name without a comma, ``DOE^^^^Jr`` reads ``DOE Jr``). A group without a
family name says so (``^John`` reads ``(no family name), John``); a group that is only a family name is written
as it is (``DOE JOHN`` sent in the family component alone reads ``DOE JOHN``, no comma: nothing says which part
is the given name). The groups after the first that has a name follow in parentheses, separated by `` · ``:
``Doe^John=ドウ^ジョン`` reads ``Doe, John (ドウ, ジョン)``. The value itself is kept as received (the audit, the SR
and the HL7 draft carry it); this is only how a page writes it (HTML escaping is the template's: the text returned
is plain).
"""

from __future__ import annotations

from typing import Final

__all__ = ["NO_FAMILY_NAME", "NO_NAME", "person_name"]

NO_NAME: Final = "(no name)"
#: What stands in the family name's place when a group names a person without one.
NO_FAMILY_NAME: Final = "(no family name)"


def _group(text: str) -> str:
    """One component group written family first (see the module); empty when it names nobody."""
    parts = [part.strip() for part in text.split("^")]
    family, given, middle, prefix, suffix = (parts + [""] * 5)[:5]
    # more than five components (not valid PN): the extra ones are kept, after the middle name
    forenames = " ".join(part for part in (prefix, given, middle, *parts[5:]) if part)
    if not (family or forenames or suffix):
        return ""
    written = family or NO_FAMILY_NAME
    if forenames:
        written += f", {forenames}"
    if suffix:  # after the family name alone without a comma: ", Jr" would read as a given name
        written += f", {suffix}" if forenames else f" {suffix}"
    return written


def person_name(value: object) -> str:
    """``value`` (a PN as stored, or None) written for a reader; :data:`NO_NAME` when it names nobody."""
    text = str(value) if value is not None else ""
    named = [group for group in map(_group, text.split("=")) if group]
    if not named:
        return NO_NAME
    first, *others = named
    return f"{first} ({' · '.join(others)})" if others else first
