"""radtrace.dicom_age: the one reading of a header's Patient's Age that the console and the drafts share."""

from __future__ import annotations

import sys

from hypothesis import example, given
from hypothesis import strategies as st

from radtrace.dicom_age import _PADDING, AgeQuantity, age_quantity, read_age


def test_padding_is_every_whitespace_character_and_nul() -> None:
    assert set(_PADDING) == {chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace()} | {"\x00"}


@given(value=st.text(alphabet=st.sampled_from("0589YyMmDdWw -.\\\t\n\x00\x1b\x85\xa0\u3000"), max_size=9))
@example(value="\u300058\t")
def test_property_a_value_reads_alike_whether_or_not_its_reader_stripped_it(value: str) -> None:
    """The console's worklist strips what pydicom gives (str.strip()); the drafts' header reader does not."""
    assert read_age(value.strip()).age == read_age(value).age


def test_no_value_and_several_values() -> None:
    assert read_age([]) == read_age(None) == read_age("") == read_age(" ")
    assert read_age(None).age is None
    assert not read_age(None).problem
    assert read_age(["058Y"]).age == "058Y"
    assert read_age(["058Y", ""]) == read_age(["1", "2"])
    assert read_age(["1", "2"]).age is None
    assert read_age(b"058Y").age is None  # undecoded bytes are no age


def test_a_written_age_is_a_quantity_in_ucum_units_of_time() -> None:
    assert age_quantity("058Y") == AgeQuantity(58, "a", "years")
    assert age_quantity("018M") == AgeQuantity(18, "mo", "months")
    assert age_quantity("003W") == AgeQuantity(3, "wk", "weeks")
    assert age_quantity("000D") == AgeQuantity(0, "d", "days")
    assert age_quantity("130Y") == AgeQuantity(130, "a", "years")


@given(value=st.one_of(st.text(alphabet=st.sampled_from("0158YyMmDdWw -\\\x00|^"), max_size=6), st.none()))
@example(value="58")
@example(value="58Y")
@example(value="058y")
@example(value="131Y")
@example(value=" 058Y")
def test_property_only_an_as_read_age_writes_is_a_quantity(value: str | None) -> None:
    """What read_age would write as it stands gives a quantity; anything else (the raw forms it reads leniently, what
    is no age) gives none, so no message carries a value the drafts did not write."""
    quantity = age_quantity(value)
    assert (quantity is not None) == (value is not None and read_age(value).age == value)
    if quantity is not None and value is not None:
        assert (quantity.value, quantity.ucum) == (int(value[:3]), {"D": "d", "W": "wk", "M": "mo", "Y": "a"}[value[3]])
