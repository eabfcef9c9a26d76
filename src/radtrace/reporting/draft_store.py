"""Every draft is kept: the SR, HL7 ORU, FHIR Bundle (and GSPS) of each revision, under the data directory.

Layout: ``<data_dir>/drafts/<Study Instance UID>/<revision>/`` holding ``sr.dcm``, ``oru.hl7``,
``report.fhir.json`` and, when built, ``gsps.dcm`` and ``companion.dcm`` (the Basic Text SR). A Study
Instance UID is digits and dots, so no patient data reaches a file name. Each file is written to a
temporary name, fsynced, renamed and its directory fsynced (:mod:`radtrace.durable`) before
``report_created`` is recorded with its path and SHA-256, whether or not any destination is configured:
a site with no PACS, RIS or file drop still has its drafts. A revision's files are all written to their
temporary names before any is renamed, so a write that fails (disk full) leaves the revision's folder as it
was, and its temporary files are removed; one a killed writer left behind is removed by the next attempt.

A write that fails because the disk or the quota is full (ENOSPC, EDQUOT) is :class:`DraftsDiskFullError`:
no fault of the study, it waits for space (the worker retries it with backoff, no attempt counted). Other
I/O failures (EIO, a read-only file system) are :class:`DraftsNotStoredError`, retried up to
``broker.max_attempts``; a folder radtrace may not write (EACCES, EPERM) stays a permanent
:class:`ReportError` naming the setting, since trying again cannot help until someone changes it.

A later attempt of the same revision replaces the files atomically (its ``report_created`` names the new
hashes). :func:`read_draft` reads a kept draft back into findings, impression and reasoning for
``radtrace drafts show`` and the QA API.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pwd
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from radtrace.audit.events import EventType
from radtrace.durable import fsync_directory
from radtrace.errors import (
    DispatchError,
    DispatchRejectedError,
    DraftProcessLostError,
    ReportError,
    RetryableError,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from radtrace.config import ReportingSettings, Settings
    from radtrace.model.reading import Reading
    from radtrace.reporting.dispatch.outbox import Outbox, ReportFiles

__all__ = [
    "DRAFT_FILES",
    "BuiltDrafts",
    "DraftFinding",
    "DraftRevision",
    "DraftView",
    "DraftsDiskFullError",
    "DraftsNotStoredError",
    "KeptDraft",
    "build_and_keep",
    "drafts_root",
    "enqueue_built",
    "failure_event_type",
    "keep_drafts",
    "kept_srs",
    "list_drafts",
    "read_draft",
]

# kind -> file name inside <study>/<revision>/
DRAFT_FILES: Final = {
    "sr": "sr.dcm",
    "hl7": "oru.hl7",
    "fhir": "report.fhir.json",
    "gsps": "gsps.dcm",
    "companion": "companion.dcm",
}
_UID: Final = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_TEMPORARY: Final = re.compile(r"^\..+\.[0-9]+\.tmp$")  # .<name>.<pid>.tmp (see _temporary)
_STALE_TEMPORARY_S: Final = 3600.0  # a temporary file this old belongs to a writer that died
_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
_FORBIDDEN: Final = frozenset({errno.EACCES, errno.EPERM})


class DraftsNotStoredError(RetryableError):
    """A revision's drafts were built but could not be written (an I/O error, a read-only file system): retried
    up to ``broker.max_attempts``."""


class DraftsDiskFullError(DraftsNotStoredError):
    """The drafts could not be written because the file system or the quota is full: no fault of the study. The
    worker puts the revision back with backoff and does not count the attempt, so it ends reported once there is
    space again (:meth:`radtrace.worker.attempts.RevisionAttempts.failed`)."""


@dataclass(frozen=True)
class KeptDraft:
    """One stored draft file: its kind, path (relative to the drafts root) and SHA-256."""

    kind: str
    path: str
    sha256: str

    def as_json(self) -> dict[str, str]:
        """The form recorded in ``report_created``."""
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256}


def drafts_root(settings: Settings) -> Path:
    """Where drafts are kept: ``<data_dir>/drafts``."""
    return settings.data_dir / "drafts"


def _study_dir(root: Path, study_uid: str) -> Path:
    if not _UID.match(study_uid) or len(study_uid) > 64:
        raise ReportError(f"not a DICOM UID: {study_uid!r}")
    return root / study_uid


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_temporary(path: Path, data: bytes) -> Path:
    """Write ``data`` beside ``path`` under a temporary name, fsynced; removed again when writing fails."""
    temporary = _temporary(path)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _remove_stale_temporaries(directory: Path) -> None:
    """Remove temporary files a writer that died (kill -9, power loss) left in ``directory``."""
    cutoff = time.time() - _STALE_TEMPORARY_S
    for entry in directory.iterdir():
        try:
            if _TEMPORARY.match(entry.name) and entry.stat().st_mtime < cutoff:
                entry.unlink()
        except FileNotFoundError:
            continue


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, fsyncing each parent that gained an entry."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
        fsync_directory(created.parent)


def keep_drafts(root: Path, study_uid: str, revision: int, files: ReportFiles) -> list[KeptDraft]:
    """Store one revision's drafts durably under ``root``; returns each file's relative path and SHA-256.

    All or nothing: every file is written and fsynced under a temporary name before the first is renamed into
    place. Raises :class:`DraftsDiskFullError` (disk or quota full), :class:`ReportError` (radtrace may not write
    there) or :class:`DraftsNotStoredError` (any other I/O failure)."""
    directory = _study_dir(root, study_uid) / str(revision)
    payloads = {"sr": files.sr, "hl7": files.hl7, "fhir": files.fhir, "gsps": files.gsps,
                "companion": files.companion}  # fmt: skip
    written: list[tuple[Path, Path]] = []  # (temporary, final)
    try:
        _make_dirs(directory)
        _remove_stale_temporaries(directory)
        kept: list[KeptDraft] = []
        for kind, payload in payloads.items():
            if payload is None:
                continue
            path = directory / DRAFT_FILES[kind]
            written.append((_write_temporary(path, payload), path))
            kept.append(KeptDraft(kind, path.relative_to(root).as_posix(), hashlib.sha256(payload).hexdigest()))
        while written:
            temporary, path = written.pop(0)
            os.replace(temporary, path)
        fsync_directory(directory)
    except OSError as exc:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
        raise _not_stored(directory, exc) from exc
    return kept


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _not_stored(directory: Path, exc: OSError) -> ReportError | DraftsNotStoredError:
    """The error a failed write of the drafts under ``directory`` ends the attempt with (see the module)."""
    what = f"drafts could not be stored under {directory}: {exc.strerror or exc}"
    if exc.errno in _FULL:
        return DraftsDiskFullError(f"{what} (its file system or quota is full; retried once there is space)")
    if exc.errno in _FORBIDDEN:
        return ReportError(
            f"{what} (user {_user()} may not write there: the drafts folder is <data_dir>/drafts, setting "
            "data_dir or RADTRACE_DATA_DIR; fix its owner or permissions, then radtrace study retry)"
        )
    return DraftsNotStoredError(what)


def kept_srs(root: Path, study_uid: str, before: int, *, withdrawn: Collection[int] = ()) -> list[Dataset]:
    """The SR documents kept for the study's revisions before ``before`` (its TID 1500 drafts and companions, for
    Predecessor Documents), oldest revision first, headers only.

    They are kept whether or not a destination is configured, so a later revision names them also where the
    outbox never held them. A revision with no kept SR (skipped, failed) adds nothing; a kept file that cannot
    be read is a :class:`ReportError` (a predecessor silently left out would hide the earlier draft). The revisions
    numbered in ``withdrawn`` add nothing, unread: their drafts were withdrawn (an image they read was moved to
    another patient or rejected by the PACS: :func:`radtrace.store.withdrawn.withdrawn_revisions`), and
    a later draft includes nothing of theirs (PS3.3 C.17.2: a predecessor is a document whose content this one
    includes). Their files stay kept, for ``radtrace drafts show`` and the audit's hashes.
    """
    import pydicom  # here: 'radtrace status' imports this module (pydicom and numpy: about 0.4 s of CPU)
    from pydicom.errors import InvalidDicomError

    study = _study_dir(root, study_uid)
    numbers = sorted(int(p.name) for p in study.iterdir() if p.name.isdigit()) if study.is_dir() else []
    found: list[Dataset] = []
    for number in (n for n in numbers if n < before and n not in withdrawn):
        for kind in ("sr", "companion"):
            path = study / str(number) / DRAFT_FILES[kind]
            if not path.is_file():
                continue
            try:
                found.append(pydicom.dcmread(path, stop_before_pixels=True))
            except (OSError, InvalidDicomError) as exc:
                raise ReportError(f"the kept draft {path} cannot be read: {exc}") from exc
    return found


@dataclass(frozen=True)
class BuiltDrafts:
    """One revision's drafts, built and kept: the files (for the outbox) and where each is kept."""

    files: ReportFiles
    kept: tuple[KeptDraft, ...]


