"""The worklist's flags for a recorded reading of any shape: what it cannot read is passed over, never raised on.

The reading the worklist reads is the ``inference_completed`` audit payload, and a payload row can be edited in the
database (SQLite keeps anything; see ``audit_payload``). An image entry edited into something that is not an object
made ``reading_flags`` raise on its frontal-image line (``'str' object has no attribute 'get'``), and with it the
worklist's sync, for every user, for as long as the row stayed.
"""

from __future__ import annotations

from typing import Any

import pytest

from radtrace.console.worklist import reading_flags, recorded_frontal

pytestmark = pytest.mark.unit

FRONTAL: dict[str, Any] = {"role": "frontal", "view": "PA", "view_flags": [], "preparation": []}
LATERAL: dict[str, Any] = {"role": "lateral", "view": "LL", "view_flags": []}


def _reading(**changes: object) -> dict[str, object]:
    reading: dict[str, object] = {
        "flags": [],
        "images": [FRONTAL, LATERAL],
        "reasoning": [{"section": "lungs", "text": "Clear."}],
        "impression": "Normal.",
        "findings": [{"label": "No Finding", "status": "present"}],
    }
    reading.update(changes)
    return reading


#: (what an edit left, the flags the worklist raises for it)
EDITED: dict[str, tuple[dict[str, object], list[str]]] = {
    "an image entry that is a string, before the frontal one": (
        _reading(images=["edited", FRONTAL, LATERAL]),
        [],
    ),
    "an image entry that is a number, after it": (_reading(images=[FRONTAL, 7, None]), []),
    "an image entry that is a list": (_reading(images=[["role", "frontal"], FRONTAL]), []),
    "every image entry unreadable": (_reading(images=["edited", 3.5, None, []]), ["view-unknown"]),
    "images a string": (_reading(images="frontal PA"), ["view-unknown"]),
    "images an object": (_reading(images={"role": "frontal", "view": "PA"}), ["view-unknown"]),
    "images a number": (_reading(images=5), ["view-unknown"]),
    "view flags a number": (_reading(images=[{**FRONTAL, "view_flags": 5}]), []),
    "view flags a string": (_reading(images=[{**FRONTAL, "view_flags": "portable"}]), []),
    "view flags holding objects": (_reading(images=[{**FRONTAL, "view_flags": [{"ap": 1}, "ap"]}]), ["ap-portable"]),
    "a view that is not text": (_reading(images=[{**FRONTAL, "view": ["PA"]}]), ["view-unknown"]),
    "an SOP class that is not text": (_reading(images=[{**FRONTAL, "sop_class_uid": 1.2}]), []),
    "preparation a string": (_reading(images=[{**FRONTAL, "preparation": "inversion"}]), []),
    "flags a string": (_reading(flags="truncated"), []),
    "flags a number": (_reading(flags=3), []),
    "flags holding objects": (_reading(flags=["refused", {"x": 1}, None]), ["refused"]),
    "reasoning a string": (_reading(reasoning="Clear."), []),
    "reasoning steps that are not objects": (_reading(reasoning=["Clear.", None]), []),
    "a reasoning text that is not text": (_reading(reasoning=[{"section": "lungs", "text": 5}]), []),
    "an impression that is not text": (_reading(impression=["Normal."]), []),
    "findings that are not objects": (_reading(findings=["No Finding", 3]), []),
    "a finding label that is not text": (_reading(findings=[{"label": None, "status": "present"}]), []),
    "a control character is still found behind junk": (
        _reading(reasoning=[None, {"text": "bad \x00 byte"}], findings=[7]),
        ["text-sanitised"],
    ),
}


@pytest.mark.parametrize("case", list(EDITED))
def test_a_reading_edited_into_any_shape_gets_the_flags_of_what_can_be_read(case: str) -> None:
    reading, expected = EDITED[case]
    assert reading_flags(reading, None) == expected


def test_the_frontal_image_is_the_first_readable_one_named_frontal_else_the_first_readable_one() -> None:
    assert recorded_frontal(_reading(images=["edited", LATERAL, FRONTAL])) is FRONTAL
    assert recorded_frontal(_reading(images=[None, LATERAL])) is LATERAL
    assert recorded_frontal(_reading(images=["edited"])) == {}
    assert recorded_frontal({}) == {}
