"""The HL7 application and facility names and the institution name are checked when the settings load.

Before, ``reporting.sending_facility = "St Mary's General Hospital Radiology Dept"`` (41 characters) loaded, and
every HL7 draft then failed to build (hl7apy: MSH-4's namespace ID is at most 20), so every study failed at
drafting, at night, long after the setting was changed. Now a value no draft can carry is refused at load with the
setting named (``radtrace config show`` and every service exit 2), and every value that loads builds drafts whose
MSH-3..6 carry it unchanged, HL7 delimiters escaped and read back (property test).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from radtrace.config import ReportingSettings
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.hl7 import unescape
from reporting_support import reading, source_study
from tests_support import radtrace

pytestmark = pytest.mark.unit

SOURCES = source_study()
WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
FIELDS = ("sending_application", "sending_facility", "receiving_application", "receiving_facility")


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("St Mary's General Hospital Radiology Dept", "at most 20 characters"),
        ("RADIOLOGY|NORTH|WING", "not 24"),  # 20 characters, but each | is written \F\
        ("RIS\rMSH", "control characters"),
        ("RIS\x1b[2J", "control characters"),
        (" ", "only spaces"),  # found by the property test below: the message carried it empty
        ("   ", "only spaces"),
    ],
)
def test_an_hl7_identity_no_message_carries_is_refused_naming_the_setting(field: str, value: str, reason: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ReportingSettings(**{field: value})
    [error] = refused.value.errors()
    assert error["loc"] == (field,)
    assert reason in error["msg"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("x" * 65, "at most 64 bytes"),
        ("山" * 22, "not 66"),  # 22 characters, 66 bytes as the SR writes them
        ("Radiology\\North", "backslash"),
        ("St Mary's\nRadiology", "control"),
    ],
)
def test_an_institution_name_no_sr_can_carry_is_refused(value: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        ReportingSettings(institution_name=value)


_NAMESPACE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")) | st.sampled_from("|^~\\&"),
    max_size=20,
).filter(
    lambda value: (
        value.isprintable()
        and not (value and value.isspace())
        and len(value) + 2 * sum(map(value.count, "|^~\\&")) <= 20
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.tuples(_NAMESPACE, _NAMESPACE, _NAMESPACE, _NAMESPACE))
def test_every_hl7_identity_the_settings_accept_builds_a_message_that_carries_it(names: tuple[str, ...]) -> None:
    reporting = ReportingSettings(**dict(zip(FIELDS, names, strict=True)))
    sources = [copy.deepcopy(ds) for ds in SOURCES]
    files = build_drafts(reading(sources), sources, settings=reporting, revision=1, created_at=WHEN)
    text = files.hl7.decode("utf-8")
    parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True).validate()
    msh = text.split("\r")[0].split("|")
    assert [unescape(field) for field in msh[2:6]] == list(names)


def test_the_cli_names_the_setting_and_exits_2(tmp_path: Path) -> None:
    env = {"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_REPORTING__SENDING_FACILITY": "x" * 21}
    done = radtrace("config", "show", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sending_facility" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
