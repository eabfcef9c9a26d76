"""A site's rule for the character set one sender's text is really in (``listener.sender_character_sets``).

A modality that declares ISO_IR 127 and writes Windows-1256 sends ``اردو`` whose ISO 8859-6 reading is the other
real word ``اردن``: the guesser reads it so, unflagged (a pair of real words). With the site's rule for that calling
AE the text is read in Windows-1256, nothing guessed nor flagged, and the choice names the rule; another AE, another
declaration, or text that the rule's set cannot decode is read as before.
"""

from __future__ import annotations

import pytest
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from radtrace.config import load_settings
from radtrace.dicom_charset import SITE_RULE, CharsetChoice, SiteCharset, charset_record, read_text_as, recorded_choice
from radtrace.errors import ConfigError
from radtrace.sender_charset import sender_rules

NAME = "اردو"  # Urdu; its Windows-1256 bytes read as ISO 8859-6 are اردن (Jordan)
RULE = SiteCharset(rule="listener.sender_character_sets[0]", declared="ISO_IR 127", actual="cp1256")


def _header(name: bytes, charset: str | None) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.add(RawDataElement(0x00080005, "CS", len(charset), charset.encode(), 0, False, True))
    ds.add(RawDataElement(0x00100010, "PN", len(name), name, 0, False, True))
    ds.set_original_encoding(False, True, convert_encodings(charset or "ISO_IR 100"))  # as a file read sets it
    return ds


def test_without_a_rule_the_guess_reads_the_other_word_unflagged() -> None:
    ds = _header(NAME.encode("cp1256"), "ISO_IR 127")
    assert read_text_as(ds) is None
    assert str(ds.PatientName) == "اردن"


def test_the_sender_s_rule_reads_the_name_in_its_set_unflagged_and_names_the_rule() -> None:
    ds = _header(NAME.encode("cp1256"), "ISO_IR 127")
    choice = read_text_as(ds, site=[RULE])
    assert str(ds.PatientName) == NAME
    assert choice == CharsetChoice("ISO_IR 127", "cp1256", SITE_RULE, "listener.sender_character_sets[0]")
    assert choice is not None
    assert not choice.flagged
    assert choice.recorded
    record = charset_record(choice)
    assert record == {
        "declared": "ISO_IR 127",
        "read_as": "cp1256",
        "because": SITE_RULE,
        "rule": "listener.sender_character_sets[0]",
    }
    assert recorded_choice([{"step": "header", "character_set": record}]) == choice
    assert "listener.sender_character_sets[0]" in choice.sentence()


def test_a_rule_for_another_declaration_does_not_apply_and_one_for_any_applies_to_none_declared() -> None:
    other = _header(NAME.encode("cp1256"), "ISO_IR 100")
    assert read_text_as(other, site=[RULE]) != CharsetChoice("ISO_IR 100", "cp1256", SITE_RULE, RULE.rule)
    undeclared = _header(NAME.encode("cp1256"), None)
    any_declaration = SiteCharset(rule="listener.sender_character_sets[1]", declared=None, actual="cp1256")
    choice = read_text_as(undeclared, site=[RULE, any_declaration])
    assert choice is not None
    assert (choice.because, choice.rule) == (SITE_RULE, any_declaration.rule)
    assert str(undeclared.PatientName) == NAME


def test_text_the_rule_s_set_cannot_decode_is_read_as_before() -> None:
    utf8 = SiteCharset(rule="listener.sender_character_sets[0]", declared=None, actual="ISO_IR 192")
    ds = _header(NAME.encode("cp1256"), "ISO_IR 127")
    assert read_text_as(ds, site=[utf8]) is None
    assert str(ds.PatientName) == "اردن"


def test_ascii_text_needs_no_rule() -> None:
    ds = _header(b"DOE^JOHN", "ISO_IR 127")
    assert read_text_as(ds, site=[RULE]) is None
    assert str(ds.PatientName) == "DOE^JOHN"


