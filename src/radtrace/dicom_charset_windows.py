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
  Latvian ``ē``); for Windows-1256 where the page's reading begins a word with the article ``ال`` (ISO ``اف``) or the
  ISO reading holds tanween (final ``ي``, ``ى``) or ``ك غ ظ``, which the page reads as the commoner ``م ع ط`` (``محمد``
  is ISO ``كحكد``); for Windows-1250 where a word holds ``ą`` (Latin-2 ``š``: ``Dąbrowski`` is ``Dšbrowski``) and what
  Czech, Slovak, Slovene and Croatian rarely write (``w``, ``sz``, ``cz``, ``rz``, ``dz``, ``ł ż ś ń ź``). A flag on
  every word of both shapes would fall on too much of the ISO sets' own text (Windows-1250 8 %, 1257 54 %, 1256 20 % of
  the measured ISO encodings): the rest is read as declared, unflagged.

Measured (/work/notes/charset-win/measure.py, words of Faker, Babel CLDR and pycountry in each page's languages, as
written, upper and title case), Windows text declared ISO read wrong and unflagged: 1257 under ISO_IR 110 5,312
encodings, 4,545 -> 407 (3,632 flagged); 1256 under ISO_IR 127 5,974, 3,146 -> 659 (1,315 flagged); 1250 under
ISO_IR 101 42,475, 620 -> 334 (187 flagged). Genuine ISO text read otherwise: 0 of 51,998 / 5,211 / 66,942
encodings (every word of every language the set encodes); flagged doubtful: 5 of 5,302 Baltic and 2,408 of the
51,998 ISO 8859-4 ones (``ø`` 1,276: Danish and Norwegian; ``ë`` 673: Albanian, Dutch; ``â`` 266), 205 of the 5,211
ISO 8859-6 ones (``ك غ ظ``, words beginning ``اف``), 40 of the 66,942 Latin-2 ones (Czech words with ``w`` and ``š``).
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
# The pages whose text the ISO set reads as other words is flagged wherever each reading could be words (Windows-1250,
# 1256 and 1257 are not: their ISO sets' own text reads as words in them too often, 8 %, 20 % and 54 % of the
# measured encodings, for a flag to mean anything; 1256 and 1257 are flagged on narrower grounds, see windows_reading)
_DOUBTFUL_PAGES: Final = frozenset({"cp1251", "cp1253"})
_ARABIC_MARK: Final = re.compile("[\u064b-\u0652]")
_TANWEEN: Final = re.compile("[\u064b-\u064d]")
_SHADDA: Final = "\u0651"
# The Arabic article beginning a word, alone or after a one-letter prefix (wa-, bi-, fa-, ka-, li-): Windows-1256
# ``ال`` (C7 E1) is ISO 8859-6 ``اف``
_ARTICLE: Final = re.compile("(?<!\\w)[\u0648\u0628\u0641\u0643]?\u0627\u0644|(?<!\\w)\u0644\u0644")
# A Polish word holding ``ą`` (Windows-1250 B9, Latin-2 ``š``: ``Dąbrowski`` reads as ``Dšbrowski``) and a letter or
# digraph that Czech, Slovak, Slovene and Croatian rarely write: ``w``, ``sz``, ``cz``, ``rz``, ``dz``, ``ł ż ś ń ź``
_POLISH_OGONEK_A: Final = re.compile(
    "(?i)(?=[^\\W\\d_]*\u0105)[^\\W\\d_]*(?:w|sz|cz|rz|dz|[\u0142\u017c\u015b\u0144\u017a])"
)
# Letters of the ISO reading that the page reads as commoner ones, where both readings are words: ISO 8859-6 kaf,
# ghain, zah (E3, DA, D9) are Windows-1256 meem, ain, tah; ISO 8859-4 Lithuanian ``į`` (E7, C7) is Windows-1257
# Latvian ``ē`` (Latvian ``PĒTERIS`` is ``PĮTERIS``)
_RARER: Final = {"cp1256": "\u0643\u063a\u0638", "cp1257": "\u012f\u012e"}
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
    if page in _ISO_LANGUAGES and not all(_words(text, latin, cyrillic, _ISO_LANGUAGES[page]) for text in iso):
        return "windows-doubtful"
    if any(char in _RARER.get(page, "") for text in iso for char in text):
        return "windows-doubtful"
    if arabic and any(map(_TANWEEN.search, iso)):
        return "windows-doubtful"
    if arabic and any(map(_ARTICLE.search, texts)):
        return "windows-doubtful"
    if page == "cp1250" and any(map(_POLISH_OGONEK_A.search, texts)):
        return "windows-doubtful"
    return "windows-doubtful" if page in _DOUBTFUL_PAGES else None


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
