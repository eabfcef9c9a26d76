"""The ablation harness: a variant through the real listener path, study completion and the real StudyPipeline,
in process (no network per variant), and its outputs checked.

:class:`AblationHarness` holds one SQLite store, spool and tiny-model pipeline for many variants (each variant has
UIDs of its own). :meth:`AblationHarness.run` sends a variant's instances through the checks the C-STORE handler
makes at receipt (``read_header`` with its inflation limit, then ``pixel_budget.check_file``: the instance's size,
the image's size, the codestream against the header, a JPEG no decoder here reads) and ``record_instance`` (the
handler's recording: spool, rows, audit event), completes the study
(``complete_due``: routing, queued or skipped) and processes the revision with :class:`StudyPipeline`. The
outcome is exactly one of: ``draft`` (then the SR is run through dciodvfy and the HL7 parsed back with hl7apy
and python-hl7), ``skipped``, ``refused`` or ``failed``/``unexpected`` (which the tests forbid).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import hl7
from hl7apy.parser import parse_message
from pydicom.dataset import Dataset

from radtrace.audit.events import Actor
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings, load_settings
from radtrace.dicom_listener.completion import complete_due
from radtrace.dicom_listener.filtering import FilterRule
from radtrace.dicom_listener.headers import read_header
from radtrace.dicom_listener.ingest import record_instance
from radtrace.dicom_listener.pixel_budget import check_file, instance_byte_limit
from radtrace.dicom_listener.spool import Spool
from radtrace.errors import DicomInputError
from radtrace.model.reader import StudyReader
from radtrace.reporting.draft_store import DRAFT_FILES, drafts_root
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.worker.pipeline import ProcessResult, Result, StudyPipeline

__all__ = ["AblationHarness", "Outcome", "Tally"]

Kind = Literal["draft", "skipped", "refused", "failed", "unexpected"]
_NAMES_ELEMENT = re.compile(r"^\([0-9A-F]{4},[0-9A-F]{4}\) \S.*: \S")


@dataclass
class Outcome:
    """What became of one variant: its kind, and the reason, status comment or output problems."""

    kind: Kind
    detail: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass
class Tally:
    """Counts per outcome kind, and the variants that were not acceptable."""

    run: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)

    def add(self, name: str, outcome: Outcome) -> None:
        self.run += 1
        self.counts[outcome.kind] = self.counts.get(outcome.kind, 0) + 1
        reasonless = outcome.kind in ("skipped", "refused") and not outcome.detail.strip()
        if outcome.kind in ("failed", "unexpected") or outcome.problems or reasonless:
            self.bad.append(f"{name}: {outcome.kind}: {outcome.detail} {outcome.problems}")

    def line(self) -> str:
        parts = " / ".join(f"{self.counts.get(k, 0)} {k}" for k in ("draft", "skipped", "refused"))
        unexpected = self.counts.get("failed", 0) + self.counts.get("unexpected", 0)
        return f"{self.run} variants: {parts} / {unexpected} unexpected"


class AblationHarness:
    """One store, spool and pipeline (tiny model, no destinations: drafts are kept under the data directory)."""

    def __init__(self, root: Path, tiny_model_dir: Path, *, listener: dict[str, Any] | None = None) -> None:
        """``listener``: settings of the ``listener`` section to use instead of the defaults (``max_image_pixels``,
        ``routing``)."""
        overrides: dict[str, Any] = {"listener": listener} if listener is not None else {}
        self.settings: Settings = load_settings(
            None,
            **overrides,
            data_dir=root / "data",
            model={
                "path": tiny_model_dir,
                "device": "cpu",
                "max_new_tokens": 8,
                "min_pixels": 56 * 56,
                "max_pixels": 112 * 112,
                "batch_size": 8,
                "batch_wait_ms": 0,
            },
        )
        self.settings.data_dir.mkdir(parents=True)
        self.store = Store.from_url(self.settings.store_url)
        upgrade(self.store)
        self.spool = Spool(self.settings.spool_dir, self.settings.quarantine_dir, fsync=False)
        self.spool.prepare()
        self.recorder = AuditRecorder(self.store)
        self.actor = Actor(ae_title="PACS", host="127.0.0.1")
        self.reader = StudyReader(
            self.settings.model,
            data_dir=self.settings.data_dir,
            max_source_pixels=self.settings.listener.max_image_pixels,
            chest_body_parts=self.settings.listener.routing.chest_body_parts,
        )
        self.pipeline = StudyPipeline(self.settings, self.store, self.reader, worker="ablation")
        found = shutil.which("dciodvfy")
        assert found is not None, "dciodvfy not found on PATH: install dicom3tools"
        self.dciodvfy = found
        self.scratch = root / "scratch"
        self.scratch.mkdir()

    def close(self) -> None:
        self.reader.close()
        self.store.dispose()

    def run(self, datasets: list[Dataset]) -> Outcome:
        """Send, complete, process and check one variant study."""
        return self.run_many([("variant", datasets)])["variant"]

    def run_many(self, studies: Sequence[tuple[str, list[Dataset]]]) -> dict[str, Outcome]:
        """Send, complete, process (read as one batch, as a GPU worker does) and check several variant studies.

        pydicom warns (UserWarning) about every invalid value it converts; production logs those warnings, the
        test suite turns warnings into errors. A variant is invalid on purpose, so they are ignored here, as
        production's outcome does not depend on them.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self._run_many(studies)

    def _run_many(self, studies: Sequence[tuple[str, list[Dataset]]]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        sent: dict[str, str] = {}  # study UID -> variant name
        for name, datasets in studies:
            received = self._send(datasets)
            if isinstance(received, Outcome):
                outcomes[name] = received
            else:
                sent[received] = name
        queued: dict[tuple[str, int], str] = {}
        rule = FilterRule.from_settings(self.settings.listener.routing)  # the listener's rule, as it builds it
        for completed in complete_due(self.store, self.recorder, 0.0, now=utc_now() + timedelta(seconds=1), rule=rule):
            name = sent.pop(completed.study_uid, None)
            if name is None:
                continue
            if completed.reason is not None:
                outcomes[name] = Outcome("skipped", completed.reason)
            else:
                queued[(completed.study_uid, completed.number)] = name
        for name in sent.values():
            outcomes[name] = Outcome("unexpected", "the study was not completed")
        if queued:
            first = next(iter(queued))
            for key, result in self.pipeline.process_batch(*first, size=len(queued)):
                name = queued.pop(key, None)
                if name is not None:
                    outcomes[name] = self._outcome(key, result)
        for name in queued.values():
            outcomes[name] = Outcome("unexpected", "the revision was queued but never processed")
        return outcomes

    def _send(self, datasets: list[Dataset]) -> str | Outcome:
        """The listener's path for each instance: its study UID once all are recorded, or the refusal.

        The checks are the C-STORE handler's (``ListenerHandlers``: ``read_header`` then ``check_file``); the SOP
        Class / Instance against the request and the presentation context match here by construction.
        """
        max_pixels = self.settings.listener.max_image_pixels
        study_uid = ""
        for ds in datasets:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            staged = self.spool.stage_bytes(buffer.getvalue())
            try:
                header = read_header(staged.path, max_inflated_bytes=instance_byte_limit(max_pixels))
                check_file(staged.path, max_pixels)  # before anything decodes it
            except DicomInputError as exc:
                self.spool.discard(staged)
                comment = exc.reason[:64]  # the C-STORE status comment (LO), as the handler sends it
                unnamed = [] if _NAMES_ELEMENT.match(comment) else [f"refusal comment names no element: {comment!r}"]
                return Outcome("refused", comment, problems=unnamed)
            record_instance(self.store, self.recorder, self.spool, staged, header, self.actor)
            study_uid = header.study_uid
        return study_uid

    def _outcome(self, key: tuple[str, int], result: ProcessResult) -> Outcome:
        if result.result is Result.SKIPPED:
            return Outcome("skipped", result.reason or "")
        if result.result is not Result.REPORTED:
            return Outcome("failed", f"{result.result}: {result.reason}")
        return Outcome("draft", problems=self._check_drafts(*key))

    def _check_drafts(self, study_uid: str, revision: int) -> list[str]:
        folder = drafts_root(self.settings) / study_uid / str(revision)
        problems = [f"dciodvfy: {line}" for line in self._dciodvfy(folder / DRAFT_FILES["sr"])]
        text = (folder / DRAFT_FILES["hl7"]).read_bytes().decode("utf-8").replace("\r\n", "\r").replace("\n", "\r")
        problems.extend(_hl7_problems(text))
        json.loads((folder / DRAFT_FILES["fhir"]).read_text(encoding="utf-8"))
        return problems

    def _dciodvfy(self, path: Path) -> list[str]:
        result = subprocess.run([self.dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
        return [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@contextlib.contextmanager
def running_harness(tiny_model_dir: Path, prefix: str, **options: Any) -> Iterator[AblationHarness]:
    """A harness under a fresh folder in memory (/dev/shm, where it is writable; else the system's temporary
    folder): each variant commits and fsyncs several times, and a disk's fsync would be most of a suite's time.
    Closed and removed afterwards. ``options`` go to :class:`AblationHarness` (``listener=...``)."""
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    made = AblationHarness(root, tiny_model_dir, **options)
    try:
        yield made
    finally:
        made.close()
        shutil.rmtree(root, ignore_errors=True)


def _fields_by_python_hl7(message: hl7.Message) -> dict[tuple[int, int], list[str]]:
    fields: dict[tuple[int, int], list[str]] = {}
    for n, segment in enumerate(message):
        first = 3 if str(segment[0]) == "MSH" else 1  # MSH-1 and MSH-2 are the separators
        for index in range(first, len(segment)):
            if str(segment[index]):
                fields[(n, index)] = (
                    [str(rep) for rep in segment[index]] if str(segment[0]) != "MSH" else [str(segment[index])]
                )
    return fields


def _fields_by_hl7apy(text: str) -> dict[tuple[int, int], list[str]]:
    message = parse_message(text, find_groups=False)
    fields: dict[tuple[int, int], list[str]] = {}
    for n, segment in enumerate(message.children):
        for child in segment.children:
            index = int(child.name.rsplit("_", 1)[1])
            if segment.name == "MSH" and index < 3:
                continue
            fields.setdefault((n, index), []).append(child.value)
    return fields


def _hl7_problems(text: str) -> list[str]:
    """Where hl7apy and python-hl7 do not both parse ``text`` back to the same segments, fields and repetitions.

    Values are compared where they hold no escape sequence: hl7apy does not decode ``\\Xhh\\`` (it re-escapes
    it), python-hl7 does, so escaped values are compared by their place and repetitions only.
    """
    problems = []
    segments = [s for s in text.split("\r") if s]
    try:
        message = hl7.parse(text)
        by_python_hl7 = _fields_by_python_hl7(message)
    except Exception as exc:
        return [f"python-hl7 cannot parse: {type(exc).__name__}: {exc}"]
    try:
        by_hl7apy = _fields_by_hl7apy(text)
    except Exception as exc:
        return [f"hl7apy cannot parse: {type(exc).__name__}: {exc}"]
    if [str(s) for s in message] != segments:
        problems.append("python-hl7 does not give the segments back")
    if by_hl7apy.keys() != by_python_hl7.keys():
        problems.append(f"fields differ: {sorted(by_hl7apy.keys() ^ by_python_hl7.keys())[:5]}")
    for place, values in by_python_hl7.items():
        other = by_hl7apy.get(place, [])
        if len(other) != len(values):
            problems.append(f"repetitions differ at {place}")
        elif any("\\" not in a and a != b for a, b in zip(values, other, strict=True)):
            problems.append(f"values differ at {place}")
    pid = next((s for s in segments if s.startswith("PID|")), "")
    if "['" in pid or '["' in pid:
        problems.append("PID holds a Python list")
    if any(ch in segment for segment in segments for ch in "\x0b\x1c\n"):
        problems.append("a raw VT, FS or LF inside a segment")
    return problems
