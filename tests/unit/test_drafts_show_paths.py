"""`radtrace drafts show` prints the draft's UIDs and file paths so that each can be copied whole, at any terminal
width (80 columns when piped): folded, a path was copied back broken."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from radtrace.cli.studies import print_draft
from radtrace.reporting.draft_store import DraftView

pytestmark = pytest.mark.unit

UID = "1.2.826.0.1.3680043.8.498.30240467858403692562383251263540651235"


@pytest.mark.parametrize("width", [60, 80, 200])
def test_every_draft_file_path_is_printed_whole_on_its_own_line(width: int) -> None:
    folder = Path("/var/lib/radtrace/drafts") / UID / "1"
    files = {name: folder / name for name in ("sr.dcm", "companion.dcm", "oru.hl7", "report.fhir.json")}
    view = DraftView(
        study_uid=UID, revision=1, sr_sop_instance_uid=UID, accession=None, content_datetime=None, completion=None,
        verification=None, observer=None, findings=(), notices=(), impression=None, reasoning=(), files=files,
    )  # fmt: skip
    buffer = io.StringIO()
    print_draft(Console(file=buffer, width=width, color_system=None), view)
    lines = [line.strip() for line in buffer.getvalue().splitlines()]
    for path in files.values():
        assert str(path) in lines, buffer.getvalue()
    assert f"Draft report: study {UID}, revision 1" in lines
    assert any(f"SR {UID} ·" in line for line in lines)