def build_and_keep(
    reporting: ReportingSettings,
    root: Path,
    *,
    study_uid: str,
    revision: int,
    reading: Reading,
    sources: Sequence[Any],
    predecessors: Sequence[Dataset],
) -> BuiltDrafts:
    """Build one reading's drafts and keep them durably under ``root``: no database, so it can run in another
    process (:mod:`radtrace.worker.drafting`). A library's own error while building is a :class:`ReportError`:
    the reading is fine, the draft is not."""
    from radtrace.reporting.drafts import build_drafts

    try:
        drafts = build_drafts(reading, sources, settings=reporting, revision=revision, predecessors=predecessors)
    except ReportError:
        raise
    except Exception as exc:
        raise ReportError(f"the drafts could not be built: {type(exc).__name__}: {exc}") from exc
    return BuiltDrafts(drafts, tuple(keep_drafts(root, study_uid, revision, drafts)))


def enqueue_built(settings: Settings, outbox: Outbox, revision_id: int, reading: Reading, built: BuiltDrafts
                  ) -> list[int]:  # fmt: skip
    """Queue the deliveries of built drafts; ``report_created`` (recorded by the outbox) names the kept files
    with their SHA-256 under ``drafts``, and the planned deliveries (none when no destination is configured)
    under ``outbox``."""
    from radtrace.reporting.dispatch.outbox import planned_deliveries

    identity = reading.identity
    return outbox.enqueue(
        revision_id,
        planned_deliveries(settings.dispatch, built.files),
        sr_sop_instance_uid=built.files.sr_sop_instance_uid,
        model_name=identity.model_name,
        model_version=identity.revision or identity.weights_sha256,
        drafts=[draft.as_json() for draft in built.kept],
    )


