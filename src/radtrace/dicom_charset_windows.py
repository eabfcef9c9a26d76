"""Whether text declared (or assumed) in an ISO 8859 set, or TIS 620, is in the Windows code page that extends it.

Modalities and RIS bridges running on Windows write the Windows code page that extends the ISO set they declare:
Windows-1252 under ISO_IR 100, 1250 under ISO_IR 101, 1251 under ISO_IR 144, 1253 under ISO_IR 126, 1254 under
ISO_IR 148, 1255 under ISO_IR 138, 1256 under ISO_IR 127, 874 under ISO_IR 166 and 1257 (Baltic) under ISO_IR 110,
the nearest DICOM set (:data:`WINDOWS_PAGES`). :func:`windows_reading` says, for the values of a header that are not
UTF-8 (:mod:`radtrace.dicom_charset` decides UTF-8 first), whether they are read in the page
(``windows-code-page``), read as declared but flagged because both readings could be words (``windows-doubtful``),
or read as declared (None). Every rule first needs every value to decode in the page and its reading past ASCII to
hold only letters and marks of the page's script, the script's own punctuation and a name's curly quotes and dashes
(and Persian's zero-width non-joiner under Windows-1256). Then the text is

* **read in the page** where some byte is one the ISO set never writes: 80-9F, its C1 controls, or a byte it leaves
  undefined (ISO 8859-6's DB-DF and F3-FF, which are Windows-1256's ``غ ـ ف ق ك``; ISO 8859-8's BF-DE,
  Windows-1255's points, geresh and gershayim). No text written in the ISO set holds such a byte;
* **read in the page** where the page's reading could be words and names and the ISO reading could not
  (:func:`_words`: every run of letters upper, lower or title case, no symbol next to a letter; for Cyrillic the
  letters of each run of one language's alphabet, no soft sign first or after a vowel). Windows-1251 puts the
  Russian alphabet at C0-FF, ISO 8859-5 at B0-EF: ``ПЕТРОВ`` read as ISO 8859-5 is ``ЯХваЮТ``, ``Тульчин`` is
  ``вѓыќїшэ``; Slovak ``ĽUBICA`` in Windows-1250 is Latin-2 ``źUBICA``;
* **read as declared, flagged** ``windows-doubtful`` where both readings could be words, for Windows-1251 and 1253
  (``ИВАНОВ`` is ``ШТРЭЮТ`` in ISO 8859-5; Greek ``Ά``, A2, is ISO 8859-7's curly apostrophe): nothing in the bytes
  tells them apart. For Windows-1250 and 1257 such a flag would fall on too much of their ISO sets' own text (8 % and
  54 % of the measured encodings): those are read as declared, unflagged.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from typing import Final

from pydicom.charset import ESC, python_encoding

__all__ = ["WINDOWS_PAGES", "windows_reading"]

#: The Windows code page that a Windows writer puts under each ISO term (the term declared, corrected or assumed).
WINDOWS_PAGES: Final = {
    f"{prefix} {number}": page
    for prefix in ("ISO_IR", "ISO 2022 IR")
    for number, page in (
        (100, "cp1252"),
        (101, "cp1250"),
        (144, "cp1251"),
        (126, "cp1253"),
        (148, "cp1254"),
        (138, "cp1255"),
        (127, "cp1256"),
        (166, "cp874"),
        (110, "cp1257"),
    )
}
# The script (the start of its characters' Unicode names) of each page's letters past ASCII
_SCRIPTS: Final = {
    "cp1252": "LATIN",
    "cp1250": "LATIN",
    "cp1254": "LATIN",
    "cp1251": "CYRILLIC",
    "cp1253": "GREEK",
    "cp1255": "HEBREW",
    "cp1256": "ARABIC",
    "cp874": "THAI",
    "cp1257": "LATIN",
}
# The only characters past ASCII other than the script's that a Windows page's reading may hold: a name's
# apostrophes, quotes and dashes (80-9F in every page), not its symbols (bullet, trade mark, per mille ...)
_NAME_PUNCTUATION: Final = frozenset("\u2019\u2018\u201c\u201d\u201e\u2013\u2014")
# Persian's zero-width non-joiner and joiner (Windows-1256 9D, 9E), inside words such as ``می‌خواهم``
_PAGE_EXTRAS: Final = {"cp1256": frozenset("\u200c\u200d")}
# The pages whose text the ISO set reads as other words is flagged (where each reading could be words)
# (Windows-1250 and 1257 are not: their ISO sets' own text reads as Latin words in them too often, 8 % and 54 % of
# the measured encodings, for a flag to mean anything)
_DOUBTFUL_PAGES: Final = frozenset({"cp1251", "cp1253"})
_LETTER_RUN: Final = re.compile(r"[^\W\d_]+")
_ASCII_LETTER: Final = re.compile(r"[A-Za-z]")
# A character past ASCII that is no letter, digit or apostrophe, next to a letter (``Яхђ№ют``, ``Тшђюьш№``)
_NEXT_TO_LETTER: Final = re.compile(r"[^\W\d_][^\x00-\x7f\w\u2019]|[^\x00-\x7f\w\u2019][^\W\d_]")
_SIGN_AFTER_VOWEL: Final = re.compile(r"[аеёиоуыэюяіїєўьъ][ьъ]")
_BASIC: Final = frozenset("абвгдежзийклмнопрстуфхцчшщъыьэюя")
# The lower-case letters of each language written in ISO 8859-5 and Windows-1251: Russian, Ukrainian, Belarusian,
# Bulgarian, Serbian, Macedonian
_ALPHABETS: Final = tuple(
    frozenset(letters)
    for letters in (
        _BASIC | {"ё"},
        (_BASIC - set("ёъыэ")) | set("єіїґ"),
        (_BASIC - set("ищъ")) | set("ёіў"),
        _BASIC - set("ёыэ"),
        set("абвгдђежзијклљмнњопрстћуфхцчџш"),
        set("абвгдѓежзѕијклљмнњопрстќуфхцчџш"),
    )
)


@cache
def _never_written(codec: str) -> frozenset[int]:
    """The bytes no text in ``codec`` (an ISO set) holds: 80-9F (C1 controls) and the bytes it leaves undefined."""
    found = set(range(0x80, 0xA0))
    for byte in range(0xA0, 0x100):
        try:
            bytes([byte]).decode(codec)
        except UnicodeDecodeError:
            found.add(byte)
    return frozenset(found)


def windows_reading(values: list[bytes], term: str) -> str | None:
    """``windows-code-page`` where ``values`` (text to be read in ``term``, not UTF-8) are in the term's
    :data:`WINDOWS_PAGES` page, ``windows-doubtful`` where they may be (Windows-1251 whose ISO 8859-5 reading is
    words too), else None (the module's docstring gives the rules)."""
    page = WINDOWS_PAGES.get(term)
    if page is None or all(value.isascii() for value in values):
        return None
    never = _never_written(python_encoding[term])
    control = any(byte in never for value in values for byte in value)
    script = _SCRIPTS[page]
    allowed = _NAME_PUNCTUATION | _PAGE_EXTRAS.get(page, frozenset())
    texts = []
    for value in values:
        if ESC in value:
            return None
        try:
            text = value.decode(page)
        except UnicodeDecodeError:  # a byte the page leaves undefined (81 8D 8F 90 9D in 1252 ...)
            return None
        for char in text:
            if char.isascii() or char in allowed:
                continue
            if unicodedata.category(char)[0] not in "LMP" or not unicodedata.name(char, "").startswith(script):
                return None
        texts.append(text)
    if control:
        return "windows-code-page"
    iso = [value.decode(python_encoding[term]) for value in values]
    latin, cyrillic = script == "LATIN", script == "CYRILLIC"
    if iso == texts or not all(_words(text, latin, cyrillic) for text in texts):
        return None
    if not all(_words(text, latin, cyrillic) for text in iso):
        return "windows-code-page"
    return "windows-doubtful" if page in _DOUBTFUL_PAGES else None


def _words(text: str, latin: bool, cyrillic: bool) -> bool:
    """Whether ``text`` could be words and names: every run of letters is upper case, lower case or title case, and
    no character past ASCII other than a letter or an apostrophe stands next to a letter (``Петров`` in
    Windows-1251 read as ISO 8859-5 is ``Яхђ№ют``); unless ``latin``, no run mixes ASCII letters with others
    (ISO 8859-7 ``L'ASCENSION`` with a curly apostrophe, A2, reads as ``LΆASCENSION`` in Windows-1253);
    ``cyrillic``: each run's letters are of one alphabet (:data:`_ALPHABETS`), no run starts with a soft sign and
    none stands after a vowel or a sign (Windows-1251 ``Тульчин`` read as ISO 8859-5 is ``вѓыќїшэ``, ``Зоя`` is
    ``Чюџ``)."""
    if _NEXT_TO_LETTER.search(text):
        return False
    runs = _LETTER_RUN.findall(text)
    if not all(run.isupper() or run.islower() or run.istitle() for run in runs):
        return False
    if not latin and any(not run.isascii() and _ASCII_LETTER.search(run) for run in runs):
        return False
    return not cyrillic or all(map(_cyrillic_word, runs))


def _cyrillic_word(run: str) -> bool:
    lower = run.lower()
    if lower.isascii():
        return True
    if lower[0] == "ь" or _SIGN_AFTER_VOWEL.search(lower):
        return False
    letters = set(lower)
    return any(letters <= alphabet for alphabet in _ALPHABETS)
