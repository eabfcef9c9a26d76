"""Short words of another script's code page under ISO_IR 100, and DOS 866 words that Latin-1 reads as symbols.

A word of another script's page takes 4 letters to be read in that page (Latin-1 ``Ä`` alone in a German description
is Windows-1251's ``Д``). Shorter ones were read as Latin-1 with no flag even where that reading was no word:
Windows-1251 ``АДА`` is ``ÀÄÀ``, ``Шаг`` is ``Øàã`` (no language writes ``ø`` and ``ã``), Thai ``เก`` is ``à¡`` (a
symbol beside a letter). Now, where the Latin-1 reading is no word and a page reads words of two letters or more, it
is read as declared and flagged doubtful (``code-page-doubtful``); and likewise where the Latin-1 reading is two
letters past ASCII side by side (``âè`` is Windows-1251 ``ви``; among the measured Latin-1 words only Turkish
``üç``). DOS 866's lower-case letters of A0-AF are Latin-1's no-break space and symbols, and a reading without a
letter passed as words: ``железо`` was ``¦¥«¥§®`` unflagged; two such characters side by side are no word's now, so
it is flagged (DOS 866 reads it, and so do DOS 737 and Windows-874: doubtful). bench/charset_other_scripts.py gives
the figures; no Latin-1 word is read otherwise.
"""

from __future__ import annotations

import pytest
from pydicom.charset import python_encoding

from charset_support import raw_header, text_of
from radtrace.dicom_charset import CHARACTER_SET_DOUBTFUL, CharsetChoice, read_text_as

SHORT = [
    ("АДА", "cp1251"),  # ÀÄÀ: three letters past ASCII, no word's
    ("Шаг", "cp1251"),  # Øàã: letters of no one language
    ("ви", "cp1251"),  # âè: two letters past ASCII side by side
    ("Ли", "cp1251"),  # Ëè
    ("เก", "cp874"),  # à¡: a symbol beside a letter
    ("דל", "cp1255"),  # ãì
    ("سر", "cp1256"),  # ÓÑ
    ("ΘΑ", "cp1253"),  # ÈÁ
    ("жа", "cp866"),  # ¦ and a no-break space
]


@pytest.mark.parametrize(("word", "page"), SHORT, ids=[f"{c[1]}-{c[0]}" for c in SHORT])
def test_a_short_word_of_another_script_s_page_under_iso_ir_100_is_flagged_doubtful(word: str, page: str) -> None:
    data = word.encode(page)
    ds = raw_header("ISO_IR 100", data)
    choice = read_text_as(ds)
    assert choice == CharsetChoice("ISO_IR 100", "ISO_IR 100", "code-page-doubtful")
    assert choice.flag == CHARACTER_SET_DOUBTFUL
    assert text_of(ds) == data.decode("latin-1")  # read as declared: the flag says it may be wrong


@pytest.mark.parametrize("word", ["железо", "пеле", "алоапам", "бамбам^гогодала"])
def test_dos_866_lower_case_words_that_latin1_reads_as_symbols_are_flagged(word: str) -> None:
    """DOS 737 (Greek ``οξτξπχ``) and Windows-874 (Thai consonants) read the same bytes as words too: pages of
    several scripts, the DOS 866 reading the likeliest by far (tests/unit/test_charset_script_likelihood.py), so read
    in DOS 866 and flagged doubtful (it was read as declared, Latin-1 symbols)."""
    data = word.encode("cp866")
    ds = raw_header("ISO_IR 100", data)
    choice = read_text_as(ds)
    assert choice == CharsetChoice("ISO_IR 100", "cp866", "other-script-doubtful")
    assert text_of(ds) == word


# A value of symbols alone (no letter, no digit) in Latin-1 that a page reads as a one-letter word of its script, and
# Latin-1 readings of three letters past ASCII side by side beside an ASCII letter (a Latin homoglyph in a Cyrillic
# word) or of two symbols side by side: were read as Latin-1, unflagged
UNWORDED = [
    ("س", "cp720"),  # «
    ("в", "cp866"),  # ¢
    ("\u0430", "cp866"),  # Cyrillic a: a no-break space
    ("π", "cp737"),  # §
    ("ง", "cp874"),  # §
    ("МАКДОНАЛД" + "C", "cp1251"),  # ÌÀÊÄÎÍÀËÄC: a Latin C at the end
    ("A" + "ранска", "cp1251"),  # Aðàíñêà: a Latin A first
    ("C" + "еверноалтайский", "cp866"),  # C¥¢¥à­® «â ©áª¨©: a Latin C first
]


@pytest.mark.parametrize(("word", "page"), UNWORDED, ids=[f"{c[1]}-{c[0]}" for c in UNWORDED])
def test_symbols_alone_or_no_latin_word_s_letters_under_iso_ir_100_are_flagged_doubtful(word: str, page: str) -> None:
    data = word.encode(page)
    ds = raw_header("ISO_IR 100", data)
    assert read_text_as(ds) == CharsetChoice("ISO_IR 100", "ISO_IR 100", "code-page-doubtful")
    assert text_of(ds) == data.decode("latin-1")


GENUINE = [
    "à^Åsa",  # lone letters past ASCII: words
    "Ö^Å",
    "Mª^Nº",
    "ª",  # a lone ordinal (Windows-1251 Є): one letter is not enough to flag
    "Müller^Seán",
    "Hòa^Bé",
    "To³³Ba²¹",
    "Ó Súilleabháin",
    "René\xa0Marie^Zoë",  # a no-break space between words
    "45°C",
    "37°",  # a symbol after a digit
    "«\xa0THORAX\xa0»",  # guillemets inside no-break spaces: two symbols side by side
    "Guðþór^Küçük",  # three letters past ASCII side by side, in words
]


@pytest.mark.parametrize("name", GENUINE)
def test_latin1_words_under_iso_ir_100_are_read_as_written_unflagged(name: str) -> None:
    ds = raw_header("ISO_IR 100", name.encode("latin-1"))
    assert read_text_as(ds) is None
    assert text_of(ds) == name


@pytest.mark.parametrize(("term", "name"), [("ISO_IR 101", "Číž"), ("ISO_IR 101", "Đó"), ("ISO_IR 110", "Đã")])
def test_short_words_of_other_latin_sets_are_not_flagged(term: str, name: str) -> None:
    """The short-word flag is for Latin-1, which senders hard-code: Czech ``Číž`` and Vietnamese ``Đó`` in Latin-2
    (which pages of other scripts read as short words) were flagged doubtful by it, 20 of the measured Latin-2 and
    ISO 8859-4 words (bench/charset_windows.py: 1,143 -> 1,155 and 3,391 -> 3,399 flagged doubtful)."""
    ds = raw_header(term, name.encode(python_encoding[term]))
    assert read_text_as(ds) is None
    assert text_of(ds) == name


@pytest.mark.parametrize("word", ["ЦМРБанк", "ЮниКредит", "ФортеИнвест"])
def test_latin1_runs_of_three_letters_past_ascii_are_flagged_though_no_page_reads_words(word: str) -> None:
    """Windows-1251 abbreviations and run-together names read as Latin-1 runs of letters past ASCII (``ÖÌÐÁàíê``),
    in no measured Latin-1 word; their Cyrillic readings have no word's shape either (no vowel, a capital inside a
    run), so no page was taken and the Latin-1 reading went unflagged."""
    data = word.encode("cp1251")
    ds = raw_header("ISO_IR 100", data)
    assert read_text_as(ds) == CharsetChoice("ISO_IR 100", "ISO_IR 100", "code-page-doubtful")
    assert text_of(ds) == data.decode("latin-1")
