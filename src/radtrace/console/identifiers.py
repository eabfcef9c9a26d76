"""Patient IDs and accession numbers as the console shows them: every character a reader can see, in stored order.

An identifier is read character by character (matched against the RIS, a wristband, a requisition). A value that
carries Unicode's bidirectional controls (a right-to-left override U+202E, a left-to-right override U+202D, a
pop U+202C, embeddings, isolates, marks) or other invisible characters showed reordered or with characters no one
could see: ``RT12<U+202E>345`` read ``RT12543`` in the worklist's isolated cell, a different patient's ID. Such a
character is shown instead as a visible escape, ``⟨U+202E⟩`` (marked ``.control``, named in its ``title``), and the
whole identifier is laid out left to right in stored order whatever its script (``<bdo dir="ltr">``, isolated from
the text around it). The value itself is kept as received; this is only how a page writes it.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from markupsafe import Markup, escape

__all__ = [
    "INVISIBLE_CATEGORIES",
    "control_html",
    "control_text",
    "shown_id",
    "shown_id_text",
    "shown_lines",
    "shown_text",
]

#: Unicode general categories shown as escapes: controls, format characters (the bidirectional controls, zero-width
#: characters, the soft hyphen), line and paragraph separators, and unassigned or private-use code points.
INVISIBLE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cn", "Co", "Cs"})


def control_text(character: str) -> str:
    """The visible escape of one character, ``⟨U+202E⟩``: what a page writes where no markup can go."""
    return f"⟨U+{ord(character):04X}⟩"


def control_html(character: str) -> str:
    """The visible escape of one character as HTML: marked ``.control`` (red) and named in its ``title``, so it does
    not pass for part of the value (also used for patient names, console/names.py)."""
    name = unicodedata.name(character, "unnamed character").lower()
    return f'<span class="control" title="invisible character: {escape(name)}">{control_text(character)}</span>'


def _escape(character: str) -> str | None:
    """The visible escape of an invisible character (``⟨U+202E⟩``), or None for one a reader sees."""
    if unicodedata.category(character) in INVISIBLE_CATEGORIES:
        return control_text(character)
    return None


def shown_id_text(value: object) -> str:
    """``value`` (an identifier, or None) as plain text with each invisible character written as its escape: for a
    page title or an attribute (``data-announce``), where no markup can go."""
    text = "" if value is None else str(value)
    return "".join(_escape(character) or character for character in text)


def shown_id(value: object, missing: str = "") -> Markup:
    """``value`` as HTML: its characters left to right in stored order (``<bdo dir="ltr" class="id">``), each
    invisible one an escape in ``<span class="control">``; ``missing`` (escaped, not wrapped) when it is empty."""
    text = "" if value is None else str(value)
    if not text:
        return escape(missing)
    parts = []
    for character in text:
        parts.append(str(escape(character)) if _escape(character) is None else control_html(character))
    return Markup(f'<bdo dir="ltr" class="id">{"".join(parts)}</bdo>')  # noqa: S704 (every part escaped above)


def shown_text(value: object) -> Markup:
    """Free text from a peer or an exception (a failure or skip reason) as HTML: each invisible character an escape
    in ``<span class="control">`` (a CR or LF too: the text stays on its one row), isolated from the words around it
    (``<bdi class="free-text">``) but, unlike :func:`shown_id`, in its own script's direction. Before, a reason
    holding a right-to-left override (U+202E) showed the rest of its cell reversed on the QA dashboard."""
    text = "" if value is None else str(value)
    parts = [str(escape(character)) if _escape(character) is None else control_html(character) for character in text]
    return Markup(f'<bdi class="free-text">{"".join(parts)}</bdi>')  # noqa: S704 (every part escaped above)


def shown_lines(value: object) -> Markup:
    """Long free text (a model's impression or reasoning, a radiologist's corrected impression) as
    :func:`shown_text` writes it, except that its line breaks stay line breaks (LF, CR LF or a lone CR, each a
    ``<br>``): every other invisible character, bidirectional controls and zero-width ones included, is a visible
    escape, inside one isolated ``<bdi class="free-text">``."""
    text = "" if value is None else str(value)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    shown = [
        "".join(str(escape(character)) if _escape(character) is None else control_html(character) for character in line)
        for line in lines
    ]
    return Markup(f'<bdi class="free-text">{"<br>".join(shown)}</bdi>')  # noqa: S704 (every part escaped above)
