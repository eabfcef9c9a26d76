"""Whether text read in a single-byte set is in the code page of another script: Arabic Windows-1256 or DOS 720,
Cyrillic 1251 or DOS 866, Greek 1253 or DOS 737, Hebrew 1255 or DOS 862, Thai 874 (:data:`OTHER_SCRIPT_PAGES`).

Senders write one under no (0008,0005) or a hard-coded ``ISO_IR 100`` (or one script's page under another's ISO
term). :mod:`radtrace.dicom_charset` asks :func:`other_script`, for text that is not UTF-8 nor in the set's own
Windows page, which page (if any) reads it as words where the set's reading is none, and whether to flag it; its
docstring gives the rules and the measurements (bench/charset_other_scripts.py).

Where pages of several scripts read words, each script's reading is now weighed by the letter bigrams of its
languages' measured words (:func:`_likelihood`, the table in ``dicom_charset_ngrams.json``): the likeliest by more
than 10 bits over every other script's is read, flagged doubtful (``other-script-doubtful``; a closer call is read
as declared, flagged, as before). DOS 866 ``Иванов`` is DOS 737 ``Ιλιφχλ``, so most DOS 866 text was read as Latin-1
C1 controls and symbols, flagged. A run of three capitals without a vowel (``ГКБ``, a city hospital) may be an
abbreviation now (a reading that needs one is taken where no other script's page reads words, or where it is the
likeliest), and Cyrillic's ``№`` a sign of its text, so ``ГКБ^Иванов`` in Windows-1251 is weighed against
Windows-1253 ``ΓΚΑ^Θβΰνξβ`` (it was read as Greek, flagged) and read as Cyrillic. Measured
(bench/charset_other_scripts.py, read as written under ``ISO_IR 100``, aebc7a1 -> now): Windows-1256 3,717 -> 4,863
of 6,132, DOS 720 2,340 -> 4,018 of 5,380, Windows-1251 26,776 -> 67,407 of 73,875, DOS 866 18,572 -> 45,375 of
55,769, Windows-1253 8,350 -> 19,321 of 19,940, DOS 737 16,954 -> 18,941 of 19,913, Windows-1255 95 -> 2,739 of
4,003, DOS 862 438 -> 2,736 of 4,003, Windows-874 2,396 -> 2,649 of 4,185 (undeclared alike); wrong and unflagged
unchanged (214), genuine Latin-1 read otherwise 0, flagged beyond assumed 2. Held out (a table of half the words,
the other half counted), of the words read in another script's page by the weighing none (DOS 862, Windows-874) to
5.6 % (Windows-1256) are read wrong, flagged doubtful like the rest.
"""

from __future__ import annotations

import math
import re
import unicodedata
from functools import cache
from typing import Final

from pydicom.charset import ESC, python_encoding

from radtrace.dicom_charset_windows import _LATIN_LANGUAGES, WINDOWS_PAGES, ngram_file
from radtrace.dicom_charset_windows import _words as _could_be_words

__all__ = [
    "OTHER_SCRIPT_FEWEST_LETTERS",
    "OTHER_SCRIPT_PAGES",
    "other_script",
    "page_or_other_script",
    "tanween_for_yeh",
]