def test_the_rules_are_picked_by_calling_ae_and_named_by_their_place() -> None:
    listener = load_settings(
        listener={
            "sender_character_sets": [
                {"ae_title": "CT_1", "actual": "cp1251"},
                {"ae_title": "CR_ROOM_3", "declared": "ISO_IR 127", "actual": "cp1256"},
            ]
        }
    ).listener
    assert sender_rules(listener, "CR_ROOM_3") == (
        SiteCharset(rule="listener.sender_character_sets[1]", declared="ISO_IR 127", actual="cp1256"),
    )
    assert sender_rules(listener, "OTHER") == ()
    assert sender_rules(listener, None) == ()


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"ae_title": "CR_ROOM_3", "actual": "cp9999"}, "not 'cp9999'"),
        ({"ae_title": "CR_ROOM_3", "actual": "ISO 2022 IR 127"}, "without code extensions"),
        ({"ae_title": "CR_ROOM_3", "actual": "ISO_IR 6"}, "other than ASCII"),
        ({"ae_title": "CR_ROOM_3", "declared": "iso_ir 127", "actual": "cp1256"}, "Specific Character Set value"),
        ({"ae_title": "", "actual": "cp1256"}, "printable ASCII"),
    ],
)
def test_a_rule_that_cannot_apply_is_refused_at_start_naming_the_setting(rule: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(listener={"sender_character_sets": [rule]})
    assert "listener.sender_character_sets.0" in str(raised.value)
    assert problem in str(raised.value)


def test_a_repeated_rule_is_refused_at_start() -> None:
    rule = {"ae_title": "CR_ROOM_3", "declared": "ISO_IR 127", "actual": "cp1256"}
    with pytest.raises(ConfigError, match=r"listener\.sender_character_sets.*rule 1 repeats"):
        load_settings(listener={"sender_character_sets": [rule, rule | {"actual": "cp1252"}]})


# A DOS-era modality's name in each DOS code page, declared ISO_IR 100 (hard-coded Latin-1): read as C1 controls
# (Cyrillic, Greek capitals at 80-9F) or other letters by the guess, flagged at best
DOS_NAMES = {"cp866": "ПЕТРОВ^ИВАН", "cp737": "ΠΑΠΑΔΟΠΟΥΛΟΣ^ΓΙΩΡΓΟΣ", "cp720": "الحسيني^محمد", "cp862": "כהן^משה"}


@pytest.mark.parametrize("page", sorted(DOS_NAMES))
def test_a_dos_code_page_can_be_named_for_a_sender_and_reads_its_name_unflagged(page: str) -> None:
    """cp866, cp720, cp737 and cp862 were refused at start ("not 'cp866'"): a site whose DOS-era modality writes
    one could not say so, and its names were read as Latin-1 controls or another page's letters."""
    listener = load_settings(
        listener={"sender_character_sets": [{"ae_title": "DOS_CR", "declared": "ISO_IR 100", "actual": page}]}
    ).listener
    [rule] = sender_rules(listener, "DOS_CR")
    assert rule == SiteCharset(rule="listener.sender_character_sets[0]", declared="ISO_IR 100", actual=page)
    name = DOS_NAMES[page]
    guessed = _header(name.encode(page), "ISO_IR 100")
    without = read_text_as(guessed)  # the guess: another reading, or the name flagged
    assert str(guessed.PatientName) != name or (without is not None and without.flagged)
    ds = _header(name.encode(page), "ISO_IR 100")
    choice = read_text_as(ds, site=[rule])
    assert str(ds.PatientName) == name
    assert choice == CharsetChoice("ISO_IR 100", page, SITE_RULE, "listener.sender_character_sets[0]")
    assert not choice.flagged
    assert charset_record(choice) == {
        "declared": "ISO_IR 100",
        "read_as": page,
        "because": SITE_RULE,
        "rule": "listener.sender_character_sets[0]",
    }


def test_a_refused_page_s_message_names_the_dos_pages_too() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(listener={"sender_character_sets": [{"ae_title": "DOS_CR", "actual": "cp437"}]})
    assert "not 'cp437'" in str(raised.value)
    assert "cp866" in str(raised.value)
    assert "cp1256" in str(raised.value)
