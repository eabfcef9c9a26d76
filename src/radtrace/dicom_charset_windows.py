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
  (:func:`_words`: every run of letters upper, lower or title case, or of a script without case; no symbol next to
  a letter; for Cyrillic the letters of each run of one language's alphabet, no soft sign first or after a vowel;
  for Windows-1250 and 1257 the letters past ASCII of each run of one language's (the page's languages for its
  reading, any Latin-script language of :data:`_LATIN_LANGUAGES` for the ISO one); for Arabic each vowel mark after
  a letter and tanween ending its word). Windows-1251 puts the Russian alphabet at C0-FF, ISO 8859-5 at B0-EF:
  ``ПЕТРОВ`` read as ISO 8859-5 is ``ЯХваЮТ``, ``Тульчин`` is ``вѓыќїшэ``; Slovak ``ĽUBICA`` in Windows-1250 is
  Latin-2 ``źUBICA``; Latvian ``BĒRZIŅŠ`` in Windows-1257 is ISO 8859-4 ``BĮRZIŌĐ`` (Lithuanian ``į``, old
  Latvian ``ō``, Croatian ``đ``); Arabic ``الحسيني`` in Windows-1256 is ISO 8859-6 ``افحسٍلٍ`` (its ``ي``, ED, is
  kasratan, tanween inside a word);
* **read as declared, flagged** ``windows-doubtful`` where both readings could be words, for Windows-1251 and 1253
  (``ИВАНОВ`` is ``ШТРЭЮТ`` in ISO 8859-5; Greek ``Ά``, A2, is ISO 8859-7's curly apostrophe): nothing in the bytes
  tells them apart; for Windows-1257 where the ISO reading is a word of no language of :data:`_ISO_LANGUAGES`
  (Lithuanian ``MARIŲ`` is Danish-looking ``MARIØ``, ``Eglė`` Albanian-looking ``Eglë``) or holds ``į`` (the page's
  Latvian ``ē``); for Windows-1250 where a word holds ``ą`` (Latin-2 ``š``: ``Dąbrowski`` is ``Dšbrowski``) and what
  Czech, Slovak, Slovene and Croatian rarely write (``w``, ``sz``, ``cz``, ``rz``, ``dz``, ``ł ż ś ń ź``); and for
  Windows-1257, 1250 and 1256 where the page's reading is the likelier word (:func:`_likelier_by`: the letter
  bigrams, for Arabic trigrams, of the measured words, shipped in ``dicom_charset_ngrams.json``, at the letters
  where the readings differ; by more than :data:`_LIKELIER_BITS`): Lithuanian ``ALŽYRAS`` is ISO 8859-4
  ``ALŪYRAS``, Latvian ``Angļu`` ``Angīu``, Slovak ``Bobuľová`` Latin-2 ``Bobužová``, Persian ``آسانسور`` ISO 8859-6
  ``آسالسنر``. For Windows-1256 that weighing is the only rule (it replaced the article, tanween and ``ك غ ظ``
  rules, which flagged genuine ``أفغانستان`` and ``البرتغال``). A flag on every word of both shapes would fall on too
  much of the ISO sets' own text (Windows-1250 8 %, 1257 54 %, 1256 20 % of the measured ISO encodings): the rest is
  read as declared, unflagged.

Measured (/work/notes/charset-win/measure.py, words of Faker, Babel CLDR and pycountry in each page's languages, as
written, upper and title case), Windows text declared ISO read wrong and unflagged: 1257 under ISO_IR 110 5,312
encodings, 4,545 -> 407 (3,632 flagged); 1256 under ISO_IR 127 5,974, 3,146 -> 659 (1,315 flagged); 1250 under
ISO_IR 101 42,475, 620 -> 334 (187 flagged). Genuine ISO text read otherwise: 0 of 51,998 / 5,211 / 66,942
encodings (every word of every language the set encodes); flagged doubtful: 5 of 5,302 Baltic and 2,408 of the
51,998 ISO 8859-4 ones (``ø`` 1,276: Danish and Norwegian; ``ë`` 673: Albanian, Dutch; ``â`` 266), 205 of the 5,211
ISO 8859-6 ones (``ك غ ظ``, words beginning ``اف``), 40 of the 66,942 Latin-2 ones (Czech words with ``w`` and ``š``).

