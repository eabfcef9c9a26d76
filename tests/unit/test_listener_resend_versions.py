"""A re-sent instance is compared with every held version, newest first (compare_child.compare_versions_in_child),
not only with the latest: version 1's content re-sent after a corrected version 2 matches version 1."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from radtrace.dicom_listener.compare_child import MAX_COMPARED_VERSIONS, compare_versions_in_child
from radtrace.dicom_listener.resend import Comparison, Likeness
from resend_support import held_film, resent

pytestmark = pytest.mark.unit

PIXELS = 50_000_000


@pytest.fixture(scope="module")
def nih(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("nih")
    held = held_film("nih", folder)
    return {
        "v1": held,
        "v2": resent(held, "patient-name-corrected", folder),
        "v1 again": resent(held, "jpeg-ls-lossless", folder),
    }


def test_version_1_re_sent_transcoded_after_version_2_matches_version_1(nih: dict[str, Path]) -> None:
    compared = compare_versions_in_child([(2, nih["v2"]), (1, nih["v1"])], nih["v1 again"], max_pixels=PIXELS)
    assert [(v, c.likeness) for v, c in compared.comparisons] == [(2, Likeness.CHANGED), (1, Likeness.SAME)]
    assert compared.comparisons[0][1].changed_attributes == ("(0010,0010)",)
    assert compared.match is not None
    assert compared.match[0] == 1
    payload = compared.payload()
    assert payload["content"] == "same content"
    assert (payload["matched_version"], payload["compared_versions"]) == (1, [2, 1])
    assert payload["content_reason"] == (
        "same content, re-sent as JPEG-LS Lossless Image Compression; the content of version 1, not of the latest, "
        "version 2: the latest is kept"
    )
    assert "Corrected" not in str(payload)


def test_the_latest_matching_stops_there(nih: dict[str, Path]) -> None:
    compared = compare_versions_in_child([(1, nih["v1"]), (0, nih["v2"])], nih["v1 again"], max_pixels=PIXELS)
    assert [(v, c.likeness) for v, c in compared.comparisons] == [(1, Likeness.SAME)]
    payload = compared.payload()
    assert (payload["matched_version"], payload["compared_versions"]) == (1, [1])
    assert payload["content_reason"] == "same content, re-sent as JPEG-LS Lossless Image Compression"


def test_no_version_matches_the_changes_are_the_latest_s_and_at_most_the_bound_are_compared(
    nih: dict[str, Path],
) -> None:
    held = [(10 - n, nih["v2"]) for n in range(MAX_COMPARED_VERSIONS + 2)]  # every one the corrected film
    compared = compare_versions_in_child(held, nih["v1 again"], max_pixels=PIXELS)
    assert [v for v, _ in compared.comparisons] == [10, 9, 8, 7][:MAX_COMPARED_VERSIONS]
    assert compared.match is None
    payload = compared.payload()
    assert payload["content"] == "changed"
    assert payload["changed_attributes"] == ["(0010,0010)"]
    assert "matched_version" not in payload
    assert payload["content_reason"] == (
        f"changed: (0010,0010) (compared with the latest {MAX_COMPARED_VERSIONS} of {len(held)} versions)"
    )


def test_an_unreadable_older_version_is_not_compared_and_the_next_one_still_is(
    nih: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "cut.dcm"
    broken.write_bytes(nih["v1"].read_bytes()[:-4096])  # its pixel data cut short: cannot be decoded
    held = [(3, nih["v2"]), (2, broken), (1, nih["v1"])]
    compared = compare_versions_in_child(held, nih["v1 again"], max_pixels=PIXELS)
    assert [(v, c.likeness) for v, c in compared.comparisons] == [
        (3, Likeness.CHANGED),
        (2, Likeness.NOT_COMPARED),
        (1, Likeness.SAME),
    ]


def test_a_child_that_dies_after_its_first_answer_keeps_that_verdict(
    nih: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a codec crashing on version 2: the child said version 3 changed, then died; version 2 is not compared."""
    said = Comparison(Likeness.CHANGED, "1.2", "1.2.4", changed_attributes=("(0010,0010)",), pixels_equal=True)
    answer = json.dumps(dataclasses.asdict(said))
    crashing = tmp_path / "python"
    crashing.write_text(f"#!/bin/sh\necho '{answer}'\nkill -SEGV $$\n")
    crashing.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crashing))
    compared = compare_versions_in_child([(3, nih["v2"]), (2, nih["v1"])], nih["v1 again"], max_pixels=PIXELS)
    assert [(v, c.likeness) for v, c in compared.comparisons] == [(3, Likeness.CHANGED), (2, Likeness.NOT_COMPARED)]
    assert compared.comparisons[1][1].problem == "the comparing process ended with signal 11"
    assert compared.match is None
    assert compared.payload()["changed_attributes"] == ["(0010,0010)"]