# What a reading past ASCII may not hold: controls, unassigned and private-use code points
_NOT_TEXT: Final = frozenset({"Cc", "Cn", "Co"})
#: The code pages of other scripts that senders write under a wrong or empty (0008,0005), by script: the script's
#: Windows page, its DOS page, its ISO set (a defined term), in that order (:func:`other_script`).
OTHER_SCRIPT_PAGES: Final = (
    ("ARABIC", ("cp1256", "cp720", "ISO_IR 127")),
    ("CYRILLIC", ("cp1251", "cp866", "ISO_IR 144")),
    ("GREEK", ("cp1253", "cp737", "ISO_IR 126")),
    ("HEBREW", ("cp1255", "cp862", "ISO_IR 138")),
    ("THAI", ("cp874",)),  # TIS 620 (ISO_IR 166) reads as Windows-874 wherever it is defined
)
# The script of each single-byte term's letters past ASCII
_TERM_SCRIPTS: Final = {
    f"{prefix} {number}": script
    for prefix in ("ISO_IR", "ISO 2022 IR")
    for number, script in (
        (100, "LATIN"), (101, "LATIN"), (109, "LATIN"), (110, "LATIN"), (148, "LATIN"), (144, "CYRILLIC"),
        (127, "ARABIC"), (126, "GREEK"), (138, "HEBREW"), (166, "THAI"),
    )
}  # fmt: skip
#: The fewest letters past ASCII a reading in another script must hold to be taken for it (``À`` alone in a French
#: description is Windows-1251's Cyrillic A)
OTHER_SCRIPT_FEWEST_LETTERS: Final = 4
# The fewest letters past ASCII a reading in another script must hold for text whose own reading is no word (or
# Latin of two letters past ASCII side by side) to be flagged doubtful, read as declared (``code-page-doubtful``): a
# word too short to be read in that page (Windows-1251 ``АДА`` is Latin-1 ``ÀÄÀ``, ``ви`` is ``âè``); one letter
# is not enough (a lone Latin-1 ordinal ``ª`` is Windows-1251 ``Є``)
_SHORT_WORD_LETTERS: Final = 2
# The terms whose text that rule applies to: Latin-1, which senders hard-code (in Latin-2 and ISO 8859-4 it would flag
# 20 of the measured words, Czech ``Číž``, Vietnamese ``Đó``; in ISO 8859-6 ``بـ``)
_SHORT_WORD_TERMS: Final = frozenset({"ISO_IR 100", "ISO 2022 IR 100"})
# A Cyrillic or Greek run of this many letters without a vowel is no word (abbreviations are shorter)
_VOWELLESS_RUN: Final = 5
# An upper-case run of this many letters or fewer may be an abbreviation without a vowel (Cyrillic ``ГКБ``, a city
# hospital; ``ЦРБ``, a district one): other pages' readings are then weighed against it (:func:`_likeliest`)
_ABBREVIATION_LETTERS: Final = 3
_VOWELS: Final = {
    "CYRILLIC": frozenset("аеёиоуыэюяіїєў"),
    "GREEK": frozenset("αεηιουωάέήίόύώϊϋΐΰ"),
}
_HEBREW_FINALS: Final = frozenset("\u05da\u05dd\u05df\u05e3\u05e5")
_THAI_LEADING_VOWELS: Final = frozenset("\u0e40\u0e41\u0e42\u0e43\u0e44")
_OTHER_PUNCTUATION: Final = frozenset("\u2019\u2018\u201c\u201d\u201e\u2013\u2014\u200c\u200d")
# A script's own sign that its names hold: Cyrillic's numero (``ГКБ №1``, Windows-1251 B9, DOS 866 FC, ISO 8859-5 F0)
_SCRIPT_SIGNS: Final = {"CYRILLIC": frozenset("\u2116")}
_LETTERS: Final = re.compile(r"[^\W\d_]+")
# The letters and marks a reading in a script other than Latin may hold past ASCII (no modifier letters: Greek
# ypogegrammeni is Latin-1's feminine ordinal read in ISO 8859-7)
_SCRIPT_CATEGORIES: Final = frozenset({"Lu", "Ll", "Lt", "Lo", "Mn", "Mc"})
# Spanish and Portuguese ordinal indicators after a letter or digit (``Mª``, ``Nº``, ``1ª``): no letters of a word
_ORDINALS: Final = re.compile("(?<=[A-Za-z0-9])[\u00aa\u00ba]")
_ASCII_LETTERS: Final = re.compile("[A-Za-z]")
# Two characters past ASCII side by side that are no letter nor digit (symbols, no-break spaces): no word's, in none
# of 55,044 measured Latin-1 encodings of words; DOS 866's lower-case letters of A0-AF are Latin-1's symbols
# Where pages of several scripts read words, the bits by which the likeliest script's reading (by the letter bigrams of
# the measured words of its languages, :func:`_likelihood`) must beat every other script's to be read, flagged doubtful
# (DOS 866 ``Иванов`` is DOS 737 ``Ιλιφχλ``)
_LIKELIER_SCRIPT_BITS: Final = 10.0
# What a character past ASCII that is no letter stands for in a reading's bigrams: never counted
_NO_LETTER: Final = "\x00"
_NOT_LETTER: Final = re.compile(r"[^\w]|[\d_]")
_SYMBOL_PAIR: Final = re.compile(r"[^\x00-\x7f\w]{2}")
# ... of which neither is a no-break space (French writes one inside guillemets, ``«\xa0THORAX\xa0»``)
_SYMBOL_PAIR_NO_SPACE: Final = re.compile(r"[^\x00-\x7f\w\xa0]{2}")
# Three letters past ASCII side by side inside a run that also holds ASCII letters (Windows-1251 ``МАКДОНАЛД`` ending in
# a Latin ``C`` is Latin-1 ``ÌÀÊÄÎÍÀËÄC``)
_ACCENTED_THREE: Final = re.compile(r"[^\W\d_A-Za-z]{3}")


