"""What any event becomes when it is recorded: every value storable on SQLite and PostgreSQL, hashable, and bounded.

An audit log that cannot record an event about hostile input loses exactly the events QA needs, so recording is
total: whatever text a peer, the model or a user sent (a filename decoded with ``surrogateescape``, NUL, controls,
10 MB), and whatever a caller put in a payload, the event is stored, saying what was there:

- a lone surrogate (not encodable in UTF-8, so neither hashable nor storable) is written as its visible escape,
  ``\\udcff`` (Python's ``backslashreplace``), never dropped;
- NUL, which PostgreSQL refuses in text, is written as ``\\x00`` in a column; in the payload JSON already escapes it
  (``\\u0000``, stored as six characters), as it does every other C0 control;
- a text longer than :data:`MAX_TEXT_CHARS` keeps its first characters and ends with a mark saying how long it was
  (``…[cut: 10485760 chars]``); a column keeps at most its own width (``actor_ae`` 16, ``patient_id`` 64, …), marked
  the same way where the mark fits;
- in the payload: NaN and ±infinity become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; bytes their
  ``repr`` (``"b'\\xff'"``); a key that is not text the text JSON gives it (``1`` → ``"1"``) or its ``repr``, a
  second key reading the same marked with its type; any other object its ``repr``; nesting past
  :data:`MAX_DEPTH` levels, a container past :data:`MAX_ITEMS` entries, or text past :data:`MAX_PAYLOAD_CHARS` in
  all is cut with a mark. A payload that was already plain, bounded JSON is recorded exactly as before (its
  canonical JSON, and so its hash, are unchanged).

Verification hashes the stored text as stored, so rows recorded before this are checked as they always were.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from radtrace.audit.events import canonical_json

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "MAX_PAYLOAD_CHARS", "MAX_TEXT_CHARS", "column_text", "payload_json"]

#: The most characters one text value keeps (a model's full raw output at the largest generation budget fits).
MAX_TEXT_CHARS: Final = 256 * 1024
#: The most characters of text one payload keeps, all values and keys together.
MAX_PAYLOAD_CHARS: Final = 1024 * 1024
#: The deepest nesting of lists and objects a payload keeps.
MAX_DEPTH: Final = 32
#: The most entries one list or object keeps.
MAX_ITEMS: Final = 10_000
#: The key under which an object says how many of its entries were cut.
CUT_KEY: Final = "…cut"


def _cut_mark(length: int) -> str:
    return f"…[cut: {length} chars]"


def _encodable(text: str) -> str:
    """``text`` with each lone surrogate written as its visible escape (``\\udcff``)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _bounded(text: str, limit: int, original: int | None = None) -> str:
    """``text`` made encodable and at most ``limit`` characters, ending with a mark when it was cut that says how
    long the ``original`` text was (by default ``text``'s length)."""
    original = len(text) if original is None else original
    cut = len(text) > limit
    if cut:
        text = text[:limit]  # escaping only lengthens: cut first, so a 10 MB value is not escaped whole
    text = _encodable(text)
    if not cut and len(text) <= limit:
        return text
    mark = _cut_mark(original)
    if len(mark) >= limit:
        return text[:limit]
    return text[: limit - len(mark)] + mark


def column_text(value: object, width: int | None) -> str | None:
    """A column's value as stored: encodable, no NUL (PostgreSQL refuses it), at most ``width`` characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    original = len(text)
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return _bounded(text, min(width, MAX_TEXT_CHARS) if width is not None else MAX_TEXT_CHARS, original)


def payload_json(payload: object) -> str:
    """The payload's canonical JSON as recorded (see the module's docstring); a non-object is kept under ``value``."""
    fitter = _Fitter()
    fitted = fitter.fit(payload, 0)
    if not fitter.changed and isinstance(payload, Mapping):
        try:  # plain, bounded JSON: exactly as recorded before (JSON orders keys 1 and false its own way)
            return canonical_json(dict(payload))
        except (ValueError, RecursionError):
            pass
    return canonical_json(fitted if isinstance(fitted, dict) else {"value": fitted})


class _Fitter:
    """One payload's walk: what is left of its text budget, and the containers on the current path."""

    def __init__(self) -> None:
        self.left = MAX_PAYLOAD_CHARS
        self.path: set[int] = set()
        #: Whether anything was escaped, cut or written as text (if not, the payload is recorded as it is).
        self.changed = False

    def text(self, value: str) -> str:
        limit = max(min(MAX_TEXT_CHARS, self.left), len(_cut_mark(len(value))))
        fitted = _bounded(value, limit)
        self.changed = self.changed or fitted is not value
        self.left -= len(fitted) + 2
        return fitted

    def stand_in(self, shown: str) -> str:
        """``shown`` recorded in place of a value JSON cannot hold as it is."""
        self.changed = True
        return self.text(shown)

    def fit(self, value: object, depth: int) -> Any:
        if value is None or isinstance(value, bool):
            self.left -= 5
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, int):
            try:
                self.left -= len(int.__repr__(value))
            except ValueError:  # more digits than Python converts
                return self.stand_in(f"<integer of {value.bit_length()} bits>")
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                self.left -= 24
                return value
            return self.stand_in("NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity")
        if isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value[: (MAX_TEXT_CHARS - 64) // 4])  # repr: at most 4 characters a byte
            shown = repr(data) + ("" if len(data) == len(value) else f"…[cut: {len(value)} bytes]")
            return self.stand_in(shown)
        if isinstance(value, Mapping | list | tuple):
            if depth >= MAX_DEPTH:
                return self.stand_in(f"…[cut: nested deeper than {MAX_DEPTH} levels]")
            if id(value) in self.path:
                return self.stand_in("…[cut: contains itself]")
            self.path.add(id(value))
            try:
                return self._mapping(value, depth) if isinstance(value, Mapping) else self._list(value, depth)
            finally:
                self.path.discard(id(value))
        return self.stand_in(_repr(value))

    def _list(self, value: list[Any] | tuple[Any, ...], depth: int) -> list[Any]:
        fitted: list[Any] = []
        for index, item in enumerate(value):
            if index >= MAX_ITEMS or self.left <= 0:
                fitted.append(self.stand_in(f"…[cut: {len(value) - index} more entries]"))
                break
            fitted.append(self.fit(item, depth + 1))
        return fitted

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        fitted: dict[str, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_ITEMS or self.left <= 0:
                fitted[CUT_KEY] = self.stand_in(f"{len(value) - index} more entries")
                break
            name = self._key(key, fitted)
            fitted[name] = self.fit(item, depth + 1)
        return fitted

    def _key(self, key: object, taken: Mapping[str, Any]) -> str:
        if isinstance(key, str):
            name = self.text(key)
        elif key is None or isinstance(key, bool):
            name = "null" if key is None else "true" if key else "false"
        elif isinstance(key, int | float):
            fitted = self.fit(key, 0)
            name = fitted if isinstance(fitted, str) else json.dumps(fitted)  # as JSON writes the key
        else:
            name = self.stand_in(_repr(key))
        if name not in taken:
            return name
        typed = self.stand_in(f"{name} ({type(key).__name__} key)")
        candidate, count = typed, 1
        while candidate in taken:
            count += 1
            candidate = f"{typed} #{count}"
        return candidate


def _repr(value: object) -> str:
    try:
        shown = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return shown if isinstance(shown, str) else f"<{type(value).__name__}>"
