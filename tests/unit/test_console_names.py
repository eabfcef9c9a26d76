"""How the console writes a patient name's characters (radtrace.console.names.shown_name, shown_name_text): the
bidirectional embeddings, overrides and isolates and every other character with no place in a name as visible
escapes, the zero-width (non-)joiner and the directional marks kept, the rest HTML-escaped. The family-first order
is checked in test_console_person_name_order; the browser's drawing in tests/e2e/test_console_identifiers_browser.py.
"""

from __future__ import annotations

import pytest

from radtrace.console.names import KEPT_IN_NAMES, person_name, shown_name, shown_name_text

pytestmark = pytest.mark.unit

RLO, PDF = "\u202e", "\u202c"
ZWNJ, ZWJ, LRM, RLM, ALM = "\u200c", "\u200d", "\u200e", "\u200f", "\u061c"
#: The Persian family name Alizadeh (with a zero-width non-joiner after Ali) and the given name Mahsa.
ALIZADEH_MAHSA = f"\u0639\u0644\u06cc{ZWNJ}\u0632\u0627\u062f\u0647^\u0645\u0647\u0633\u0627"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        # an override up to a pop would draw DOE, IVAN: another patient's name
        (f"DOE^{RLO}NAVI{PDF}", "DOE, ⟨U+202E⟩NAVI⟨U+202C⟩"),
        ("A\u202aB\u202bC\u202dD^E", "A⟨U+202A⟩B⟨U+202B⟩C⟨U+202D⟩D, E"),  # embeddings, LTR override
        ("\u2066X\u2069^\u2067Y\u2068", "⟨U+2066⟩X⟨U+2069⟩, ⟨U+2067⟩Y⟨U+2068⟩"),  # isolates
        ("DOE\x07\x1b^J\x85\x9bO", "DOE⟨U+0007⟩⟨U+001B⟩, J⟨U+0085⟩⟨U+009B⟩O"),  # C0 and C1 controls
        (
            "DO\u200bE\u00ad\ufeff\u2060^J\u2028\ue000\udcff\U000e0041",
            "DO⟨U+200B⟩E⟨U+00AD⟩⟨U+FEFF⟩⟨U+2060⟩, J⟨U+2028⟩⟨U+E000⟩⟨U+DCFF⟩⟨U+E0041⟩",
        ),  # zero-width space, soft hyphen, BOM, line separator, private use, surrogate, tag
        ("\u0378DOE^JOHN", "⟨U+0378⟩DOE, JOHN"),  # unassigned
    ],
)
def test_characters_with_no_place_in_a_name_are_escaped(value: str, shown: str) -> None:
    assert shown_name_text(value) == shown


@pytest.mark.parametrize(
    "value",
    [
        ALIZADEH_MAHSA,
        f"\u05db\u05d4\u05df{RLM}^J.{LRM}",  # Hebrew family name, a Latin initial placed by marks
        f"\u0639\u0644\u064a{ALM}^\u0639\u0645\u0631",
        f"\u0915\u094d{ZWJ}\u0937^\u0930\u093e\u092e",  # Devanagari with a zero-width joiner
        "Müller^Jörg=ミュラー^ヨルク",
        "M\ufffdLLER^J",  # a byte the charset could not decode: visible, shown as it is
    ],
)
def test_names_spelt_with_joiners_and_marks_are_kept_as_written(value: str) -> None:
    assert shown_name_text(value) == person_name(value)
    assert str(shown_name(value)) == person_name(value)  # no markup: nothing to escape


def test_only_the_joiners_marks_and_mongolian_vowel_separator_are_kept() -> None:
    assert {f"U+{ord(c):04X}" for c in KEPT_IN_NAMES} == {"U+200C", "U+200D", "U+200E", "U+200F", "U+061C", "U+180E"}
    assert shown_name_text("\u1824\u180e\u1820^X") == "\u1824\u180e\u1820, X"


def test_the_html_is_escaped_and_each_escape_is_marked_and_named() -> None:
    assert str(shown_name(f"<b>EVIL</b>^{RLO}NAVI&{PDF}")) == (
        '&lt;b&gt;EVIL&lt;/b&gt;, <span class="control" title="invisible character: right-to-left override">'
        "⟨U+202E⟩</span>NAVI&amp;"
        '<span class="control" title="invisible character: pop directional formatting">⟨U+202C⟩</span>'
    )
    assert str(shown_name(None)) == shown_name_text(None) == "(no name)"
    assert shown_name_text(RLO) == "⟨U+202E⟩"  # a name that is only a control is not "(no name)": it is shown
    assert shown_name_text(f"^^{RLO}") == "(no family name), ⟨U+202E⟩"
