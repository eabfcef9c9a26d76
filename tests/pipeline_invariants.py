"""The invariants every fault test checks at its end, whatever went wrong on the way.

1. Every instance the listener accepted (answered 0x0000: a row in ``instances``) belongs to exactly one
   revision of its own study, and no object (SOP Instance UID + bytes) was accepted twice as new.
2. Every revision is final: ``dispatched``, or ``skipped`` / ``failed`` with a reason; nothing is left
   pending in the outbox or running in the jobs table.
3. The PACS holds exactly one SR per dispatched revision, in the study, and no SR radtrace does not know;
   beside each, exactly one companion document (Basic Text SR) naming it.
4. ``radtrace audit verify`` exits 0.

:func:`check_invariants` asserts all of them and returns what it saw, for the test's own assertions.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from pydicom.dataset import Dataset

from mllp_support import MllpReceiver
from orthanc_support import Orthanc
from radtrace.store.models import Instance, Job, JobState, OutboxMessage, OutboxState, Revision, RevisionState, Study
from tests_support import radtrace

__all__ = ["Observed", "RevisionSeen", "check_invariants", "revisions"]

FINAL = {RevisionState.DISPATCHED, RevisionState.SKIPPED, RevisionState.FAILED}


@dataclass(frozen=True)
class RevisionSeen:
    """One revision as stored at the end."""

    study_uid: str
    number: int
    state: RevisionState
    reason: str | None
    attempts: int
    sr_sop_instance_uid: str | None
    instances: tuple[str, ...]  # SOP Instance UIDs first accepted in it


@dataclass(frozen=True)
class Observed:
    """What the checker saw: the revisions, and the SRs at the PACS by SOP Instance UID."""

    revisions: list[RevisionSeen]
    srs: dict[str, Dataset]

    def of(self, study_uid: str) -> list[RevisionSeen]:
        return [r for r in self.revisions if r.study_uid == study_uid]


def revisions(store_url: str) -> list[RevisionSeen]:
    """Every revision with its instances, by study and number."""
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(
                    Revision.id, Study.study_uid, Revision.number, Revision.state, Revision.reason,
                    Revision.attempts, Revision.sr_sop_instance_uid,
                )
                .join(Study, Revision.study_id == Study.id)
                .order_by(Study.study_uid, Revision.number)
            ).all()  # fmt: skip
            members = collections.defaultdict(list)
            for revision_id, sop in connection.execute(sa.select(Instance.revision_id, Instance.sop_instance_uid)):
                members[revision_id].append(sop)
    finally:
        engine.dispose()
    return [
        RevisionSeen(uid, number, RevisionState(state), reason, attempts, sr, tuple(sorted(members[rev_id])))
        for rev_id, uid, number, state, reason, attempts, sr in rows
    ]


def _check_instances(connection: sa.Connection, accepted: Iterable[str]) -> None:
    rows = connection.execute(
        sa.select(Instance.sop_instance_uid, Instance.sha256, Instance.study_id, Revision.study_id, Revision.id).join(
            Revision, Instance.revision_id == Revision.id, isouter=True
        )
    ).all()
    problems = [f"instance {sop} is in no revision" for sop, _, _, _, rev_id in rows if rev_id is None]
    problems += [
        f"instance {sop} is in a revision of another study"
        for sop, _, study, rev_study, rev_id in rows
        if rev_id is not None and study != rev_study
    ]
    copies = collections.Counter((sop, digest) for sop, digest, *_ in rows)
    problems += [f"instance {sop} accepted {n} times as new" for (sop, _), n in copies.items() if n > 1]
    known = {sop for sop, *_ in rows}
    problems += [f"instance {sop} was answered success but has no row" for sop in set(accepted) - known]
    assert not problems, "; ".join(problems)


def _check_final(connection: sa.Connection, seen: list[RevisionSeen]) -> None:
    problems = [f"{r.study_uid} revision {r.number} ends {r.state.value}" for r in seen if r.state not in FINAL]
    problems += [
        f"{r.study_uid} revision {r.number} is {r.state.value} without a reason"
        for r in seen
        if r.state in {RevisionState.SKIPPED, RevisionState.FAILED} and not (r.reason or "").strip()
    ]
    pending = connection.scalar(
        sa.select(sa.func.count()).select_from(OutboxMessage).where(OutboxMessage.state == OutboxState.PENDING)
    )
    running = connection.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.state == JobState.RUNNING))
    if pending:
        problems.append(f"{pending} outbox rows still pending")
    if running:
        problems.append(f"{running} jobs still running")
    assert not problems, "; ".join(problems)


def _check_pacs(pacs: Orthanc, seen: list[RevisionSeen]) -> dict[str, Dataset]:
    srs: dict[str, Dataset] = {}
    problems: list[str] = []
    for study_uid in sorted({r.study_uid for r in seen}):
        held: collections.Counter[str] = collections.Counter()
        for ds in pacs.srs(study_uid):
            held[str(ds.SOPInstanceUID)] += 1
            srs[str(ds.SOPInstanceUID)] = ds
            if ds.StudyInstanceUID != study_uid:
                problems.append(f"SR {ds.SOPInstanceUID} is outside study {study_uid}")
        expected = {
            r.sr_sop_instance_uid: r.number
            for r in seen
            if r.study_uid == study_uid and r.state is RevisionState.DISPATCHED and r.sr_sop_instance_uid
        }
        for sr_uid, number in expected.items():
            if held[sr_uid] != 1:
                problems.append(f"{study_uid} revision {number}: {held[sr_uid]} SRs {sr_uid} at the PACS, not 1")
        dispatched = [r for r in seen if r.study_uid == study_uid and r.state is RevisionState.DISPATCHED]
        if len(expected) != len(dispatched):
            problems.append(f"{study_uid}: a dispatched revision has no SR UID")
        strangers = set(held) - set(expected)
        problems += [f"{study_uid}: SR {uid} at the PACS belongs to no dispatched revision" for uid in strangers]
        # each dispatched SR has exactly one companion document beside it, naming it (reporting.companion_document)
        companions = collections.Counter(
            str(item.ReferencedSOPInstanceUID)
            for ds in pacs.companions(study_uid)
            for content in ds.ContentSequence
            if content.ValueType == "COMPOSITE"
            for item in content.ReferencedSOPSequence
        )
        problems += [
            f"{study_uid}: {companions[uid]} companion documents for SR {uid} at the PACS, not 1"
            for uid in set(expected) | set(companions)
            if companions[uid] != 1
        ]
    assert not problems, "; ".join(problems)
    return srs


def check_invariants(
    store_url: str,
    pacs: Orthanc,
    cli_env: dict[str, str],
    *,
    accepted: Iterable[str] = (),
    ris: MllpReceiver | None = None,
) -> Observed:
    """Assert the invariants of the module docstring; ``accepted`` are SOP Instance UIDs a sender was told
    were stored, ``ris`` the receiver that must hold an HL7 message for every dispatched revision."""
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as connection:
            _check_instances(connection, accepted)
            seen = revisions(store_url)
            _check_final(connection, seen)
    finally:
        engine.dispose()
    srs = _check_pacs(pacs, seen)
    if ris is not None:
        texts = [str(message) for message in ris.received]
        missing = [
            f"{r.study_uid} revision {r.number}"
            for r in seen
            if r.state is RevisionState.DISPATCHED and not any(str(r.sr_sop_instance_uid) in t for t in texts)
        ]
        assert not missing, f"no HL7 message at the RIS for {', '.join(missing)}"
    verify = radtrace("audit", "verify", env=cli_env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit chain valid" in verify.stdout, verify.stdout
    return Observed(seen, srs)
