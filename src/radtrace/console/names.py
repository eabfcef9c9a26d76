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

A name is drawn in its own script's direction, isolated from the text around it (``dir="auto"`` on the element that
holds it, by the templates), so a Persian or Hebrew name reads right to left and nothing in it reorders the ID or
the columns beside it. Characters that have no place in a name are written as visible escapes, as in a patient ID
(console/identifiers.py: ``⟨U+202E⟩``, red, named in its title) by :func:`shown_name` and :func:`shown_name_text`:
the bidirectional embeddings, overrides and isolates (U+202A-202E, U+2066-2069), which would draw
``DOE^<RLO>NAVI<PDF>`` as "DOE, IVAN", another patient's name, and every other control, format, separator,
private-use, surrogate or unassigned character. Kept as they are, because names are spelt with them: the zero-width
non-joiner and joiner (U+200C, U+200D: the Persian family name Ali<ZWNJ>zadeh, Indic conjuncts), the left-to-right,
right-to-left and Arabic letter marks (U+200E, U+200F, U+061C: typed in right-to-left text to place punctuation
and initials; a mark is a letter without a glyph, it moves neutrals such as a comma but reverses no letter, and the
name's isolation keeps its effect inside the name), and the Mongolian vowel separator (U+180E). A replacement
character (U+FFFD, a byte the charset could not decode) is visible and shown as it is.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from markupsafe import Markup, escape

from radtrace.console.identifiers import INVISIBLE_CATEGORIES, control_html, control_text

__all__ = ["KEPT_IN_NAMES", "NO_FAMILY_NAME", "NO_NAME", "person_name", "shown_name", "shown_name_text"]

#: Invisible characters a name is spelt with, shown as they are (see the module); every other character of
#: :data:`~radtrace.console.identifiers.INVISIBLE_CATEGORIES` is written as its escape.
KEPT_IN_NAMES: Final = frozenset({"\u200c", "\u200d", "\u200e", "\u200f", "\u061c", "\u180e"})

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


def _escaped(character: str) -> bool:
    """Whether ``character`` is written as its escape in a name."""
    return character not in KEPT_IN_NAMES and unicodedata.category(character) in INVISIBLE_CATEGORIES


def shown_name_text(value: object) -> str:
    """``value`` written by :func:`person_name`, each character with no place in a name as its escape: for an
    attribute (a row's ``data-announce``) or a title, where no markup can go."""
    return "".join(control_text(character) if _escaped(character) else character for character in person_name(value))


def shown_name(value: object) -> Markup:
    """``value`` written by :func:`person_name` as HTML, each character with no place in a name as a marked escape
    (``<span class="control">``); the element the template puts it in isolates it (``dir="auto"``)."""
    written = person_name(value)
    return Markup("".join(control_html(c) if _escaped(c) else str(escape(c)) for c in written))  # noqa: S704 (escaped)
