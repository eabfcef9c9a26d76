"""Helpers of tests/integration/test_withdrawn_predecessors.py and test_reassigned_filed_back.py: a demo-model site
that drops its drafts into a folder (the cheapest destination that makes the outbox hold them), a kept draft read back
strictly, its Predecessor Documents, what dsr2html (a viewer's rendering) shows of it, and dciodvfy's complaints."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pydicom

from radtrace.config import Settings
from radtrace.reporting.draft_store import drafts_root
from radtrace.store.engine import Store
from reassigned_support import demo_listener_settings
from tests_support import DICOMDIR_WARNING, PRIVATE_SCHEME_WARNING, dciodvfy_lines, dicom_tool


def dropping_settings(tmp_path: Path, store: Store, port: int) -> Settings:
    """The in-process listener on ``port`` (calling AE PACS), the demo model, drafts into ``tmp_path/drop``."""
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    return demo_listener_settings(tmp_path, store, port, console={"sync_interval_s": 0},
                                  dispatch={"file_drop_dir": drop})  # fmt: skip


def kept(settings: Settings, study_uid: str, revision: int, name: str = "sr.dcm") -> Path:
    return drafts_root(settings) / study_uid / str(revision) / name


def read_strict(path: Path) -> pydicom.Dataset:
    with pydicom.config.strict_reading():
        return pydicom.dcmread(path)


def predecessors(sr: pydicom.Dataset) -> list[str]:
    """The SOP Instance UIDs an SR names in its Predecessor Documents Sequence."""
    return [
        str(item.ReferencedSOPInstanceUID)
        for study in sr.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]


def predecessors_shown(path: Path) -> list[str]:
    """The SOP Instance UIDs dsr2html (a viewer rendering SR as HTML) links as "Predecessor Docs" of the SR at
    ``path``: what a reader is offered as the draft's earlier versions."""
    done = subprocess.run([dicom_tool("dsr2html"), str(path)], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    page = done.stdout.decode("utf-8")
    row = re.search(r"Predecessor Docs:</b></td>(.*?)</tr>", page, flags=re.S)
    return re.findall(r"composite=[0-9.]+\+([0-9.]+)", html.unescape(row.group(1))) if row else []


def dciodvfy_problems(path: Path) -> list[str]:
    """dciodvfy's errors and warnings on the file at ``path``, less the private coding scheme and DICOMDIR ones."""
    return [
        line
        for line in dciodvfy_lines(path)
        if "Error" in line or ("Warning" in line and not line.startswith((PRIVATE_SCHEME_WARNING, DICOMDIR_WARNING)))
    ]