def other_script(values: list[bytes], term: str, *, own_checked: bool = False) -> tuple[str, str] | None:
    """Where ``values`` (text that is not UTF-8, nor in ``term``'s Windows page) read in ``term`` (a single-byte set
    declared, corrected or assumed) are controls, undefined bytes or no words of its script, the code page of
    another script (:data:`OTHER_SCRIPT_PAGES`) that reads them as words of its script: ``because``
    ``other-script`` (flagged assumed); ``other-script-doubtful`` where another page of that script reads other
    words; ``code-page-doubtful`` (read as ``term``, flagged doubtful) where ``term`` reads controls or undefined
    bytes and no page reads words, or pages of several scripts do, or ``term``'s Windows page reads letters of its
    script (and symbols) there. None: ``term``'s reading is words (``own_checked``: it is known not to be), or no
    page reads words and ``term``'s reading holds no control."""
    script = _TERM_SCRIPTS.get(term)
    if script is None or all(value.isascii() for value in values):
        return None
    own = _reading(values, term)
    if own is not None and not own_checked and _own_words(own, script):
        if term in _SHORT_WORD_TERMS and _accented_pair(own) and _page_readings(values, own, term):
            return term, "code-page-doubtful"  # a short word of another script, maybe
        if term in _SHORT_WORD_TERMS and _letterless(own) and _page_readings(values, own, term, fewest=1):
            return term, "code-page-doubtful"  # a value of symbols alone: a one-letter word of another script, maybe
        return None
    candidates = _page_readings(values, own, term)
    found = _words_found(candidates)
    # own no words (known here unless own_checked), and a page reads words too short to be read in it
    short = own is not None and not own_checked and term in _SHORT_WORD_TERMS
    # ... or reads none, where Latin-1 reads a run of three letters past ASCII (Windows-1251 ``ЦМРБанк``, ``ЮниКредит``,
    # whose Cyrillic readings have no word's shape: no vowel, case within a run): in no measured Latin-1 word
    # ... or three letters past ASCII side by side inside a run with ASCII letters (a Cyrillic word with a Latin
    # homoglyph ``C``), or two symbols side by side (no no-break space): in no measured Latin-1 word either
    short = short and (bool(candidates) or _accented_run(own or [], 3) or _unworded(own or []))
    if len(found) == 1 and script not in found and script != "LATIN" and _own_letters(values, term, script):
        found[script] = []  # its own Windows page reads its words, with a symbol or so: two scripts' readings
    # readings of scripts whose words they are only with a run of capitals without a vowel (``ГКБ^Иванов``):
    # taken where no other script's page reads words, or where likeliest (else the others decide, as before)
    lenient = _words_found(_page_readings(values, own, term, abbreviations=True))
    if any(other not in found for other in lenient) and all(found.values()):
        if not found:
            found = lenient
        elif (likeliest := _likeliest(lenient)) is not None and likeliest[0] not in found:
            return likeliest[1], "other-script-doubtful"  # pages of other scripts read words too
    if len(found) == 1:
        [readings] = found.values()
        page, texts = readings[0]
        doubtful = any(texts != others for _, others in readings[1:])
        return page, "other-script-doubtful" if doubtful else "other-script"
    if len(found) > 1 and all(found.values()) and (likeliest := _likeliest(found)) is not None:
        return likeliest[1], "other-script-doubtful"  # pages of other scripts read words too
    if found or own is None or short:
        return term, "code-page-doubtful"
    return None


