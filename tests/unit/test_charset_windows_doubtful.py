"""Windows-1251 that ISO 8859-5 reads as words too is flagged; Windows-1255, 1256 and 874 are read in the page.

Windows-1251 puts the Russian alphabet at C0-FF, ISO 8859-5 at B0-EF: ``ИВАНОВ`` written in the page reads as
``ШТРЭЮТ`` in the ISO set, ``Иванов`` as ``Штрэют``, both in a word's shape, and nothing in the bytes tells them
apart. Before, these (26,549 of 80,350 measured encodings, /work/notes/charset-win/measure.py) were read as declared,
unflagged; now they are read as declared and flagged ``character-set-doubtful`` (``because`` ``windows-doubtful``).

Windows-1255 (Hebrew), 1256 (Arabic) and 874 (Thai) extend ISO_IR 138, 127 and 166 with letters, points and
punctuation at bytes the ISO set never writes (80-9F, and the bytes it leaves undefined: ISO 8859-6's DB-DF, which
are Windows-1256's ``غ ـ ف ق ك``; ISO 8859-8's C0-DE, Windows-1255's points, geresh and gershayim). Before, they
were read as the set's C1 controls or replacement characters, unflagged; now they are read in the page, flagged.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.charset import python_encoding

from charset_support import raw_header, text_of
from radtrace.dicom_charset import (
    CHARACTER_SET_ASSUMED,
    CHARACTER_SET_DOUBTFUL,
    CharsetChoice,
    audit_record,
    charset_record,
    read_text_as,
    recorded_choice,
)

pytestmark = pytest.mark.unit

DOUBTFUL = [
    # (whose name, the name written in Windows-1251, how ISO 8859-5 reads it)
    ("russian upper case", "ИВАНОВ^ИВАН", "ШТРЭЮТ^ШТРЭ"),
    ("russian title case", "Иванов^Иван", "Штрэют^Штрэ"),
    ("bulgarian upper case", "ДИМОВ^ИВАН", "ФШЬЮТ^ШТРЭ"),
    ("ukrainian upper case", "ІВАН^ОЛЕНА", "ВТРЭ^ЮЫХЭР"),  # noqa: RUF001 (Cyrillic capitals)
]


@pytest.mark.parametrize(("case", "name", "iso"), DOUBTFUL, ids=[c[0] for c in DOUBTFUL])
def test_windows_1251_that_iso_8859_5_reads_as_words_is_flagged_doubtful(case: str, name: str, iso: str) -> None:
    ds = raw_header("ISO_IR 144", name.encode("cp1251"))
    choice = read_text_as(ds)
    assert choice == CharsetChoice("ISO_IR 144", "ISO_IR 144", "windows-doubtful")
    assert choice.flagged
    assert choice.flag == CHARACTER_SET_DOUBTFUL
    assert text_of(ds) == iso  # read as declared: either reading may be wrong, and the drafts say so
    assert "Windows code page 1251" in choice.sentence()
    assert "either reading may be wrong" in choice.sentence()
    assert audit_record(choice) == {"declared": "ISO_IR 144", "read_as": "ISO_IR 144", "because": "windows-doubtful"}
    assert recorded_choice([{"step": "header", "character_set": charset_record(choice)}]) == choice


GREEK_DOUBTFUL = [
    # Windows-1253 puts Ά at A2, where ISO 8859-7 has a right single quotation mark: both readings are words
    ("greek upper case", "ΆΓΓΕΛΟΣ^ΆΝΝΑ", "\u2019ΓΓΕΛΟΣ^\u2019ΝΝΑ"),  # noqa: RUF001 (Greek capitals)
    ("greek title case", "Άννα^Παπαδάκη", "\u2019ννα^Παπαδάκη"),  # noqa: RUF001
]


@pytest.mark.parametrize(("case", "name", "iso"), GREEK_DOUBTFUL, ids=[c[0] for c in GREEK_DOUBTFUL])
def test_windows_1253_that_iso_8859_7_reads_as_words_is_flagged_doubtful(case: str, name: str, iso: str) -> None:
    ds = raw_header("ISO_IR 126", name.encode("cp1253"))
    choice = read_text_as(ds)
    assert choice == CharsetChoice("ISO_IR 126", "ISO_IR 126", "windows-doubtful")
    assert choice.flag == CHARACTER_SET_DOUBTFUL
    assert text_of(ds) == iso
    assert "Windows code page 1253" in choice.sentence()


IN_NO_WORD_SHAPE = [
    # (whose name, (0008,0005), the page, the name): no byte the ISO set never writes, but its reading is no word
    ("slovak, Ľ is Latin-2's ź (mixed case)", "ISO_IR 101", "cp1250", "BEDĽOVÁ^ĽUBICA"),
    ("ukrainian, letters of no one alphabet", "ISO_IR 144", "cp1251", "Тульчин^Зоя"),
    ("russian, a soft sign after a vowel", "ISO_IR 144", "cp1251", "Ольга^Филипп"),
    ("ukrainian, a hard sign after a vowel", "ISO_IR 144", "cp1251", "КОВАЛЕНКО^НАДІЯ"),
]


@pytest.mark.parametrize(("case", "term", "page", "name"), IN_NO_WORD_SHAPE, ids=[c[0] for c in IN_NO_WORD_SHAPE])
def test_windows_text_whose_iso_reading_is_no_word_is_read_in_the_page(
    case: str, term: str, page: str, name: str
) -> None:
    ds = raw_header(term, name.encode(page))
    assert read_text_as(ds) == CharsetChoice(term, page, "windows-code-page")
    assert text_of(ds) == name


def test_genuine_iso_8859_5_words_are_read_as_declared_unflagged() -> None:
    """ISO 8859-5 ``ИВАНОВ`` holds B0-BF, which Windows-1251 reads as symbols (``°``): not doubtful."""
    for name in ("ИВАНОВ^ИВАН", "Иванов^Иван", "Петров^Сергей", "ШЕВЧЕНКО^БОГДАН"):
        ds = raw_header("ISO_IR 144", name.encode("iso8859_5"))
        assert read_text_as(ds) is None, name
        assert text_of(ds) == name


NEW_PAGES = [
    # (whose name, (0008,0005), the page, the name): each holds a byte the ISO set never writes
    ("arabic, qaf and feh (undefined in ISO 8859-6)", "ISO_IR 127", "cp1256", "قاسم^فريد"),
    ("arabic, kaf", "ISO 2022 IR 127", "cp1256", "كريم^علي"),
    ("persian, peh and gaf (80-9F)", "ISO_IR 127", "cp1256", "پرویز^گلشیری".replace("ی", "ي")),
    ("hebrew, geresh", "ISO_IR 138", "cp1255", "\u05d2\u05f3\u05d5\u05e8\u05d2\u05f3^כהן"),
    ("hebrew, curly quote", "ISO_IR 138", "cp1255", "“כהן”^דוד"),
    ("thai, curly quotes", "ISO_IR 166", "cp874", "“สมชาย”^ใจดี"),
    ("thai, en dash", "ISO_IR 166", "cp874", "ศรีสุข\u2013ใจดี^สมชาย"),
]


@pytest.mark.parametrize(("case", "term", "page", "name"), NEW_PAGES, ids=[c[0] for c in NEW_PAGES])
def test_windows_1255_1256_874_under_their_iso_term_are_read_in_the_page(
    case: str, term: str, page: str, name: str
) -> None:
    ds = raw_header(term, name.encode(page))
    choice = read_text_as(ds)
    assert choice == CharsetChoice(term, page, "windows-code-page")
    assert choice.flag == CHARACTER_SET_ASSUMED
    assert text_of(ds) == name
    assert f"read as {page} (Windows code page {page[2:]}:" in choice.sentence()


KEPT = [
    # (the ISO set's own text, or bytes that are not the page's script: read as declared, unflagged)
    ("arabic in ISO 8859-6", "ISO_IR 127", "قاسم^فريد".encode("iso8859_6")),
    ("hebrew in ISO 8859-8", "ISO_IR 138", "כהן^דוד".encode("iso8859_8")),
    ("thai in TIS 620", "ISO_IR 166", "สมชาย^ใจดี".encode("tis_620")),
    ("czech in Latin-2, š is Windows-1250's ą", "ISO_IR 101", "Hrušková^Božena".encode("iso8859_2")),
    ("slovak in Latin-2, Ľ is Windows-1250's Ą", "ISO_IR 101", "ĽUBOMÍR^Ľubica".encode("iso8859_2")),
    ("greek elision in ISO 8859-7 (flagged at most)", "ISO_IR 126", "Σ\u2019ΑΓΑΠΩ".encode("iso8859_7")),  # noqa: RUF001
]


@pytest.mark.parametrize(("case", "term", "data"), KEPT, ids=[c[0] for c in KEPT])
def test_the_iso_set_s_own_text_and_other_bytes_keep_the_declaration(case: str, term: str, data: bytes) -> None:
    ds = raw_header(term, data)
    choice = read_text_as(ds)
    assert choice is None or choice.because == "windows-doubtful"
    assert text_of(ds) == data.decode(python_encoding[term], "replace")


UNREADABLE = [
    # (bytes the ISO set leaves undefined or reads as a C1 control, that no code page reads as words of one script:
    # read as declared, flagged doubtful; they were read so unflagged)
    ("windows-1256 latin letters (é, E9) after an undefined byte", "ISO_IR 127", b"\xdd\xe9"),
    ("windows-1255 trade mark (99)", "ISO_IR 138", "כהן^דוד".encode("iso8859_8") + b"\x99"),
]


@pytest.mark.parametrize(("case", "term", "data"), UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_bytes_the_iso_set_cannot_read_keep_the_declaration_flagged_doubtful(case: str, term: str, data: bytes) -> None:
    ds = raw_header(term, data)
    choice = read_text_as(ds)
    assert choice == CharsetChoice(term, term, "code-page-doubtful")
    assert choice.flag == CHARACTER_SET_DOUBTFUL
    assert "the name may be wrong" in choice.sentence()
    assert text_of(ds) == data.decode(python_encoding[term], "replace")


_FIRST_HALF = "АБВГДЕЖЗИЙКЛМНОП"  # Windows-1251 C0-CF, which ISO 8859-5 reads as the alphabet's second half


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_property_windows_1251_under_iso_ir_144_is_read_right_or_flagged(data: Any) -> None:
    """A Russian-alphabet name in upper case or title case, written in Windows-1251 under ISO_IR 144: read as
    written (in the page) or read as declared and flagged doubtful, never read otherwise unflagged (before: every
    name of the alphabet's first half, which ISO 8859-5 reads as its second half, was)."""
    component = st.lists(st.sampled_from(_FIRST_HALF), min_size=2, max_size=9).map("".join)
    shape = data.draw(st.sampled_from([str.upper, str.title]))
    name = shape(data.draw(component)) + "^" + shape(data.draw(component))
    ds = raw_header("ISO_IR 144", name.encode("cp1251"))
    choice = read_text_as(ds)
    assert choice is not None, name
    assert choice.flagged
    if choice.because == "windows-code-page":
        assert text_of(ds) == name
    elif choice.because == "other-script-doubtful":
        # a run of five consonants drawn at random ('Бббгк'): no Cyrillic word, so another script's page that
        # reads the bytes as its words (Windows-1253 Greek) is taken, flagged doubtful
        assert choice.flag == CHARACTER_SET_DOUBTFUL
    else:
        assert choice == CharsetChoice("ISO_IR 144", "ISO_IR 144", "windows-doubtful"), (name, choice)