def failure_event_type(error: BaseException) -> EventType:
    """What a failed processing attempt is audited as: ``report_failed`` when the drafts could not be built, kept or
    queued (their process died, their files or the outbox's payload copies could not be written: a full disk too,
    or the outbox refused them; the model's reading was recorded), ``inference_failed`` when reading itself failed.
    A processing attempt delivers nothing: a dispatch error there is the outbox queueing the report."""
    reporting = (ReportError, DraftProcessLostError, DraftsNotStoredError, DispatchError, DispatchRejectedError)
    return EventType.REPORT_FAILED if isinstance(error, reporting) else EventType.INFERENCE_FAILED


# --- reading drafts back ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DraftRevision:
    """One kept revision of one study: which files are there."""

    study_uid: str
    revision: int
    files: dict[str, Path]
    modified: datetime

    def as_json(self) -> dict[str, Any]:
        """Plain data for ``--json`` and the API."""
        return {
            "study_uid": self.study_uid,
            "revision": self.revision,
            "files": {kind: str(path) for kind, path in self.files.items()},
            "modified": self.modified.isoformat(timespec="seconds"),
        }


@dataclass(frozen=True)
class DraftFinding:
    """One finding of a kept SR."""

    label: str
    presence: str
    confidence: float | None = None
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class DraftView:
    """A kept draft read back from its SR: what a person reviewing it reads."""

    study_uid: str
    revision: int
    sr_sop_instance_uid: str
    accession: str | None
    content_datetime: str | None
    completion: str | None
    verification: str | None
    observer: str | None
    findings: tuple[DraftFinding, ...]
    notices: tuple[str, ...]
    impression: str | None
    reasoning: tuple[tuple[str, str], ...]
    files: dict[str, Path] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Plain data for ``--json`` and the API."""
        return {
            "study_uid": self.study_uid,
            "revision": self.revision,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
            "accession": self.accession,
            "content_datetime": self.content_datetime,
            "completion": self.completion,
            "verification": self.verification,
            "observer": self.observer,
            "notices": list(self.notices),
            "findings": [
                {"label": f.label, "presence": f.presence, "confidence": f.confidence, "devices": list(f.devices)}
                for f in self.findings
            ],
            "impression": self.impression,
            "reasoning": [{"section": section, "text": text} for section, text in self.reasoning],
            "files": {kind: str(path) for kind, path in self.files.items()},
        }


def list_drafts(root: Path, study_uid: str | None = None) -> list[DraftRevision]:
    """The kept revisions, newest first; only ``study_uid``'s when given (empty when none is kept)."""
    if study_uid is not None:
        studies = [_study_dir(root, study_uid)]
    else:
        studies = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found: list[DraftRevision] = []
    for study in studies:
        if not study.is_dir():
            continue
        for directory in study.iterdir():
            if not directory.name.isdigit():
                continue
            files = {kind: directory / name for kind, name in DRAFT_FILES.items() if (directory / name).is_file()}
            if "sr" not in files:
                continue
            modified = datetime.fromtimestamp(files["sr"].stat().st_mtime).astimezone()
            found.append(DraftRevision(study.name, int(directory.name), files, modified))
    return sorted(found, key=lambda d: (d.modified, d.revision), reverse=True)