def _words_found(candidates: list[tuple[str, str, list[str], int]]) -> dict[str, list[tuple[str, list[str]]]]:
    """The pages of ``candidates`` (:func:`_page_readings`) whose readings hold at least
    :data:`OTHER_SCRIPT_FEWEST_LETTERS` letters, by script: (page, reading)."""
    found: dict[str, list[tuple[str, list[str]]]] = {}
    for other, page, texts, letters in candidates:
        if letters >= OTHER_SCRIPT_FEWEST_LETTERS:
            found.setdefault(other, []).append((page, texts))
    return found


def _page_readings(
    values: list[bytes],
    own: list[str] | None,
    term: str,
    *,
    fewest: int = _SHORT_WORD_LETTERS,
    abbreviations: bool = False,
) -> list[tuple[str, str, list[str], int]]:
    """Each page of :data:`OTHER_SCRIPT_PAGES` (but ``term``'s own set) that reads ``values`` as other text than
    ``own`` (``term``'s reading), words of its script of at least ``fewest`` letters past ASCII (``abbreviations``:
    with runs of capitals without a vowel, :func:`_script_words`): (script, page, its reading, how many such
    letters)."""
    found = []
    codec = python_encoding[term]
    for script, pages in OTHER_SCRIPT_PAGES:
        for page in pages:
            if python_encoding.get(page, page) == codec:
                continue
            texts = _reading(values, page)
            if texts is not None and texts != own and _script_words(texts, script, fewest, abbreviations=abbreviations):
                letters = sum(not char.isascii() and char.isalpha() for text in texts for char in text)
                found.append((script, page, texts, letters))
    return found


def _accented_pair(texts: list[str]) -> bool:
    """Whether a run of letters of ``texts`` (Latin) is two letters, both past ASCII (``âè``: Windows-1251 ``ви``);
    of 55,044 measured Latin-1 encodings of words, only Turkish ``üç`` (which Latin-5 writes)."""
    return any(len(run) == 2 and not _ASCII_LETTERS.search(run) for text in texts for run in _LETTERS.findall(text))


def _likeliest(found: dict[str, list[tuple[str, list[str]]]]) -> tuple[str, str] | None:
    """The script and page whose reading is the likeliest words of its script by more than
    :data:`_LIKELIER_SCRIPT_BITS` over every reading of the other scripts' pages in ``found`` (script: its pages and
    their readings of the same bytes), else None."""
    best: dict[str, tuple[float, str, str]] = {}
    for script, readings in found.items():
        best[script] = max((_likelihood(script, texts), script, page) for page, texts in readings)
    (first, script, page), (second, _, _) = sorted(best.values(), reverse=True)[:2]
    return (script, page) if first - second > _LIKELIER_SCRIPT_BITS else None


@cache
def _script_bits(script: str) -> tuple[dict[str, float], float]:
    """log2 of each letter bigram's share of ``script``'s measured words' bigrams (the count plus 1/2; shipped in
    ``dicom_charset_ngrams.json``: bench/charset_other_scripts.py ``--write-table``), and that of an unseen one."""
    table = ngram_file()["scripts"][script]
    total = float(table["total"])
    return {gram: math.log2((count + 0.5) / total) for gram, count in table["counts"].items()}, math.log2(0.5 / total)


def _likelihood(script: str, texts: list[str]) -> float:
    """log2 of how likely ``texts`` are words of ``script``: the sum over their letter bigrams (lower case, ``_`` a
    word's edge) that hold a character past ASCII of :func:`_script_bits`; a character past ASCII that is no letter
    is a bigram never seen, a curly apostrophe included (ISO 8859-7 reads Windows-1253 ``Ά`` as one), the script's
    own signs a word's edge (``№``). Readings of the same bytes in pages of several scripts hold as many such
    bigrams, at the same places."""
    bits, unseen = _script_bits(script)
    signs = _SCRIPT_SIGNS.get(script, frozenset())
    total = 0.0
    for text in texts:
        plain = "".join(
            " " if char in signs else _NO_LETTER if not char.isascii() and not char.isalpha() else char
            for char in text.lower()
        )
        edged = "_" + _NOT_LETTER.sub(lambda found: found[0] if found[0] == _NO_LETTER else "_", plain) + "_"
        for index in range(len(edged) - 1):
            gram = edged[index : index + 2]
            if not gram.isascii() or _NO_LETTER in gram:
                total += bits.get(gram, unseen)
    return total