Then the weighing of the two readings (bench/charset_windows.py, Faker 40.63, Babel 2.19 CLDR and pycountry
26.2.16, whose larger lists give other totals; 977afda -> now): wrong and unflagged 1257 522 -> 25 of 5,828, 1256
723 -> 241 of 6,132, 1250 381 -> 17 of 51,295; genuine ISO text read otherwise 3 -> 0 (ISO 8859-4 Vietnamese
``Đính``, read as ``Šķnh`` before ``vi`` joined :data:`_LATIN_LANGUAGES`) / 0 / 0; flagged doubtful 3,245 -> 3,391
of 61,778 ISO 8859-4 encodings (5.3 % -> 5.5 %; of the Baltic languages' 5,839: 37 -> 116), 229 -> 126 of 5,380 ISO
8859-6 ones (4.3 % -> 2.3 %), 230 -> 1,143 of 78,261 Latin-2 ones (0.3 % -> 1.5 %). Held out (``--held-out``: a
table of half the words, the other half counted), where the thresholds were chosen (each where the genuine words'
flags stay well under 4 % or, for ISO 8859-4, near what they were): wrong and unflagged 291 -> 18 of 3,026, 359 ->
218 of 3,061, 191 -> 12 of 25,649; 0 read otherwise; flagged doubtful 5.3 -> 5.5 %, 4.4 -> 3.7 %, 0.3 -> 1.5 %.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from functools import cache
from importlib import resources
from typing import Any, Final

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
# The pages whose text the ISO set reads as other words is flagged wherever each reading could be words (Windows-1250,
# 1256 and 1257 are not: their ISO sets' own text reads as words in them too often, 8 %, 20 % and 54 % of the
# measured encodings, for a flag to mean anything; 1256 and 1257 are flagged on narrower grounds, see windows_reading)
_DOUBTFUL_PAGES: Final = frozenset({"cp1251", "cp1253"})
_ARABIC_MARK: Final = re.compile("[\u064b-\u0652]")
_TANWEEN: Final = re.compile("[\u064b-\u064d]")
_SHADDA: Final = "\u0651"
# A Polish word holding ``ą`` (Windows-1250 B9, Latin-2 ``š``: ``Dąbrowski`` reads as ``Dšbrowski``) and a letter or
# digraph that Czech, Slovak, Slovene and Croatian rarely write: ``w``, ``sz``, ``cz``, ``rz``, ``dz``, ``ł ż ś ń ź``
_POLISH_OGONEK_A: Final = re.compile(
    "(?i)(?=[^\\W\\d_]*\u0105)[^\\W\\d_]*(?:w|sz|cz|rz|dz|[\u0142\u017c\u015b\u0144\u017a])"
)
# Letters of the ISO reading that the page reads as commoner ones, where both readings are words: ISO 8859-6 kaf,
# ghain, zah (E3, DA, D9) are Windows-1256 meem, ain, tah; ISO 8859-4 Lithuanian ``į`` (E7, C7) is Windows-1257
# Latvian ``ē`` (Latvian ``PĒTERIS`` is ``PĮTERIS``)
_RARER: Final = {"cp1257": "\u012f\u012e"}
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
# The letters past ASCII (lower case) of each language written in Latin script that a name or word in an ISO 8859
# or Windows Latin set may be of: a run of letters is a word of one language where its letters past ASCII are all
# one language's. Generous on purpose (loan accents, old orthographies, Sorbian, Sámi, Kashubian ...): the ISO
# reading of genuine text must always fit one, or it would be read in the page
_LATIN_LANGUAGES: Final = {
    "lt": "ąčęėįšųūž",
    "lv": "āčēģīķļņšūž",
    "ltg": "āčēģīķļņōšūžŗ",  # Latgalian, and Latvian before 1946
    "et": "šžõäöü",
    "fi": "åäöšžé",
    "sv": "åäöéüàá",
    "da": "æøåéäöüóòôáí",
    "de": "äöüßéèáàëïç",
    "kl": "ĸáâãêíîĩôúûũæøå",
    "se": "áčđŋšŧžåäöæøâʒǯǧǥǩŋõ",
    "hr": "čćđšž",
    "sl": "čšžćđ",
    "cs": "áčďéěíňóřšťúůýž",
    "sk": "áäčďéíĺľňóôŕšťúýž",
    "hu": "áéíóöőúüű",
    "pl": "ąćęłńóśźż",
    "hsb": "čćěłńóřšž",
    "dsb": "čćěłńóŕšśžź",
    "csb": "ąãéëłńòóôùż",
    "ro": "ăâîșțşţ",
    "sq": "çë",
    "fr": "àâæçéèêëîïôœùûüÿ",
    "pt": "áâãàçéêíóôõúü",
    "es": "áéíñóúü",
    "it": "àèéìíîòóùú",
    "ca": "àçéèíïòóúü",
    "nl": "áéèëïóöüäêôûíú",
    "is": "áðéíóúýþæö",
    "fo": "áðíóúýæø",
    "ga": "áéíóú",
    "tr": "çğıöşüâîû",
    "az": "çəğıöşüä",
    "mt": "ċġħżàèìòù",
    "eo": "ĉĝĥĵŝŭ",
    "lb": "äëéè",
    "vi": "àáâãèéêìíòóôõùúýăđĩũơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ",
}
# The languages of each Windows Latin page whose reading is checked letter by letter (the Baltic page: Lithuanian,
# Latvian, Estonian; Windows-1250: the Central European languages), and the languages whose words the ISO reading
# may be (every one above)
_PAGE_LANGUAGES: Final = {
    "cp1257": ("lt", "lv", "et"),
    "cp1250": ("pl", "cs", "sk", "hu", "sl", "hr", "ro", "sq", "de", "hsb", "dsb"),
}
# The languages whose words the ISO reading is taken for, for each such page: text whose ISO reading is a word of
# another language only (Danish ``Tromsø`` for Lithuanian ``Tromsų``, French ``JAPÂNA`` for Latvian ``JAPĀNA``) is
# flagged doubtful. For ISO 8859-4: the Baltic languages, and those whose only letters past ASCII there are
# ``á é í ú ö ü``: these are Windows-1257's rare ``į é ķ ś ö ü``, while ``ø æ ë â î û đ ō`` are its commonest
# ``ų ę ė ā ī ū š ņ`` (a flag on every ``á`` would fall on 39 % of the measured ISO 8859-4 encodings, now 4.6 %)
_ISO_LANGUAGES: Final = {
    "cp1257": ("lt", "lv", "et", "cs", "sk", "hu", "is", "ga", "es"),
    "cp1250": _PAGE_LANGUAGES["cp1250"],
}
_LATIN_ALPHABETS: Final = {language: frozenset(letters) for language, letters in _LATIN_LANGUAGES.items()}
# Where both readings could be words, the bits by which the page's reading is the likelier word (letter n-grams of
# the measured words, :func:`_likelier_by`) above which the text is flagged doubtful rather than read as declared
# unflagged (the module's docstring gives the measurement). Windows-1256: instead of the article, tanween and ``ك غ ظ``
# rules, which flagged 4.3 % of the measured ISO 8859-6 words and left 723 of 6,132 Windows-1256 ones wrong unflagged
_LIKELIER_BITS: Final = {"cp1257": -2.0, "cp1250": -8.0, "cp1256": 2.0}
_NGRAMS: Final = "dicom_charset_ngrams.json"
_NOT_LETTER: Final = re.compile(r"[^\w]|[\d_]")


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
    words too, Windows-1257 whose ISO 8859-4 reading is another language's word ...), else None (the module's
    docstring gives the rules)."""
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
    latin, cyrillic, arabic = script == "LATIN", script == "CYRILLIC", script == "ARABIC"
    page_languages = _PAGE_LANGUAGES.get(page)
    any_language = tuple(_LATIN_ALPHABETS) if page_languages else None  # the ISO reading: a word of any language
    if iso == texts or not all(_words(text, latin, cyrillic, page_languages, arabic) for text in texts):
        return None
    if not all(_words(text, latin, cyrillic, any_language, arabic) for text in iso):
        return "windows-code-page"
    if arabic:  # both readings Arabic words: the likelier one decides the flag
        return "windows-doubtful" if _page_likelier(page, texts, iso) else None
    if page in _ISO_LANGUAGES and not all(_words(text, latin, cyrillic, _ISO_LANGUAGES[page]) for text in iso):
        return "windows-doubtful"
    if any(char in _RARER.get(page, "") for text in iso for char in text):
        return "windows-doubtful"
    if page == "cp1250" and any(map(_POLISH_OGONEK_A.search, texts)):
        return "windows-doubtful"
    if page in _LIKELIER_BITS and _page_likelier(page, texts, iso):
        return "windows-doubtful"
    return "windows-doubtful" if page in _DOUBTFUL_PAGES else None


def _page_likelier(page: str, texts: list[str], iso: list[str]) -> bool:
    """Whether the page's reading of some value is likelier a word than the ISO reading by more than
    :data:`_LIKELIER_BITS`."""
    return any(_likelier_by(page, text, other) > _LIKELIER_BITS[page] for text, other in zip(texts, iso, strict=True))


@cache
def _ngram_bits(page: str) -> tuple[int, dict[str, float]]:
    """``page``'s n and :func:`ngram_bits` of its measured words' letter n-grams (shipped with the package:
    bench/charset_windows.py ``--write-table`` writes them from Faker, Babel CLDR and pycountry words)."""
    return ngram_bits(_ngram_table()[page])


@cache
def _ngram_table() -> dict[str, Any]:
    """The shipped table of the pages' n-grams (:func:`ngram_file`)."""
    table: dict[str, Any] = ngram_file()["ngrams"]
    return table


