"""Text in another script's code page under a wrong or empty Specific Character Set: read in that page, or flagged.

Senders on Windows or DOS write their code page (Arabic Windows-1256 or DOS 720, Cyrillic 1251 or 866, Greek 1253 or
737, Hebrew 1255 or 862, Thai 874) and declare nothing, or a set of another script (the Latin-1 ``ISO_IR 100`` their
software hard-codes). They were read in the declared or assumed set: Latin-1 mojibake (``Èâàíîâ`` for ``Иванов``),
C1 controls for the DOS pages' bytes, U+FFFD where the set leaves a byte undefined; under a declaration, unflagged.
Now, where the declared or assumed set's reading is controls, undefined bytes or no words of its script, a page of
another script that reads the bytes as its words is taken, flagged (``other-script``; ``other-script-doubtful``
where another page of that script reads other words); where no page does, or pages of several scripts do, the text
is read as declared and flagged doubtful (``code-page-doubtful``). The declared set's own words are never read
otherwise.

Then the properties of every text path from a received header to an output (the console's name, the SR's PN, the
HL7 PID-5): any bytes under any declaration give no exception and no control character; a name in the set it
declares comes back as written.
"""

from __future__ import annotations

import io
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread, dcmwrite
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset

from charset_support import raw_header, text_of
from radtrace.console.names import person_name as console_name
from radtrace.console.names import shown_name, shown_name_text
from radtrace.dicom_charset import (
    CHARACTER_SET_ASSUMED,
    CHARACTER_SET_DOUBTFUL,
    CharsetChoice,
    read_text_as,
    without_charset_warnings,
)
from radtrace.reporting.draft_header import draft_header
from radtrace.reporting.hl7 import _person_names, unescape

NAMES = {
    "arabic": "محمد^العلي",
    "cyrillic": "Иванов^Пётр",
    "greek": "Παπαδόπουλος^Γιώργος",
    "hebrew": "כהן^דוד",
}
READ_IN_THE_PAGE = [
    # (script, page, declared): read as written, flagged assumed
    ("arabic", "cp720", None),
    ("arabic", "cp720", "ISO_IR 100"),
    ("arabic", "cp720", "ISO_IR 127"),
    ("cyrillic", "cp1251", None),
    ("cyrillic", "cp1251", "ISO_IR 100"),
    ("cyrillic", "cp1251", "ISO_IR 127"),
    ("cyrillic", "cp866", None),
    ("cyrillic", "cp866", "ISO_IR 100"),
    ("cyrillic", "cp866", "ISO_IR 144"),
    ("greek", "cp1253", None),
    ("greek", "cp1253", "ISO_IR 100"),
    ("greek", "cp737", None),
    ("greek", "cp737", "ISO_IR 126"),
    ("hebrew", "cp862", None),
    ("hebrew", "cp862", "ISO_IR 100"),
    ("hebrew", "cp862", "ISO_IR 138"),
]


@pytest.mark.parametrize(
    ("script", "page", "declared"), READ_IN_THE_PAGE, ids=[f"{c[1]}-{c[2]}" for c in READ_IN_THE_PAGE]
)
def test_another_script_s_code_page_is_read_in_it_and_flagged(script: str, page: str, declared: str | None) -> None:
    name = NAMES[script]
    ds = raw_header(declared, name.encode(page))
    choice = read_text_as(ds)
    assert choice == CharsetChoice(declared or "", page, "other-script")
    assert choice.flag == CHARACTER_SET_ASSUMED
    assert text_of(ds) == name
    assert "check the patient's name against the film" in choice.sentence()
    assert name not in choice.sentence()  # the sentence names no patient text


DOUBTFUL = [
    # (script, page, declared, what is read): flagged doubtful, either reading may be wrong
    ("arabic", "cp1256", None, NAMES["arabic"]),  # ISO 8859-6 reads the same bytes as other Arabic letters
    ("arabic", "cp1256", "ISO_IR 100", NAMES["arabic"]),
    ("arabic", "cp1256", "ISO_IR 144", NAMES["arabic"]),
    ("greek", "cp1253", "ISO_IR 144", NAMES["greek"]),  # Windows-1251 reads it as Cyrillic letters without a vowel
]


