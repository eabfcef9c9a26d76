"""``radtrace model read`` shows the model's text in a terminal: no control character of the model's reaches it.

rich escapes its markup but passes ESC, the C1 controls and the bidirectional controls through, so a model output
holding ``ESC ] 0 ; title BEL`` or ``ESC [ 2 J`` set the terminal's title or cleared the screen, and U+202E
turned the rest of a line around. Every text of the reading is now shown with its controls written ``\\xNN``
(radtrace.logging.escape, as log lines are), line breaks kept.
"""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from radtrace.model.presentation import reading_view
from radtrace.model.reading import Finding, FindingStatus, Reading, ReasoningStep
from reporting_support import SPECIAL_CHARACTERS, reading, source_study

pytestmark = pytest.mark.unit

SOURCES = source_study()
# Whatever a terminal acts on: C0 other than LF, DEL, C1, line/paragraph separators, bidirectional controls.
TERMINAL_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
model_text = st.lists(
    st.one_of(
        st.sampled_from([*SPECIAL_CHARACTERS, "\x1b]0;pwned\x07", "\x1b[2J", "\u202e", "[bold]x[/]"]),
        st.characters(codec="utf-8"),
    ),
    min_size=1,
    max_size=60,
).map(lambda chars: "".join(chars).encode("utf-8", "replace").decode("utf-8"))  # decoded output: no surrogate


def _shown(read: Reading) -> str:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None, force_terminal=False).print(reading_view(read))
    return out.getvalue()


def _hostile(text: str) -> Reading:
    return reading(
        SOURCES,
        impression=text,
        reasoning=(ReasoningStep(section="lungs", text=text + "\nsecond line"),),
        findings=[Finding(label="Atelectasis" + text, status=FindingStatus.PRESENT, evidence=text)],
    )


def test_an_escape_sequence_in_the_model_text_is_shown_not_sent() -> None:
    shown = _shown(_hostile("\x1b]0;pwned\x07 \x1b[2J \u202eevil"))
    assert "\x1b" not in shown
    assert "\\x1b]0;pwned\\x07" in shown
    assert "\\u202e" in shown
    assert "second line" in shown


@settings(max_examples=40, deadline=None)
@given(text=model_text)
def test_no_control_character_of_the_model_reaches_the_terminal(text: str) -> None:
    assert TERMINAL_CONTROL.findall(_shown(_hostile(text))) == []


def test_a_picture_that_looks_inverted_is_said_next_to_the_images() -> None:
    """model/polarity.py's flag reaches the person reading ``radtrace model read``, as does a Presentation LUT
    Shape that was not followed; before, both were only in the preparation steps (the audit's JSON)."""
    [image] = reading(SOURCES).images
    inversion = {
        "step": "inversion",
        "applied": True,
        "photometric": "MONOCHROME1",
        "polarity_check": {"verdict": "probably inverted", "score": -0.3},
        "suspected_inversion": "the picture looks like a negative (score -0.30): the Photometric Interpretation "
        "MONOCHROME1 may be wrong; shown as the header says",
        "contradiction": "Presentation LUT Shape IDENTITY with MONOCHROME1: the shape is not followed",
    }
    flagged = reading(SOURCES, images=(image.model_copy(update={"preparation": (inversion,), "role": "frontal"}),))
    shown = " ".join(_shown(flagged).split())
    assert "probably inverted" in shown
    assert "frontal: the picture looks like a negative (score -0.30)" in shown
    assert "frontal: Presentation LUT Shape IDENTITY with MONOCHROME1" in shown
    normal = {"step": "inversion", "applied": False, "polarity_check": {"verdict": "normal", "score": 0.4}}
    plain = reading(SOURCES, images=(image.model_copy(update={"preparation": (normal,)}),))
    assert "inverted" not in _shown(plain)
    assert "negative" not in _shown(plain)
