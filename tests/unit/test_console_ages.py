"""A patient's age as the console keeps it (a DICOM AS) and writes it ("64 y", "7 mo", "3 wk", "5 d", or nothing)."""

from __future__ import annotations

import re
from datetime import date

from hypothesis import example, given
from hypothesis import strategies as st

from radtrace.console.ages import shown_age
from radtrace.console.worklist_header import patient_age
from radtrace.dicom_age import age_from_dates, dicom_age

SHOWN: re.Pattern[str] = re.compile(r"(?:0|[1-9]\d{0,2}) (?:d|wk|mo|y)")
KEPT: re.Pattern[str] = re.compile(r"\d{3}[DWMY]")
TODAY = date(2026, 12, 6)


def test_a_header_age_is_written_in_one_form_and_a_malformed_one_never_as_sent() -> None:
    shown = {value: shown_age(value) for value in ("064Y", "58", "58Y", "007M", "003w", "005D", "000D", " 045Y ")}
    assert shown == {
        "064Y": "64 y", "58": "58 y", "58Y": "58 y", "007M": "7 mo", "003w": "3 wk", "005D": "5 d", "000D": "0 d",
        " 045Y ": "45 y",
    }  # fmt: skip
    for hostile in ("abc", "999Y", "131Y", "-5Y", "05\x1bY", "058Y\\060Y", "58 Y", "0058Y", "", "Y", "5.5Y", "٥٨"):
        assert dicom_age(hostile) is None, hostile
        assert shown_age(hostile) is None, hostile
    assert shown_age(None) is None


def test_an_age_from_the_dates_is_in_days_weeks_months_then_years() -> None:
    ages = [
        age_from_dates(born, "20260601", TODAY)
        for born in ("20260601", "20260519", "20260518", "20260402", "20260401", "20240602", "20240601", "19620101")
    ]
    assert ages == ["000D", "013D", "002W", "008W", "002M", "023M", "002Y", "064Y"]
    assert age_from_dates("19800229", "20260228", TODAY) == "045Y"  # a leap day's birthday comes on 1 March
    assert age_from_dates("19800229", "20260301", TODAY) == "046Y"
    for born, seen in [
        ("20260602", "20260601"),  # born after the study
        ("20270101", "20270601"),  # born after today
        ("18800101", "20260601"),  # past any life
        ("19620230", "20260601"),  # no such day
        ("1962-01-01", "20260601"),
        ("19620101", None),
    ]:
        assert age_from_dates(born, seen, TODAY) is None, (born, seen)


def test_a_worklist_row_keeps_the_headers_age_else_the_dates_one_else_none() -> None:
    assert patient_age({"PatientAge": "58", "PatientBirthDate": "19620101", "StudyDate": "20260601"}) == "058Y"
    assert patient_age({"PatientAge": "abc", "PatientBirthDate": "19620101", "StudyDate": "20260601"}) == "064Y"
    assert patient_age({"PatientAge": "abc"}) is None


_AS_LIKE = st.from_regex(r"\A[ 0-9\-+.]{0,5}[DWMYdwmy ]?\Z")
_DA_LIKE = st.one_of(
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(lambda d: d.strftime("%Y%m%d").zfill(8)),
    st.from_regex(r"\A\d{8}\Z"),
    st.text(max_size=10),
    st.none(),
)


@given(value=st.one_of(_AS_LIKE, st.text(max_size=12), st.none(), st.integers()))
@example(value="999Y")
@example(value="\x00\x1b")
def test_property_any_header_age_is_shown_in_an_allowed_shape_or_not_at_all(value: object) -> None:
    kept = dicom_age(value)
    assert kept is None or KEPT.fullmatch(kept)
    shown = shown_age(value)
    assert shown is None or SHOWN.fullmatch(shown), shown
    assert shown_age(kept) == shown  # a kept value reads back the same


@given(born=_DA_LIKE, seen=_DA_LIKE, today=st.dates())
def test_property_an_age_from_any_dates_is_kept_as_an_as_and_never_from_a_birth_to_come(
    born: str | None, seen: str | None, today: date
) -> None:
    kept = age_from_dates(born, seen, today)
    assert kept is None or KEPT.fullmatch(kept)
    shown = shown_age(kept)
    assert (shown is None) == (kept is None)
    assert shown is None or SHOWN.fullmatch(shown)
    if kept is not None:
        assert born is not None
        assert seen is not None
        assert born <= seen
        assert date(int(born[:4]), int(born[4:6]), int(born[6:])) <= today
