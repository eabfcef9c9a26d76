"""The assessment ORU (hl7.build_observation_oru: a radiologist's verdict, reasons and comments on a draft) carries any
text it is given: a message hl7apy STRICT parses back, each TX observation's text joined and unescaped exactly as
given (a lone surrogate as U+FFFD), each coded observation's meaning within its CWE. Its comments and the finding
labels it names come from a person and the model; the draft ORU had text properties (test_reporting_text), this
builder had examples only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from radtrace.config import ReportingSettings
from radtrace.reporting import codes
from radtrace.reporting.hl7 import Observation, build_observation_oru, observation_texts, unescape
from radtrace.reporting.text import without_lone_surrogates
from reporting_support import SPECIAL_CHARACTERS, source_study

pytestmark = pytest.mark.unit

SOURCE = source_study()[0]
WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
COMMENT = codes.local_code("RT-TEST-COMMENT", "Comment")
text = st.lists(st.one_of(st.sampled_from([*SPECIAL_CHARACTERS, "x" * 90]), st.characters()), max_size=60).map("".join)


def _leaf(element: object) -> str:
    while getattr(element, "children", None):
        element = element.children[0]  # type: ignore[attr-defined]
    value = element.value  # type: ignore[attr-defined]
    return str(getattr(value, "value", value))


def _obx(element: object) -> Iterator[object]:
    for child in element.children:  # type: ignore[attr-defined]
        if child.name == "OBX":
            yield child
        elif child.classname == "Group":
            yield from _obx(child)


# 12 generated: hl7apy STRICT builds and parses each message (about 0.4 s)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(comments=st.lists(text, min_size=1, max_size=3), label=text.filter(str.strip))
@example(comments=["\\E\\ a|b^c~d&e \x00\x1b\r\n\x85 胸水 \ue000 \ud800"], label="Nodule\x85|^")
def test_property_any_comment_and_label_give_a_strict_message_that_reads_back_as_given(
    comments: list[str], label: str
) -> None:
    items = [Observation("TX", COMMENT, comment, sub_id=str(n)) for n, comment in enumerate(comments, 1)]
    items.append(Observation("CWE", codes.finding_code(label).code, codes.PRESENT, sub_id="1"))
    message = build_observation_oru(
        SOURCE, items, settings=ReportingSettings(), control_id="RT1", notes=["Assessment"], created_at=WHEN
    )
    parsed = parse_message(message.text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    parsed.validate()
    segments = list(_obx(parsed))
    triples = ((_leaf(o.obx_3), _leaf(o.obx_4) if o.obx_4.children else "", unescape(_leaf(o.obx_5))) for o in segments)  # type: ignore[attr-defined]
    joined = observation_texts(triples)
    for n, comment in enumerate(comments, 1):
        # as given; a lone surrogate (no UTF-8 holds one) as U+FFFD
        assert joined.get((COMMENT.value, str(n)), "") == without_lone_surrogates(comment).text
    coded = [s.split("|") for s in message.text.split("\r") if s.startswith("OBX|") and "|CWE|" in s]
    [finding] = [fields for fields in coded if fields[4] == "1"]
    assert unescape(finding[3].split("^")[1]) == codes.finding_code(label).code.meaning
