"""Whatever a reading records of the image it read (its view, its view flags), the drafts carry it validly.

The image line of every draft (RT-IMG: the SR's TEXT, the ORU's TX, FHIR's conclusion) names the image's view and
says its view flags, unknown flags as written. In production the view is a projection the view reader chose, but a
reading is also rebuilt from its recorded JSON (a revision, the console), which may have been edited: this is the
property over any text there, as test_reporting_text has for the model's own text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from drafts_readback_support import read_back
from radtrace.config import ReportingSettings
from radtrace.reporting import codes
from radtrace.reporting.draft_notes import image_notes
from radtrace.reporting.drafts import build_drafts
from radtrace.reporting.text import draft_text
from reporting_support import REAL_FILMS, SPECIAL_CHARACTERS, reading, shown

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 12, 6, 3, 30, tzinfo=UTC)
FILM = dcmread(REAL_FILMS / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm", stop_before_pixels=True)
text = st.lists(st.one_of(st.sampled_from([*SPECIAL_CHARACTERS, "x" * 70]), st.characters()), max_size=30).map(
    lambda chars: "".join(chars).encode("utf-8", "replace").decode("utf-8")  # JSON read back holds no surrogate
)


# No shrinking: each example runs dciodvfy; the falsifying example is printed as generated.
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(
    view=st.one_of(st.none(), text), flags=st.lists(st.one_of(st.sampled_from(["ap", "portable"]), text), max_size=3)
)
@example(view="PA\r\nOBX|9|TX|", flags=["\x00", "view\x85unknown", "\\E\\|^~&"])
@example(view="\u3000", flags=[" "])
def test_property_any_recorded_view_gives_three_valid_drafts_with_the_same_image_line(
    tmp_path: Path, view: str | None, flags: list[str]
) -> None:
    [image] = shown([FILM])
    images = (image.model_copy(update={"view": view, "view_flags": tuple(flags)}),)
    read = reading([FILM], images=images)
    files = build_drafts(read, [FILM], settings=ReportingSettings(), revision=1, created_at=WHEN)
    back = read_back(files, tmp_path)  # dciodvfy; hl7apy STRICT
    assert back.sr_errors == []
    said = draft_text(image_notes(read)).text  # the model text's rule, as the SR's
    key = codes.IMAGE_NOTES.value
    assert back.sr_texts.get(key, "").rstrip() == said.rstrip()  # TEXT drops trailing spaces
    assert back.oru_texts.get(key, "") == said
    report = back.fhir_report["conclusion"]
    assert not said.strip() or said.strip() in report
    json.dumps(back.fhir_report, ensure_ascii=False).encode("utf-8")