@pytest.mark.parametrize(("script", "page", "declared", "read"), DOUBTFUL, ids=[f"{c[1]}-{c[2]}" for c in DOUBTFUL])
def test_a_page_read_though_another_reads_other_words_is_flagged_doubtful(
    script: str, page: str, declared: str | None, read: str
) -> None:
    ds = raw_header(declared, NAMES[script].encode(page))
    choice = read_text_as(ds)
    assert choice == CharsetChoice(declared or "", page, "other-script-doubtful")
    assert choice.flag == CHARACTER_SET_DOUBTFUL
    assert text_of(ds) == read
    assert "either reading may be wrong" in choice.sentence()


def test_bytes_that_pages_of_two_scripts_read_as_words_are_read_as_declared_and_flagged_doubtful() -> None:
    """Windows-1255 ``כהן^דוד`` is Cyrillic words in Windows-1251 too: neither is taken, read as declared, flagged."""
    data = NAMES["hebrew"].encode("cp1255")
    ds = raw_header("ISO_IR 100", data)
    choice = read_text_as(ds)
    assert choice == CharsetChoice("ISO_IR 100", "ISO_IR 100", "code-page-doubtful")
    assert choice.flag == CHARACTER_SET_DOUBTFUL
    assert text_of(ds) == data.decode("latin-1")


GENUINE = [
    ("ISO_IR 100", "Müller^François"),
    ("ISO_IR 100", "GARCÍA LÓPEZ^Mª José"),
    ("ISO_IR 100", "Ångström^Åsa"),
    ("ISO_IR 100", "Ó Súilleabháin^Seán"),
    ("ISO_IR 144", "ГКБ^Иванов"),  # an abbreviation without a vowel
    ("ISO_IR 126", "ΠΑΠΑΔΟΠΟΥΛΟΣ^Γιώργος"),
    ("ISO_IR 127", "قاسم^فريد"),
    ("ISO_IR 138", "כהן^דוד"),
    ("ISO_IR 166", "สมชาย^ใจดี"),
]


@pytest.mark.parametrize(("term", "name"), GENUINE, ids=[c[1] for c in GENUINE])
def test_text_in_the_declared_set_is_never_read_in_another_script(term: str, name: str) -> None:
    ds = raw_header(term, name.encode(python_encoding[term]))
    choice = read_text_as(ds)
    assert choice is None or choice.because not in {"other-script", "other-script-doubtful", "code-page-doubtful"}
    assert text_of(ds) == name


# Properties of every text path to an output: the console's name (console.names), the SR's PN (reporting.draft_header
# under the SR's ISO_IR 192) and the HL7 ORU's PID-5 (reporting.hl7)

_TERMS = [None, "", "ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 126", "ISO_IR 127", "ISO_IR 138", "ISO_IR 144"]
_TERMS += ["ISO_IR 148", "ISO_IR 166", "ISO_IR 192", "ISO IR 100", "UTF8"]
_CONTROL = {"Cc"}


def _outputs(ds: Dataset) -> tuple[list[str], list[str], list[str]]:
    """(console names shown, SR PN values read back, HL7 PID-5 names unescaped) of the header ``ds``; the SR's list
    ends with the Study Description every draft carries (LO), when there is one."""
    ds.StudyInstanceUID = "1.2.3"
    draft = draft_header(ds)
    sr = Dataset()
    sr.SpecificCharacterSet = "ISO_IR 192"
    sr.PatientName = "\\".join(draft.patient_names)
    buffer = io.BytesIO()
    dcmwrite(buffer, sr, implicit_vr=False, little_endian=True)
    buffer.seek(0)
    back = dcmread(buffer, force=True).get("PatientName")
    sr_names = [str(name) for name in (back if isinstance(back, list | tuple) else [back] if back else [])]
    if draft.study_description:
        sr_names.append(draft.study_description)
    hl7_names = [unescape(name) for name in _person_names(draft)]
    console = [shown_name_text(name) for name in draft.source.patient_names]
    console += [str(shown_name(name)) for name in draft.source.patient_names]
    return console, sr_names, hl7_names


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    charset=st.sampled_from(_TERMS),
    name=st.binary(max_size=48),
    description=st.one_of(st.none(), st.binary(min_size=1, max_size=48)),
)
def test_property_any_bytes_under_any_declaration_reach_every_output_without_a_control(
    charset: str | None, name: bytes, description: bytes | None
) -> None:
    ds = raw_header(charset, name, description)
    with without_charset_warnings():
        read_text_as(ds)
        console, sr, hl7 = _outputs(ds)
    for text in (*console, *sr, *hl7):
        assert not any(unicodedata.category(char) in _CONTROL for char in text), (name, charset, text)


