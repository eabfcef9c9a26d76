"""A claimed revision's reading recorded and handed to the drafter: ``inference_completed`` in the audit log (model
identity, input hashes, prompt, raw output, the reading), then a draft job with the study's earlier SRs as its
predecessors.

:class:`ReadingRecord` is one of :class:`radtrace.worker.pipeline.StudyPipeline`'s two seams (the other:
:mod:`radtrace.worker.revision_inputs`); the pipeline enqueues the built drafts' deliveries and ends the attempt.
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from typing import Any

from pydicom.dataset import Dataset

from radtrace.audit.events import EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.model.reading import FindingStatus, Reading
from radtrace.reporting.dispatch.outbox import Outbox
from radtrace.reporting.draft_store import BuiltDrafts, drafts_root, kept_srs
from radtrace.store.engine import Store
from radtrace.store.withdrawn import withdrawn_revisions
from radtrace.worker.attempts import RevisionAttempts
from radtrace.worker.claims import Claim
from radtrace.worker.drafting import Drafter, DraftJob, headers_only

__all__ = ["ReadingRecord"]


class ReadingRecord:
    """Records readings and submits their draft jobs for one worker's pipeline."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        recorder: AuditRecorder,
        attempts: RevisionAttempts,
        outbox: Outbox,
        drafter: Drafter,
    ) -> None:
        self.settings = settings
        self.store = store
        self.recorder = recorder
        self.attempts = attempts
        self.outbox = outbox
        self.drafter = drafter

    def submit(self, claim: Claim, reading: Reading, sources: list[Any], *, record: bool = True) -> Future[BuiltDrafts]:
        """Record ``reading`` (unless ``record`` is False: a kept reading drafted again) and start its drafts."""
        if record:
            self.record(claim, reading)
        # Drafts are kept under <data_dir>/drafts whether or not a destination is configured (issue 15).
        job = DraftJob(claim.study_uid, claim.number, reading, [headers_only(ds) for ds in sources],
                       self.predecessors(claim))  # fmt: skip
        return self.drafter.submit(job)

    def record(self, claim: Claim, reading: Reading) -> None:
        """Audit the reading as ``inference_completed`` (what :mod:`radtrace.worker.kept_readings` drafts again)."""
        identity = reading.identity
        present = [f.label for f in reading.findings if f.status is FindingStatus.PRESENT]
        self.recorder.record(
            self.attempts.event(
                claim,
                EventType.INFERENCE_COMPLETED,
                model_name=identity.model_name,
                model_version=identity.revision or identity.weights_sha256,
                labels=present,
                identity=identity.model_dump(mode="json"),
                inputs=[
                    {"sop_instance_uid": i.sop_instance_uid, "sha256": i.sha256, "role": i.role, "view": i.view}
                    for i in reading.images
                ],
                prompt=identity.prompt,
                raw_output=reading.raw_text,
                reading=json.loads(reading.to_json()),
            )
        )

    def predecessors(self, claim: Claim) -> list[Dataset]:
        """The study's earlier SRs for Predecessor Documents: the kept drafts of its earlier revisions (kept
        whether or not any destination is configured), after those the outbox holds for revisions with none kept
        (drafts from before drafts were kept), one per SOP Instance UID; none of a revision whose draft was withdrawn
        (:func:`radtrace.store.withdrawn.withdrawn_revisions`). One session finds the withdrawn revisions and the
        outbox's SR payloads, and no file is read while it is open. Each file is read once: a kept SR's Instance
        Number is its revision's (build_sr), whose outbox copies are not read."""
        with self.store.session("finding earlier SRs") as session:  # withdrawn: never predecessors (PS3.3 C.17.2)
            withdrawn = withdrawn_revisions(session, claim.study_id)
            enqueued = self.outbox.earlier_sr_payloads(session, claim.revision_id, except_revisions=withdrawn)
        kept = kept_srs(drafts_root(self.settings), claim.study_uid, claim.number, withdrawn=withdrawn)
        known = {str(ds.SOPInstanceUID) for ds in kept}
        have = {int(ds.InstanceNumber) for ds in kept if ds.get("InstanceNumber") is not None}
        sent = self.outbox.read_earlier_srs(enqueued, have=have)
        return [*(ds for ds in sent if str(ds.SOPInstanceUID) not in known), *kept]
