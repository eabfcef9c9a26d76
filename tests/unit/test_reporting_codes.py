"""The finding code table: every label coded, every code sourced, local codes valid and documented."""

from __future__ import annotations

import pytest

from radtrace.reporting import codes

pytestmark = pytest.mark.unit

CHEXPERT = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)  # fmt: skip


def test_every_chexpert_label_has_a_sourced_code_and_local_codes_say_why() -> None:
    for label in CHEXPERT:
        entry = codes.finding_code(label)
        assert entry.label == label
        assert entry.code.source
        assert 0 < len(entry.code.value) <= 16  # DICOM Code Value is SH
        assert len(entry.code.meaning) <= 64  # Code Meaning is LO
        if entry.is_local:
            assert entry.code.scheme == codes.LOCAL_SCHEME
            assert entry.note, f"{label}: a local code must say why no standard code was used"
    assert codes.CODE_TABLE_VERSION


def test_lookup_ignores_case_and_spacing_and_unknown_labels_get_stable_local_codes() -> None:
    assert codes.finding_code("  pleural effusion ").code.value == "60046008"
    unknown = codes.finding_code("Hiatus hernia (large)")
    assert unknown.is_local
    assert unknown.code.value == "RT-X-HIATUS-HERN"
    assert codes.finding_code("Hiatus hernia (large)") == unknown
    assert len(codes.reasoning_code("image quality").value) <= 16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("An endotracheal tube terminates 4 cm above the carina.", ["26412008"]),
        ("Right PICC line with its tip in the SVC.", ["52124006"]),
        ("Left chest tube; dual-lead pacemaker.", ["14106009", "112173"]),
        ("A nasogastric tube courses below the diaphragm.", ["83059008"]),
        (
            "ETT in place, right IJ central venous catheter and a left pleural drain.",
            ["26412008", "52124006", "112173"],
        ),
        ("No lines or tubes.", []),
        ("ETT in place, no central line. Chest tube removed.", ["26412008"]),
        ("No support devices.", []),
    ],
)
def test_device_types_named_in_the_reasoning_are_coded(text: str, expected: list[str]) -> None:
    assert sorted(code.value for code in codes.device_codes(text)) == sorted(expected)