_SCRIPT_LETTERS = {
    "ISO_IR 100": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzÄÖÜäöüßÉÈéèçñÑÅåØøÆæ",
    "ISO_IR 144": "АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЭЮЯабвгдежзийклмнопрстуфхцчшщыьэюяё",
    "ISO_IR 126": "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩαβγδεζηθικλμνξοπρστυφχψωάέήίόύώς",
    "ISO_IR 127": "ءآأؤإئابةتثجحخدذرزسشصضطظعغفقكلمنهوىي",
    "ISO_IR 138": "אבגדהוזחטיכלמנסעפצקרשתךםןףץ",
    "ISO_IR 192": "AaÄäЖжΩωשא山田ドウ한국",
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(term=st.sampled_from(sorted(_SCRIPT_LETTERS)), data=st.data())
def test_property_a_name_in_the_set_it_declares_reaches_every_output_as_written(term: str, data: Any) -> None:
    """A name of the declared set's letters, written in that set (or UTF-8 under ISO_IR 192): the console shows it as
    written (family name first), the SR's PN and the HL7 PID-5 give it back, whatever the reading decided."""
    component = st.text(st.sampled_from(_SCRIPT_LETTERS[term]), min_size=1, max_size=10)
    written = f"{data.draw(component)}^{data.draw(component)}"
    ds = raw_header(term, written.encode(python_encoding[term]))
    with without_charset_warnings():
        choice = read_text_as(ds)
        console, sr, hl7 = _outputs(ds)
    if choice is not None and choice.because not in {"declared-doubtful", "windows-doubtful", "code-page-doubtful"}:
        return  # read otherwise, flagged (a coincidence of letters drawn at random): the other tests' concern
    family, given = written.split("^")
    assert console[0] == console_name(written) == f"{family}, {given}"
    assert sr == [written]
    assert hl7 == [written]


@pytest.mark.parametrize("word", ["أخرى", "أدنى^علي"])
def test_windows_1256_yeh_read_as_iso_8859_6_tanween_is_flagged_doubtful(word: str) -> None:
    """Windows-1256 ``ى`` and ``ي`` (EC, ED) are ISO 8859-6's dammatan and kasratan: ``أخرى`` reads ``أخرٌ``, a word's
    shape, so it was read as declared unflagged. Names are written without vowel marks: flagged doubtful now, read as
    declared (bench/charset_windows.py --held-out: Windows-1256 wrong and unflagged 218 -> 200 of 3,061, genuine
    ISO 8859-6 flagged unchanged, 98 of 2,681)."""
    data = word.encode("cp1256")
    ds = raw_header("ISO_IR 127", data)
    choice = read_text_as(ds)
    assert choice == CharsetChoice("ISO_IR 127", "ISO_IR 127", "windows-doubtful")
    assert choice.flag == CHARACTER_SET_DOUBTFUL
    assert text_of(ds) == data.decode("iso8859_6")


OWN_MODIFIERS = [
    ("ISO_IR 126", "\u037a^\u037a\u037a\u0386"),  # Greek ypogegrammeni (AA): no capital
    ("ISO_IR 126", "\u0391\u037a\u0392^\u0386\u03a1\u0397\u037a"),
    ("ISO_IR 127", "A^ءذذـ"),  # Arabic tatweel (E0)
    ("ISO_IR 127", "بـ^محمد"),
    ("ISO_IR 166", "ๆ^กก"),  # Thai mai yamok (E6)
]


@pytest.mark.parametrize(("term", "name"), OWN_MODIFIERS)
def test_a_name_with_its_set_s_own_modifier_letter_is_read_as_written(term: str, name: str) -> None:
    """The declared set's own modifier letters were no letters of a word's shape, so its own reading was no words
    and another script's page read the name, flagged but wrong: ISO 8859-7's ypogegrammeni is lower case with no
    capital (Windows-874 read three of them and ``Ά`` as Thai ``ช^ชชถ``), ISO 8859-6's tatweel (ISO 8859-5 read
    ``A^ءذذـ`` as Cyrillic). The hypothesis property
    test_charset_windows_pages.py::test_property_a_genuine_iso_name_is_never_read_in_the_page found both by chance
    (--hypothesis-seed=209 for the tatweel)."""
    ds = raw_header(term, name.encode(python_encoding[term]))
    assert read_text_as(ds) is None
    assert text_of(ds) == name
