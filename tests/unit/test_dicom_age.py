"""radtrace.dicom_age: the one reading of a header's Patient's Age that the console and the drafts share."""

from __future__ import annotations

import sys

from hypothesis import example, given
from hypothesis import strategies as st

from radtrace.dicom_age import _PADDING, read_age


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
