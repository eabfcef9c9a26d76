"""Windows-1257 (Baltic) under ISO_IR 110, 1256 (Arabic) under ISO_IR 127, 1250 under ISO_IR 101: read in the page
or flagged.

Windows-1257 puts the Baltic letters at A0-FF where ISO 8859-4 has other letters: Lithuanian ``ė ų š ž`` read as
``ë ø đ ū``, Latvian ``ā ē ņ š`` as ``â į ō đ``. Every ISO reading was in a word's shape (case alone was checked),
so 4,545 of 5,312 measured Baltic encodings (/work/notes/charset-win/measure.py) were read wrong and unflagged. Now
the letters of each run must be one language's (:data:`radtrace.dicom_charset_windows._LATIN_LANGUAGES`): an ISO
reading mixing letters no language uses together (``BĮRZIŌĐ``) is read in the page; one that is a word of a
language other than the Baltic ones only (Danish ``ø``, Albanian ``ë``, French ``â``) is flagged doubtful.

Windows-1256 puts ``ي`` and ``ى`` at ED and EC, ISO 8859-6's kasratan and dammatan; and Arabic has no case, so no Arabic
text was ever "in a word's shape": only bytes the ISO set never writes were read in the page. Now an Arabic reading is
words where each vowel mark follows a letter and tanween ends its word (``افحسٍلٍ``, the ISO reading of ``الحسيني``, is
not); both readings words, the Windows one beginning with the article ``ال`` (ISO ``اف``) or the ISO one holding tanween
or ``ك غ ظ`` (the page's commoner ``م ع ط``) is flagged doubtful. Polish ``ą`` (Windows-1250 B9) is Latin-2 ``š``, so
``Dąbrowski`` read as ``Dšbrowski``: flagged where the word also holds what Czech, Slovak, Slovene and Croatian rarely
write (``w``, ``sz``, ``cz``, ``rz``, ``dz``, ``ł ż ś ń ź``).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.charset import python_encoding

from charset_support import raw_header, text_of
from radtrace.dicom_charset import CHARACTER_SET_ASSUMED, CHARACTER_SET_DOUBTFUL, CharsetChoice, read_text_as

pytestmark = pytest.mark.unit

READ_IN_THE_PAGE = [
    # (whose name, (0008,0005), the page, the name, how the ISO set read it)
    ("lithuanian, ë with ū", "ISO_IR 110", "cp1257", "JANKAUSKIENĖ^ŽIVILĖ", "JANKAUSKIENË^ŪIVILË"),
    ("latvian, į ō đ â", "ISO_IR 110", "cp1257", "BĒRZIŅŠ^JĀNIS", "BĮRZIŌĐ^JÂNIS"),
    ("latvian title case, ō with đ", "ISO 2022 IR 110", "cp1257", "Ozoliņš^Andris", "Ozoliōđ^Andris"),
    ("arabic, yeh inside words", "ISO_IR 127", "cp1256", "الحسيني^علي", "افحسٍلٍ^غفٍ"),
    ("arabic, yeh in the middle", "ISO_IR 127", "cp1256", "حسين^سعيد", "حسٍل^سغٍد"),
    ("arabic, two tanween in a word", "ISO_IR 127", "cp1256", "حداد^ليلى", "حداد^فٍفٌ"),
    ("arabic, article and yeh", "ISO_IR 127", "cp1256", "الخطيب^رامي", "افخظٍب^راكٍ"),
]


@pytest.mark.parametrize(
    ("case", "term", "page", "name", "iso"), READ_IN_THE_PAGE, ids=[c[0] for c in READ_IN_THE_PAGE]
)
def test_windows_text_whose_iso_reading_is_no_language_s_word_is_read_in_the_page(
    case: str, term: str, page: str, name: str, iso: str
) -> None:
    data = name.encode(page)
    assert data.decode(python_encoding[term]) == iso  # what was read before, unflagged
    ds = raw_header(term, data)
    choice = read_text_as(ds)
    assert choice == CharsetChoice(term, page, "windows-code-page")
    assert choice.flag == CHARACTER_SET_ASSUMED
    assert text_of(ds) == name


DOUBTFUL = [
    # (whose name, (0008,0005), the page, the name, how the ISO set reads it: a word of another language, or a word
    # of the Baltic or Arabic letters that a writer in the page would rarely mean)
    ("lithuanian, ė as Albanian ë", "ISO_IR 110", "cp1257", "Kazlauskaitė^Eglė", "Kazlauskaitë^Eglë"),
    ("lithuanian, š as Croatian đ", "ISO_IR 110", "cp1257", "Šeštokas^Vytautas", "Đeđtokas^Vytautas"),
    ("lithuanian, ų as Danish ø", "ISO_IR 110", "cp1257", "ADOMAITIS^MARIŲ", "ADOMAITIS^MARIØ"),
    ("latvian, ā as French â", "ISO_IR 110", "cp1257", "Liepiņa^Māra", "Liepiōa^Mâra"),
    ("latvian, ē as Lithuanian į", "ISO_IR 110", "cp1257", "Jēkabsons^Pēteris", "Jįkabsons^Pįteris"),
    ("polish, ą as Slovak Ľ beside w", "ISO_IR 101", "cp1250", "DĄBROWSKI^JERZY", "DĽBROWSKI^JERZY"),
    ("polish, ą as Czech š beside ł", "ISO_IR 101", "cp1250", "Gołąb^Wacław", "Gołšb^Wacław"),
    ("arabic, the article", "ISO_IR 127", "cp1256", "النجار^منى", "افلجار^كلٌ"),
    ("arabic, meem and ain as kaf and ghain", "ISO_IR 127", "cp1256", "محمد^عبد", "كحكد^غبد"),
    ("arabic, final yeh as kasratan", "ISO_IR 127", "cp1256", "المصري^سامي", "افكصرٍ^ساكٍ"),
]


@pytest.mark.parametrize(("case", "term", "page", "name", "iso"), DOUBTFUL, ids=[c[0] for c in DOUBTFUL])
def test_windows_text_whose_iso_reading_is_a_word_of_another_language_is_flagged(
    case: str, term: str, page: str, name: str, iso: str
) -> None:
    ds = raw_header(term, name.encode(page))
    choice = read_text_as(ds)
    assert choice == CharsetChoice(term, term, "windows-doubtful")
    assert choice.flag == CHARACTER_SET_DOUBTFUL
    assert text_of(ds) == iso  # read as declared: never a changed name, a flag for the radiologist
    assert f"Windows code page {page[2:]}" in choice.sentence()


GENUINE = [
    # the ISO sets' own text: read as declared and unflagged
    ("latvian in ISO 8859-4", "ISO_IR 110", "BĒRZIŅŠ^JĀNIS"),
    ("latvian title case", "ISO_IR 110", "Ozoliņš^Līga"),
    ("lithuanian in ISO 8859-4", "ISO_IR 110", "JANKAUSKIENĖ^ŽIVILĖ"),
    ("lithuanian title case", "ISO_IR 110", "Kazlauskaitė^Eglė"),
    ("estonian", "ISO_IR 110", "Tšernõšova^Tõnu"),
    ("czech patient under Latin-4", "ISO_IR 110", "Bláhová^Jana"),
    ("czech in Latin-2, š is Windows-1250's ą", "ISO_IR 101", "Kašpar^Lukáš"),
    ("slovak in Latin-2", "ISO_IR 101", "Kováčová^Ľubica"),
    ("arabic in ISO 8859-6", "ISO_IR 127", "الحسيني^علي"),
    ("arabic, vowel marks and shadda", "ISO_IR 127", "مُحَمَّد^عَلِيّ"),
    ("arabic, tanween ending words", "ISO_IR 127", "كِتَابٌ^عَلِيًّا"),
]


@pytest.mark.parametrize(("case", "term", "name"), GENUINE, ids=[c[0] for c in GENUINE])
def test_genuine_iso_8859_4_and_8859_6_names_are_read_as_declared_unflagged(case: str, term: str, name: str) -> None:
    ds = raw_header(term, name.encode(python_encoding[term]))
    assert read_text_as(ds) is None
    assert text_of(ds) == name


# Letters that ISO 8859-4 reads as letters of no Baltic language (ų ė š ū: ø ë đ û; ā ī ņ: â î ō), and letters
# both sets hold at the same byte
_TELLING = {"lithuanian": "ųėšū", "latvian": "āīņšū"}
_SHARED = "abdegijklmnoprstuvzč"


@settings(max_examples=150, deadline=None)
@given(language=st.sampled_from(sorted(_TELLING)), data=st.data())
def test_property_a_baltic_name_with_a_telling_letter_is_never_read_wrong_unflagged(language: str, data: Any) -> None:
    """A Lithuanian or Latvian name, upper or title case, holding one of its letters that ISO 8859-4 reads as a
    letter of no Baltic language, written in Windows-1257 under ISO_IR 110: read as written, or read as declared and
    flagged doubtful (before: read as declared, unflagged)."""
    telling = _TELLING[language]
    component = st.lists(st.sampled_from(_SHARED + telling), min_size=2, max_size=10).map("".join)
    shape = data.draw(st.sampled_from([str.upper, str.title]))
    first = data.draw(component.filter(lambda c: any(letter in telling for letter in c)))
    name = shape(first) + "^" + shape(data.draw(component))
    ds = raw_header("ISO_IR 110", name.encode("cp1257"))
    choice = read_text_as(ds)
    assert choice is not None, name
    if choice.because == "windows-code-page":
        assert text_of(ds) == name
    else:
        assert choice == CharsetChoice("ISO_IR 110", "ISO_IR 110", "windows-doubtful"), (name, choice)


_ARABIC_SHARED = "ءآأؤإئابةتثجحخدذرزسشصض"  # C1-D6: the same letters at the same bytes in both sets


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_an_arabic_name_with_yeh_inside_a_word_is_read_in_the_page(data: Any) -> None:
    """An Arabic name holding ``ي`` (Windows-1256 ED, ISO 8859-6 kasratan) anywhere but at a word's end, written in
    Windows-1256 under ISO_IR 127: read in the page (the ISO reading holds tanween inside a word)."""
    letters = st.lists(st.sampled_from(_ARABIC_SHARED + "ي"), min_size=1, max_size=6).map("".join)
    first = data.draw(letters) + "ي" + data.draw(st.sampled_from(_ARABIC_SHARED))
    name = first + "^" + data.draw(letters)
    ds = raw_header("ISO_IR 127", name.encode("cp1256"))
    assert read_text_as(ds) == CharsetChoice("ISO_IR 127", "cp1256", "windows-code-page"), name
    assert text_of(ds) == name