def _letterless(texts: list[str]) -> bool:
    """Whether some value of ``texts`` (Latin) holds a character past ASCII and no letter nor digit at all: symbols,
    no-break spaces, a soft hyphen alone (DOS 720 ``س`` is Latin-1 ``«``, DOS 866 ``в`` is ``¢``). No name nor word
    is that; where a page reads a letter of its script there, it may be a one-letter word of that script."""
    return any(not text.isascii() and not any(char.isalnum() for char in text) for text in texts)


def _unworded(texts: list[str]) -> bool:
    """Whether ``texts`` (Latin, ordinal indicators after a letter or digit left out) hold three letters past ASCII
    side by side (``ÌÀÊÄÎÍÀËÄC``) or two symbols side by side, neither a no-break space (DOS 866 ``северный`` with
    a Latin ``C`` first is ``C¥¢¥à\xadë©``)."""
    plain = [_ORDINALS.sub(" ", text) for text in texts]
    return any(_ACCENTED_THREE.search(text) or _SYMBOL_PAIR_NO_SPACE.search(text) for text in plain)


def _accented_run(texts: list[str], fewest: int) -> bool:
    """Whether a run of letters of ``texts`` (Latin, ordinal indicators after a letter or digit left out) is at
    least ``fewest`` letters, none of them ASCII."""
    runs = (run for text in texts for run in _LETTERS.findall(_ORDINALS.sub(" ", text)))
    return any(len(run) >= fewest and not _ASCII_LETTERS.search(run) for run in runs)


def page_or_other_script(values: list[bytes], page: str, term: str) -> str | None:
    """Where ``page`` (``term``'s Windows page, which reads ``values``) is Cyrillic or Greek and its reading holds a
    run of :data:`_VOWELLESS_RUN` letters without a vowel (Windows-1253 Greek declared ISO_IR 144 is read by
    Windows-1251 as Cyrillic letters without one), the other script's page :func:`other_script` finds, to be read
    flagged doubtful (``other-script-doubtful``); None: ``page`` stands."""
    script = _TERM_SCRIPTS[term]
    texts = _reading(values, page)
    vowels = _VOWELS.get(script)
    runs = (run for text in texts or () for run in _LETTERS.findall(text.lower()) if len(run) >= _VOWELLESS_RUN)
    if vowels is None or not any(vowels.isdisjoint(run) for run in runs):
        return None
    other = other_script(values, term, own_checked=True)
    if other is None or other[0] == term:
        return None
    return other[0]  # the page's reading has a word's shape, if not a name's: either reading may be right


def tanween_for_yeh(values: list[bytes], term: str) -> bool:
    """Whether ISO 8859-6 text (``term`` ISO_IR 127) reads a tanween where Windows-1256 reads yeh or alef maksura (EC,
    ED) and the page's reading is Arabic words: names are written without vowel marks, and ``ي``/``ى`` end most
    (``أخرى`` is ISO 8859-6 ``أخرٌ``), so both readings are flagged doubtful, read as declared."""
    if WINDOWS_PAGES.get(term) != "cp1256" or not any(byte in (0xEC, 0xED) for value in values for byte in value):
        return False
    texts = _reading(values, "cp1256")
    return texts is not None and _script_words(texts, "ARABIC", 1, vowel_run=0)


def _reading(values: list[bytes], codec: str) -> list[str] | None:
    """``values`` read in ``codec`` (a defined term or a Python codec), None where a byte is undefined there, read as
    a control past ASCII (80-9F in the ISO sets) or an ESC stands in them."""
    texts = []
    for value in values:
        if ESC in value:
            return None
        try:
            text = value.decode(python_encoding.get(codec, codec))
        except UnicodeDecodeError:
            return None
        if any(ord(char) >= 0x80 and unicodedata.category(char) in _NOT_TEXT for char in text):
            return None
        texts.append(text)
    return texts


def _own_letters(values: list[bytes], term: str, script: str) -> bool:
    """Whether ``term``'s Windows page reads ``values`` as words of ``script`` once its symbols are left out
    (Windows-1255 Hebrew with a trade mark sign)."""
    texts = _reading(values, WINDOWS_PAGES[term])
    if texts is None:
        return False
    plain = ["".join(" " if unicodedata.category(char)[0] == "S" else char for char in text) for text in texts]
    return _script_words(plain, script, 1)