@cache
def ngram_file() -> dict[str, Any]:
    """The shipped n-gram tables, read once a process (140 kB: 3 to 9 ms with the three pages' weights): ``ngrams``,
    each Windows page's; ``scripts``, each other script's (:mod:`radtrace.dicom_charset_scripts`)."""
    tables: dict[str, Any] = json.loads(resources.files("radtrace").joinpath(_NGRAMS).read_text("utf-8"))
    return tables


def ngram_bits(grams: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """n and log2 of (the count plus 1/2) of each n-gram of a table entry (``{"n": 2, "counts": {...}}``); an
    n-gram not there is log2(1/2), -1."""
    counts: dict[str, int] = grams["counts"]
    return int(grams["n"]), {gram: math.log2(count + 0.5) for gram, count in counts.items()}


def _likelier_by(page: str, text: str, other: str) -> float:
    """By how many bits ``text`` (the page's reading) is likelier a word than ``other`` (the ISO set's reading of the
    same bytes): over each letter n-gram (``_`` a word's edge, n - 1 of them at each end, lower case) that holds a
    letter where the readings differ, log2 of the ratio of the measured words' counts of the two (plus 1/2). What
    is no letter (a space, ``^``, an Arabic vowel mark) is an edge."""
    size, bits = _ngram_bits(page)
    edge = "_" * (size - 1)
    mine = edge + _NOT_LETTER.sub("_", text.lower()) + edge
    theirs = edge + _NOT_LETTER.sub("_", other.lower()) + edge
    if len(mine) != len(theirs):  # a letter whose lower case is two (none of these pages holds one)
        return 0.0
    scored: set[int] = set()  # the n-grams' first positions
    for index, (char, rival) in enumerate(zip(mine, theirs, strict=True)):
        if char != rival:
            scored.update(range(index - size + 1, index + 1))
    total = 0.0
    for index in scored:
        if 0 <= index <= len(mine) - size:
            total += bits.get(mine[index : index + size], -1.0) - bits.get(theirs[index : index + size], -1.0)
    return total


def _words(
    text: str, latin: bool, cyrillic: bool, languages: tuple[str, ...] | None = None, arabic: bool = False
) -> bool:
    """Whether ``text`` could be words and names: every run of letters is upper case, lower case or title case, and
    no character past ASCII other than a letter or an apostrophe stands next to a letter (``Петров`` in
    Windows-1251 read as ISO 8859-5 is ``Яхђ№ют``); unless ``latin``, no run mixes ASCII letters with others
    (ISO 8859-7 ``L'ASCENSION`` with a curly apostrophe, A2, reads as ``LΆASCENSION`` in Windows-1253);
    ``cyrillic``: each run's letters are of one alphabet (:data:`_ALPHABETS`), no run starts with a soft sign and
    none stands after a vowel or a sign (Windows-1251 ``Тульчин`` read as ISO 8859-5 is ``вѓыќїшэ``, ``Зоя`` is
    ``Чюџ``); ``languages``: each run's letters past ASCII are one language's (:func:`_one_language`); ``arabic``:
    vowel marks where a writer puts them (:func:`_arabic_unmarked`), then left out."""
    if arabic:
        unmarked = _arabic_unmarked(text)
        if unmarked is None:
            return False
        text = unmarked
    if _NEXT_TO_LETTER.search(text):
        return False
    runs = _LETTER_RUN.findall(text)
    if not all(run.isupper() or run.islower() or run.istitle() or _caseless(run) for run in runs):
        return False
    if not latin and any(not run.isascii() and _ASCII_LETTER.search(run) for run in runs):
        return False
    if languages and not all(_one_language(run, languages) for run in runs):
        return False
    return not cyrillic or all(map(_cyrillic_word, runs))


def _caseless(run: str) -> bool:
    """A run of a script without case (Arabic, Hebrew, Thai): ``str.isupper`` and the others are False for it."""
    return run.upper() == run.lower() == run


def _arabic_unmarked(text: str) -> str | None:
    """``text`` without its Arabic vowel marks where each stands where a writer puts one, else None: a mark
    follows a letter (or shadda follows or precedes one vowel), and tanween (an, un, in) ends the word (fathatan
    before a last alef or alef maksura). Windows-1256 ``ي`` and ``ى`` (ED, EC) are ISO 8859-6's kasratan and
    dammatan: ``المحيط`` reads as ``افكحٍظ``, tanween inside a word."""
    marks: list[str] = []
    for index, char in enumerate(text):
        if not _ARABIC_MARK.match(char):
            if marks and _TANWEEN.search("".join(marks)) and char.isalpha():
                # tanween ends the word; fathatan may stand before a last alef or alef maksura
                last = index + 1 == len(text) or not text[index + 1].isalpha()
                if not (last and "\u064b" in marks and char in "\u0627\u0649"):
                    return None
            marks = [] if char.isalpha() else ["-"]
            continue
        if index == 0 or marks == ["-"]:
            return None  # a mark after no letter
        marks.append(char)
        if len(marks) > 2 or (len(marks) == 2 and (_SHADDA not in marks or marks[0] == marks[1])):
            return None
    return _ARABIC_MARK.sub("", text)


def _one_language(run: str, languages: tuple[str, ...]) -> bool:
    """Whether the letters past ASCII of ``run`` are all of one of ``languages`` (:data:`_LATIN_LANGUAGES`)."""
    letters = {char for char in run.lower() if not char.isascii()}
    return not letters or any(letters <= _LATIN_ALPHABETS[language] for language in languages)


def _cyrillic_word(run: str) -> bool:
    lower = run.lower()
    if lower.isascii():
        return True
    if lower[0] == "ь" or _SIGN_AFTER_VOWEL.search(lower):
        return False
    letters = set(lower)
    return any(letters <= alphabet for alphabet in _ALPHABETS)
