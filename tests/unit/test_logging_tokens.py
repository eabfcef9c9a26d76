""":func:`radtrace.logging.redacting` scrubs a study's registered values from log lines as whole tokens.

A value found inside a longer word is not the patient's: a name component 'DE' or 'LI' turned 'listener' into
'<redacted>stener' and a study key holding 'de' into garble, for as long as the study was handled. A token is a
run of letters, digits and '_' (digits joined by dots, as in a UID or a version, count as one); person name
components of 1-2 letters (Li, O, An) are real names and are redacted as tokens too, but only in capitals or as
registered: lower case 'an', 'no', 'do' are the words of the log line itself. Scripts written without spaces (Han,
kana, Hangul) are matched anywhere.
"""

from __future__ import annotations

import datetime
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from radtrace.logging import REDACTED, redact_text, redacting

pytestmark = pytest.mark.unit

# Identifiers use capitals A-M and digits; the words around them lower case n-z: no filler word can be a value.
_ID_LETTERS = "ABCDEFGHIJKLM"
_FILLER = st.text("nopqrstuvwxyz", min_size=1, max_size=9)
_SEPARATORS = st.sampled_from([" ", ", ", "; ", " (", ") ", ": ", " = ", " '", "' ", "/", " - ", "\t", ". ", "|"])
_COMPONENT = st.text(_ID_LETTERS, min_size=1, max_size=8)
_NAME = st.lists(_COMPONENT, min_size=1, max_size=4).map("^".join).filter(lambda name: len(name) >= 2)
_ID_PART = st.text(_ID_LETTERS + "0123456789", min_size=1, max_size=6)
_PATIENT_ID = (
    st.lists(_ID_PART, min_size=1, max_size=3)
    .flatmap(lambda parts: st.sampled_from(".-/").map(lambda joint: joint.join(parts)))
    .filter(lambda value: len(value) >= 3 and any(char.isalpha() for char in value))
)
_BIRTH = st.dates(datetime.date(1900, 1, 1), datetime.date(2025, 12, 31))


def _date_forms(day: datetime.date) -> list[str]:
    y, m, d = f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}"
    return [f"{y}{m}{d}", f"{y}-{m}-{d}", f"{y}/{m}/{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"]


def _spellings(component: str) -> list[str]:
    """How a line may write a name component that must be scrubbed."""
    if len(component) <= 2:
        return [component, component.upper(), component.capitalize()]
    return [component, component.upper(), component.lower(), component.title()]


def _words(text: str) -> set[str]:
    return {word.casefold() for word in re.findall(r"\w+", text)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_NAME, patient_id=_PATIENT_ID, birth=_BIRTH, data=st.data())
def test_a_registered_value_written_as_a_token_does_not_survive(
    name: str, patient_id: str, birth: datetime.date, data: st.DataObject
) -> None:
    birth_date = birth.strftime("%Y%m%d")
    components = name.split("^")
    pieces = [
        data.draw(st.sampled_from(_spellings(name))),
        *(data.draw(st.sampled_from(_spellings(component))) for component in components),
        patient_id,
        data.draw(st.sampled_from(_date_forms(birth))),
    ]
    pieces += data.draw(st.lists(_FILLER, max_size=6))
    order = data.draw(st.permutations(pieces))
    line = "".join(piece + data.draw(_SEPARATORS) for piece in order)

    with redacting(name, patient_id, birth_date):
        out = redact_text(line)

    scrubbed = {component.casefold() for component in components if len(component) >= 2}
    assert not scrubbed & _words(out), (line, out)
    assert patient_id not in out, (line, out)
    assert not any(form in out for form in _date_forms(birth)), (line, out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_NAME, patient_id=_PATIENT_ID, birth=_BIRTH, data=st.data())
def test_a_registered_value_only_inside_longer_words_leaves_the_line_unchanged(
    name: str, patient_id: str, birth: datetime.date, data: st.DataObject
) -> None:
    birth_date = birth.strftime("%Y%m%d")
    inside = [*name.split("^"), patient_id, *_date_forms(birth)]
    assume(not _words(patient_id) & _words(name))  # a name component as a token of the ID is one anywhere
    glue = st.text(_ID_LETTERS.lower() + "nopqrstuvwxyz0123456789_", min_size=1, max_size=3)
    pieces = [data.draw(glue) + value + data.draw(glue) for value in inside]
    pieces += data.draw(st.lists(_FILLER, max_size=6))
    line = "".join(piece + data.draw(_SEPARATORS) for piece in data.draw(st.permutations(pieces)))
    assume(REDACTED not in line)

    with redacting(name, patient_id, birth_date):
        assert redact_text(line) == line


@pytest.mark.parametrize(
    ("values", "line", "expected"),
    [
        (
            ("DE^ANNA", "LI^WEI"),
            "listener started; study de0a1b2c3d4e5f60 read",
            "listener started; study de0a1b2c3d4e5f60 read",
        ),
        (("LI^WEI",), "could not match Li Wei (LI^WEI)", "could not match <redacted> <redacted> (<redacted>)"),
        (("AN^JUNG",), "an error for AN JUNG", "an error for <redacted> <redacted>"),
        (("O^MIN",), "view O, O^MIN, Min O", "view O, <redacted>, <redacted> O"),
        (("12345",), "UID 1.2.840.12345.1 of 12345.", "UID 1.2.840.12345.1 of <redacted>."),
        (("19561103",), "born 1956-11-03, 03.11.1956, 11/03/1956", "born <redacted>, <redacted>, <redacted>"),
        (("VAN DER BERG^ANNE-MARIE",), "Marie van der Berg", "<redacted> <redacted>"),
        (("PID-8812734",), "PID-8812734 / MRN-PID-8812734x", "<redacted> / MRN-PID-8812734x"),
        (
            ("山田^太郎=やまだ^たろう", "김^민수"),
            "患者山田太郎 やまだたろう 김민수",
            "患者<redacted><redacted> <redacted><redacted> <redacted><redacted>",
        ),
        (("MÜLLER^HANS",), "Müller, Hans; müllerhans", "<redacted>, <redacted>; müllerhans"),
    ],
)
def test_examples(values: tuple[str, ...], line: str, expected: str) -> None:
    with redacting(*values):
        assert redact_text(line) == expected
