"""Bytes that code pages of several scripts read as words: the likeliest script's reading, flagged doubtful.

DOS 866 Cyrillic under ``ISO_IR 100`` (or none) is Latin-1 C1 controls and box-drawing symbols; DOS 737 reads the same
bytes as Greek letters of a word's shape (``Иванов`` is ``Ιλιφχλ``), Windows-874 often as Thai ones (``железо`` is
``ฆฅซฅงฎ``). Pages of two scripts reading words was read as declared, flagged doubtful: the name was Latin-1
mojibake. Now each script's reading is weighed by the letter bigrams of its languages' words (shipped in
``dicom_charset_ngrams.json``, bench/charset_other_scripts.py ``--write-table``) and the likeliest, by more than
10 bits over every other script's, is read, flagged doubtful (``other-script-doubtful``); a closer call is read as
declared, flagged, as before. A Cyrillic abbreviation of three capitals without a vowel (``ГКБ``, a city hospital)
was no word's shape, so a name holding one was read as Greek (``ΓΚΑ^Θβΰνξβ``): it is weighed now, and read as
Cyrillic. bench/charset_other_scripts.py gives the figures.
"""

from __future__ import annotations

import pytest

from charset_support import raw_header, text_of
from radtrace.dicom_charset import CHARACTER_SET_DOUBTFUL, CharsetChoice, read_text_as

WEIGHED = [
    # (written, page, declared): pages of other scripts read words too; this page's reading is the likeliest
    ("КРАЙНИЙ", "cp866", "ISO_IR 100"),  # DOS 737 ΛΡΑΚΞΙΚ
    ("Корнилова", "cp866", "ISO_IR 100"),  # DOS 737 Λχωφρτχλι
    ("железо", "cp866", "ISO_IR 100"),  # DOS 737 οξτξπχ, Windows-874 ฆฅซฅงฎ
    ("Крайний^Иван", "cp866", None),
    ("ГКБ^Иванов", "cp1251", "ISO_IR 100"),  # Windows-1253 ΓΚΑ^Θβΰνξβ
    ("ГКБ^Иванов", "cp866", "ISO_IR 100"),  # DOS 737 ΔΛΒ^Ιλιφχλ
    ("ΔΙΆΚΟΥ", "cp1253", "ISO_IR 100"),  # ISO 8859-7 reads its Ά as a curly apostrophe
]


@pytest.mark.parametrize(("written", "page", "declared"), WEIGHED, ids=[f"{c[1]}-{c[0]}" for c in WEIGHED])
def test_the_likeliest_script_s_reading_is_read_flagged_doubtful(written: str, page: str, declared: str | None) -> None:
    ds = raw_header(declared, written.encode(page))
    choice = read_text_as(ds)
    assert choice == CharsetChoice(declared or "", page, "other-script-doubtful")
    assert choice.flag == CHARACTER_SET_DOUBTFUL
    assert text_of(ds) == written
    assert "either reading may be wrong" in choice.sentence()


@pytest.mark.parametrize("written", ["ГКБ Боткина", "ГКБ №1^Петров"])
def test_a_name_with_a_cyrillic_abbreviation_is_read_in_the_cyrillic_page(written: str) -> None:
    """No other script's page reads these as words (``№``, Windows-1251 B9, is Cyrillic's own sign): read in
    Windows-1251, flagged assumed; they were read as Latin-1, flagged doubtful."""
    ds = raw_header("ISO_IR 100", written.encode("cp1251"))
    assert read_text_as(ds) == CharsetChoice("ISO_IR 100", "cp1251", "other-script")
    assert text_of(ds) == written


def test_a_close_call_between_scripts_is_still_read_as_declared_and_flagged() -> None:
    """Windows-1255 ``כהן^דוד`` is Windows-1251 Cyrillic, Windows-1253 ``λδο^γεγ`` and DOS 720 Arabic words too,
    the Hebrew reading likelier by under 10 bits: no reading is offered, the flag says so."""
    data = "כהן^דוד".encode("cp1255")
    ds = raw_header("ISO_IR 100", data)
    assert read_text_as(ds) == CharsetChoice("ISO_IR 100", "ISO_IR 100", "code-page-doubtful")
    assert text_of(ds) == data.decode("latin-1")