def _meaning(item: Dataset, keyword: str) -> str:
    sequence = item.get(keyword)
    return str(sequence[0].CodeMeaning) if sequence else ""


def _number(item: Dataset) -> float | None:
    measured = item.get("MeasuredValueSequence")
    return float(measured[0].NumericValue) if measured else None


def _finding(group: Dataset) -> DraftFinding:
    label = presence = ""
    confidence: float | None = None
    devices: list[str] = []
    for item in group.get("ContentSequence", []):
        name = _meaning(item, "ConceptNameCodeSequence")
        if item.ValueType == "TEXT" and name == "Tracking Identifier":
            label = label or str(item.TextValue).split(" #")[0]
        elif item.ValueType == "CODE" and name == "Finding" and not label:
            label = _meaning(item, "ConceptCodeSequence")
        elif item.ValueType == "CODE" and name == "Presence of property":
            presence = _meaning(item, "ConceptCodeSequence")
        elif item.ValueType == "CODE" and name == "Device":
            devices.append(_meaning(item, "ConceptCodeSequence"))
        elif item.ValueType == "NUM" and name == "Model confidence":
            confidence = _number(item)
    return DraftFinding(label, presence, confidence, tuple(devices))


def read_draft(root: Path, study_uid: str, revision: int | None = None) -> DraftView:
    """Read a kept draft (the newest revision unless ``revision`` is given) back from its SR.

    Raises :class:`ReportError` when none is kept or the SR cannot be read.
    """
    kept = list_drafts(root, study_uid)
    if revision is not None:
        kept = [d for d in kept if d.revision == revision]
    if not kept:
        which = f"revision {revision} of study" if revision is not None else "study"
        raise ReportError(f"no draft is kept for {which} {study_uid} under {root}")
    draft = max(kept, key=lambda d: d.revision)
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        sr = pydicom.dcmread(io.BytesIO(draft.files["sr"].read_bytes()))
    except (OSError, InvalidDicomError) as exc:
        raise ReportError(f"the kept SR {draft.files['sr']} cannot be read: {exc}") from exc
    findings: list[DraftFinding] = []
    texts: list[tuple[str, str]] = []
    observer: str | None = None
    for item in sr.get("ContentSequence", []):
        name = _meaning(item, "ConceptNameCodeSequence")
        if item.ValueType == "TEXT" and name == "Device Observer Model Name":
            observer = str(item.TextValue)
        elif item.ValueType == "TEXT" and item.RelationshipType == "CONTAINS":  # the notice, the impression
            texts.append((name, str(item.TextValue)))
        elif item.ValueType == "CONTAINER" and name == "Imaging Measurements":
            findings += [_finding(group) for group in item.get("ContentSequence", [])]
        elif item.ValueType == "CONTAINER" and name == "Qualitative Evaluations":
            texts += [
                (_meaning(text, "ConceptNameCodeSequence"), str(text.TextValue))
                for text in item.get("ContentSequence", [])
                if text.ValueType == "TEXT"
            ]
    prefix = "Model reasoning: "
    return DraftView(
        study_uid=draft.study_uid,
        revision=draft.revision,
        sr_sop_instance_uid=str(sr.SOPInstanceUID),
        accession=str(sr.get("AccessionNumber", "")) or None,
        content_datetime=f"{sr.get('ContentDate', '')} {sr.get('ContentTime', '')}".strip() or None,
        completion=str(sr.get("CompletionFlag", "")) or None,
        verification=str(sr.get("VerificationFlag", "")) or None,
        observer=observer,
        findings=tuple(findings),
        notices=tuple(text for name, text in texts if name.lower().endswith("notice")),
        impression=next((text for name, text in texts if name == "Impression"), None),
        reasoning=tuple((name.removeprefix(prefix), text) for name, text in texts if name.startswith(prefix)),
        files=dict(draft.files),
    )