def _own_words(texts: list[str], script: str) -> bool:
    """Whether ``texts``, read in a set of ``script``, could be its words (as :func:`_script_words`; Latin: each
    run's letters past ASCII one language's)."""
    if script == "LATIN":  # and no run of three letters or more is all past ASCII (Hebrew ``כהן`` is ``ëäï``)
        texts = [_ORDINALS.sub(" ", text) for text in texts]
        runs = (run for text in texts for run in _LETTERS.findall(text))
        if any(len(run) >= 3 and not _ASCII_LETTERS.search(run) for run in runs):
            return False
        if any(map(_SYMBOL_PAIR.search, texts)):  # DOS 866 ``железо`` is ``¦¥«¥§®``
            return False
        return all(_could_be_words(text, True, False, tuple(_LATIN_LANGUAGES)) for text in texts)
    # the set's own modifier letters are no letters of a word's shape: Greek ypogegrammeni (ISO 8859-7 AA), lower case
    # with no capital (no upper-case run holding it was a word), Arabic tatweel (ISO 8859-6 E0, a name's kashida
    # ``بـ``), Thai mai yamok (TIS 620 E6)
    texts = ["".join(char for char in text if not _own_modifier(char, script)) for text in texts]
    return _script_words(texts, script, 0, vowel_run=0)


def _own_modifier(char: str, script: str) -> bool:
    return unicodedata.category(char) == "Lm" and unicodedata.name(char, "").startswith(script)


def _script_words(
    texts: list[str], script: str, fewest: int, *, vowel_run: int = 3, abbreviations: bool = False
) -> bool:
    """Whether ``texts`` could be words of ``script`` (Arabic, Cyrillic, Greek, Hebrew, Thai): at least ``fewest``
    letters past ASCII, all of them of the script (or its marks, a name's curly quotes and dashes, the zero-width
    non-joiner, Cyrillic's ``№``), no run of letters mixing them with ASCII ones, each run upper, lower or title case
    (:func:`radtrace.dicom_charset_windows._words`: Cyrillic runs one language's alphabet, Arabic vowel marks where
    a writer puts them), and: a Thai or Hebrew mark follows a letter and a Thai leading vowel goes before one; a
    Cyrillic or Greek run of ``vowel_run`` letters or more holds a vowel (0: any run), and where that is 3 (the
    readings of other scripts), Greek ``ς`` and Hebrew final letters end a run. The declared set's own reading is
    judged with 0 (abbreviations such as ``ГКБ``); ``abbreviations``: a run of up to :data:`_ABBREVIATION_LETTERS`
    capitals may have no vowel."""
    letters = 0
    for text in texts:
        previous = ""
        for index, char in enumerate(text):
            if char.isascii() or char in _OTHER_PUNCTUATION or char in _SCRIPT_SIGNS.get(script, ()):
                previous = char
                continue
            category = unicodedata.category(char)
            if category not in _SCRIPT_CATEGORIES or not unicodedata.name(char, "").startswith(script):
                return False
            if category == "Mn" and script in {"THAI", "HEBREW"} and not previous.isalpha() and previous[-1:] != "M":
                return False
            if char in _THAI_LEADING_VOWELS and not text[index + 1 : index + 2].isalpha():
                return False
            letters += char.isalpha()
            previous = char if category != "Mn" else "M"
        plain = "".join(char for char in text if unicodedata.category(char) != "Mn") if script != "ARABIC" else text
        if not _could_be_words(plain, False, script == "CYRILLIC", None, script == "ARABIC"):
            return False
        for written in _LETTERS.findall(plain) if vowel_run else ():
            run = written.lower()
            abbreviation = abbreviations and written.isupper() and len(written) <= _ABBREVIATION_LETTERS  # ГКБ
            vowels = _VOWELS.get(script)
            if vowels and len(run) >= vowel_run and not vowels.intersection(run) and not abbreviation:
                return False
            if vowel_run <= 3 and any(char in "ς" or char in _HEBREW_FINALS for char in run[:-1]):
                return False
    return letters >= fewest
