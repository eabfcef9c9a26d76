"""The profiles' parsers on realistic outputs in the models' style, and on anything at all (hypothesis)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radtrace.model.parsing import CHEXPERT_LABELS, MAX_REASONING_STEPS, canonical_label, findings_from, split_sections
from radtrace.model.profiles import get_profile
from radtrace.model.profiles.deepmedix_r1 import boxed_answer
from radtrace.model.reading import REASONING_SECTIONS, FindingStatus, ReadingFlag, SourceImage

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "model_outputs"
NV = get_profile("nv-reason-cxr")
DEEPMEDIX = get_profile("deepmedix-r1")
# A 2048 x 1680 source shown to the model at 504 x 420 (x scale 4, y scale ~4.06).
IMAGE = SourceImage(
    sop_instance_uid="1.2.826.0.1.3680043.8.498.1",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
    sha256="0" * 64,
    view="PA",
    rows=2048,
    columns=1680,
    model_rows=504,
    model_columns=420,
)
NV_SECTION_ORDER = [
    "image quality", "devices", "airways", "lungs", "pleura", "mediastinum", "hila", "heart", "abdomen", "bones",
    "summary",
]  # fmt: skip


def nv(name: str, **kwargs: bool):  # type: ignore[no-untyped-def]
    return NV.parse((FIXTURES / name).read_text(encoding="utf-8"), images=[IMAGE], **kwargs)


def statuses(parsed) -> dict[str, FindingStatus]:  # type: ignore[no-untyped-def]
    return {finding.label: finding.status for finding in parsed.findings}


def test_normal_study() -> None:
    parsed = nv("nv_normal.txt")
    assert parsed.flags == frozenset()
    assert parsed.answer_labels == ("No Finding",)
    assert [step.section for step in parsed.reasoning] == NV_SECTION_ORDER
    found = statuses(parsed)
    assert found.pop("No Finding") == FindingStatus.PRESENT
    assert set(found.values()) == {FindingStatus.ABSENT}
    assert {"Pneumothorax", "Pleural Effusion", "Cardiomegaly", "Fracture", "Support Devices"} <= set(found)
    assert parsed.impression == "Normal chest radiograph without acute cardiopulmonary abnormality."
    assert parsed.reasoning[-2].text.startswith("Bones: The visualized osseous structures are intact")


def test_multiple_findings() -> None:
    parsed = nv("nv_multiple_findings.txt")
    found = statuses(parsed)
    answered = {
        "Cardiomegaly", "Edema", "Pleural Effusion", "Consolidation", "Pneumonia", "Lung Opacity", "Atelectasis",
    }  # fmt: skip
    assert {label for label, status in found.items() if status == FindingStatus.PRESENT} == answered
    assert found["Pneumothorax"] == FindingStatus.ABSENT
    assert found["Fracture"] == FindingStatus.ABSENT
    assert found["Support Devices"] == FindingStatus.ABSENT  # "Devices: None."
    cardiomegaly = next(f for f in parsed.findings if f.label == "Cardiomegaly")
    assert cardiomegaly.evidence is not None
    assert "heart is enlarged" in cardiomegaly.evidence
    assert [f.label for f in parsed.findings] == [label for label in CHEXPERT_LABELS if label in found]


def test_hedged_findings_are_uncertain_and_the_differential_is_listed() -> None:
    parsed = nv("nv_hedged.txt")
    found = statuses(parsed)
    assert found["Lung Opacity"] == FindingStatus.PRESENT
    for label in ("Atelectasis", "Pneumonia", "Lung Lesion", "Pleural Effusion"):
        assert found[label] == FindingStatus.UNCERTAIN, label
    assert found["Pneumothorax"] == FindingStatus.ABSENT
    assert found["Support Devices"] == FindingStatus.ABSENT
    assert parsed.differential == ("atelectasis", "aspiration", "early pneumonia")


def test_support_devices() -> None:
    parsed = nv("nv_support_devices.txt")
    found = statuses(parsed)
    assert found["Support Devices"] == FindingStatus.PRESENT
    assert found["Pneumothorax"] == FindingStatus.ABSENT
    devices = next(step for step in parsed.reasoning if step.section == "devices")
    assert "endotracheal tube terminates 4 cm above the carina" in devices.text


def test_refusal_is_flagged_not_raised() -> None:
    parsed = nv("nv_refusal.txt")
    assert parsed.flags == {ReadingFlag.REFUSED}
    assert parsed.findings == ()
    tagged = NV.parse("<think>\n</think>\n<answer>Please provide a frontal chest X-ray image.</answer>", images=[IMAGE])
    assert tagged.flags == {ReadingFlag.REFUSED}


def test_truncated_trace_keeps_its_reasoning_but_claims_nothing_present() -> None:
    parsed = nv("nv_truncated.txt", hit_token_limit=True)
    assert parsed.flags == {ReadingFlag.TRUNCATED}
    assert parsed.answer_labels == ()
    assert [step.section for step in parsed.reasoning] == NV_SECTION_ORDER[:6]
    found = statuses(parsed)
    assert FindingStatus.PRESENT not in found.values()
    assert found["Lung Lesion"] == FindingStatus.UNCERTAIN
    assert found["Pneumothorax"] == FindingStatus.ABSENT


def test_answer_cut_off_mid_label_is_truncated_even_below_the_token_limit() -> None:
    parsed = nv("nv_truncated_in_answer.txt")
    assert parsed.flags == {ReadingFlag.TRUNCATED}
    assert parsed.answer_labels == ()  # "Pleu" must not become a label
    assert statuses(parsed)["Cardiomegaly"] == FindingStatus.UNCERTAIN


def test_garbage_is_unparsed() -> None:
    parsed = nv("nv_garbage.txt")
    assert parsed.flags == {ReadingFlag.UNPARSED}
    assert parsed.findings == ()
    assert parsed.reasoning == ()
    assert NV.parse("<think>x</think><answer> Foo, Bar </answer>", images=[IMAGE]).flags == {ReadingFlag.UNPARSED}


def test_non_ascii_text_survives_exactly() -> None:
    parsed = nv("nv_non_ascii.txt")
    assert parsed.flags == frozenset()
    lungs = next(step for step in parsed.reasoning if step.section == "lungs")
    assert "右下肺野に浸潤影。" in lungs.text
    assert "\u2248 3 \u00d7 2 cm" in lungs.text
    assert parsed.impression is not None
    assert "6\u20138 weeks" in parsed.impression
    assert statuses(parsed)["Lung Lesion"] == FindingStatus.UNCERTAIN  # "consolidation vs. mass"


def test_reasoning_without_headings_is_sectioned_by_content() -> None:
    parsed = nv("nv_no_headings.txt")
    sections = [step.section for step in parsed.reasoning]
    assert sections[:3] == ["image quality", "devices", "airways"]
    assert sections[-1] == "summary"
    assert statuses(parsed) == {
        "Atelectasis": FindingStatus.PRESENT,
        "Pleural Effusion": FindingStatus.PRESENT,
        "Support Devices": FindingStatus.ABSENT,
    }


def test_deepmedix_boxes_attach_to_their_findings_in_source_pixels() -> None:
    text = (FIXTURES / "deepmedix_boxes.txt").read_text(encoding="utf-8")
    parsed = DEEPMEDIX.parse(text, images=[IMAGE])
    assert parsed.answer_labels == ("Consolidation", "Atelectasis", "Pleural Effusion")
    boxes = {f.label: [(b.x_min, b.y_min, b.x_max, b.y_max) for b in f.boxes] for f in parsed.findings if f.boxes}
    sx, sy = 1680 / 420, 2048 / 504
    assert boxes["Consolidation"] == [pytest.approx((60 * sx, 300 * sy, 200 * sx, 420 * sy))]
    assert boxes["Atelectasis"] == [pytest.approx((300 * sx, 380 * sy, 1680.0, 460 * sy))]  # 430 * 4 clipped
    assert boxes["Pleural Effusion"] == [pytest.approx((380 * sx, 420 * sy, 1680.0, 480 * sy))]
    assert all(b.sop_instance_uid == IMAGE.sop_instance_uid for f in parsed.findings for b in f.boxes)
    assert statuses(parsed)["Cardiomegaly"] == FindingStatus.ABSENT


def test_deepmedix_without_think_tags_and_truncated() -> None:
    plain = DEEPMEDIX.parse((FIXTURES / "deepmedix_no_think_tags.txt").read_text(encoding="utf-8"), images=[IMAGE])
    lesion = next(f for f in plain.findings if f.label == "Lung Lesion")
    assert lesion.status == FindingStatus.PRESENT
    assert len(lesion.boxes) == 1
    assert statuses(plain)["Pleural Effusion"] == FindingStatus.ABSENT
    cut = DEEPMEDIX.parse((FIXTURES / "deepmedix_truncated.txt").read_text(encoding="utf-8"), images=[IMAGE])
    assert cut.flags == {ReadingFlag.TRUNCATED}
    assert statuses(cut) == {"Consolidation": FindingStatus.UNCERTAIN}


def test_deepmedix_keeps_labels_outside_chexpert() -> None:
    parsed = DEEPMEDIX.parse("<think>Hiatal hernia.</think> The answer is: \\boxed{Hiatal Hernia|Effusion}", images=[])
    assert [(f.label, f.status) for f in parsed.findings if f.status == FindingStatus.PRESENT] == [
        ("Pleural Effusion", FindingStatus.PRESENT),
        ("Hiatal Hernia", FindingStatus.PRESENT),
    ]


def test_boxed_answer_balances_braces() -> None:
    assert boxed_answer("x \\boxed{a|{b}} y") == "a|{b}"
    assert boxed_answer("\\boxed{unclosed") is None
    assert boxed_answer("no box") is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("Pleural Effusion", "Pleural Effusion"), (" **cardiomegaly** ", "Cardiomegaly"),
     ("effusion.", "Pleural Effusion"), ("No findings", "No Finding"), ("Pneumo", None)],
)  # fmt: skip
def test_canonical_labels(given: str, expected: str | None) -> None:
    assert canonical_label(given) == expected


# --- property tests: parsers never raise, whatever the text -------------------------------------

_PIECES = st.sampled_from(
    ["<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "}", "|", ", ", "[1, 2, 3, 4]", "[0, 0, 0, 0]",
     "[1e308, -1e308, 5, 5]", "Lungs:", "Heart:", "Summary:", "no ", "possible ", "effusion", "Cardiomegaly",
     "Please provide a frontal chest X-ray image.", "\n", ". ", "\x00", "\r\n", "右", "Differential:", "**"]
)  # fmt: skip
_TEXTS = st.one_of(st.text(max_size=400), st.lists(st.one_of(_PIECES, st.text(max_size=12)), max_size=40).map("".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS, limit=st.booleans())
def test_parsers_never_raise_and_stay_consistent(text: str, limit: bool) -> None:
    for profile in (NV, DEEPMEDIX):
        parsed = profile.parse(text, images=[IMAGE], hit_token_limit=limit)
        assert all(step.section in REASONING_SECTIONS for step in parsed.reasoning)
        if ReadingFlag.UNPARSED in parsed.flags or ReadingFlag.REFUSED in parsed.flags:
            assert all(f.status != FindingStatus.PRESENT or f.label in parsed.answer_labels for f in parsed.findings)
        if ReadingFlag.TRUNCATED in parsed.flags:
            assert FindingStatus.PRESENT not in {f.status for f in parsed.findings}
        for finding in parsed.findings:
            for box in finding.boxes:
                assert 0 <= box.x_min <= box.x_max <= IMAGE.columns
                assert 0 <= box.y_min <= box.y_max <= IMAGE.rows


@settings(max_examples=200, deadline=None)
@given(text=_TEXTS)
def test_sectioning_keeps_every_word_in_order(text: str) -> None:
    steps = split_sections(text)
    joined = " ".join(step.text for step in steps)
    assert joined.split() == text.split()


def test_text_alternating_headings_gives_a_bounded_number_of_steps_and_keeps_text_and_impression() -> None:
    """A server ignoring max_tokens could send a megabyte of 'Lungs: … Heart: …': 100,000 steps would cost the
    draft process minutes of SR building; past MAX_REASONING_STEPS the text goes into one step, none of it lost."""
    body = "".join(f"Lungs: clear {i}.\nHeart: normal {i}.\n" for i in range(30_000))
    text = f"<think>{body}Summary: No acute disease.\nBones: intact.</think><answer>No Finding</answer>"
    parsed = NV.parse(text, images=[IMAGE])
    assert len(parsed.reasoning) == MAX_REASONING_STEPS
    assert parsed.impression == "No acute disease."
    assert [step.section for step in parsed.reasoning[-2:]] == ["other", "summary"]
    kept = " ".join(step.text for step in parsed.reasoning)
    assert "Lungs: clear 29999." in kept
    assert "Bones: intact." in kept
    assert len(kept) >= len(body.replace("\n", " ").strip())


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("nv_*.txt")))
def test_no_fixture_trace_comes_near_the_step_limit(name: str) -> None:
    assert len(nv(name).reasoning) <= MAX_REASONING_STEPS // 2


def test_a_findings_evidence_is_its_whole_sentence_not_cut_at_a_decimal_point() -> None:
    """The evidence of a finding is the sentence naming it: "ratio above 0." was cut at the decimal point of 0.5 (found
    in the review console's trial; the FHIR note, the HL7 and SR text carried the cut sentence)."""
    reasoning = "Lungs are clear. Cardiomegaly, the cardiothoracic ratio above 0.5 on this PA view. No effusion."
    [finding] = [f for f in findings_from(["Cardiomegaly"], reasoning) if f.label == "Cardiomegaly"]
    assert finding.evidence == "Cardiomegaly, the cardiothoracic ratio above 0.5 on this PA view."
