"""The study page: one revision's draft (images, findings with their evidence, reasoning, impression, flags,
model, decisions so far), the images the model read, and the assessment SRs kept for its whole-draft decisions.

A study is addressed by its handle (:mod:`.links`), never its Study UID; an old address with the Study UID is
moved to the handle's. Opening the page, an image or an assessment SR is recorded in the audit log. The
decisions posted from the page are :mod:`.study_decisions`.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from radtrace.audit.events import AuditEvent, EventType
from radtrace.audit.queries import MAX_SEQ
from radtrace.audit.recorder import AuditRecorder
from radtrace.console.assessment_files import settle_pending
from radtrace.console.draft_recording import assessments_root
from radtrace.console.images import render_image
from radtrace.console.links import HANDLE, STUDY, UID
from radtrace.console.pages import (
    PREFIX,
    SECURITY_HEADERS,
    ConsoleState,
    StateDep,
    UserDep,
    redirect,
    render_page,
    request_actor,
    sync_worklist,
)
from radtrace.console.reassigned_flags import flag_check
from radtrace.console.review import DRAFT_REASONS, SENTENCE, StudyReview, load_review
from radtrace.console.worklist import mark_opened
from radtrace.errors import RadtraceError

__all__ = ["RevisionNumber", "StudyRef", "review_or_404", "router", "study_handle", "study_of", "study_path"]

log = logging.getLogger(__name__)

#: A study in a console address: its handle (:mod:`.links`); the Study UID of an old address is still read (see
#: :func:`study_of`), never written.
StudyRef = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z._-]+$")]
#: The largest revision number the database holds (an INTEGER column, 32 bits on PostgreSQL): a larger one in a
#: path or query is 422 naming it, not a 500 from the database driver.
MAX_REVISION: Final = 2**31 - 1
#: The reasoning as the page shows it: each sentence (:data:`SENTENCE`) with the space after it, and line breaks.
_PARTS: Final = re.compile(rf"(?:{SENTENCE.pattern})\s*|\n+")
RevisionNumber = Annotated[int, PathParam(ge=1, le=MAX_REVISION)]

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def study_path(state: ConsoleState, study_uid: str, revision: int) -> str:
    """The address of one revision's study page: the study by its handle, never its UID."""
    return f"{PREFIX}/studies/{study_handle(state, study_uid)}/{revision}"


def study_handle(state: ConsoleState, study_uid: str) -> str:
    """The handle that addresses a study in the console."""
    return state.links.study_handles([study_uid])[study_uid]


def study_of(state: ConsoleState, ref: str, *, old_address: bool = False) -> str:
    """The Study UID of an address's study segment: a handle. A Study UID there (an address from before handles)
    is read only where ``old_address`` allows it (the study page, which moves it to the handle's address, and the
    decisions, which are recorded and answered with it); elsewhere, and for an unknown handle, 404 (the segment is
    never said back)."""
    found = state.links.study_uid(STUDY, ref) if HANDLE.match(ref) else None
    if found is not None:
        return found
    if old_address and UID.match(ref):
        return ref
    raise HTTPException(404, detail="no study has this address: open it from the worklist")


def review_or_404(state: ConsoleState, study_uid: str, revision: int) -> StudyReview:
    """The review of one revision, or 404 when no reading of it is recorded; its times in the site's zone."""
    review = load_review(state.store, study_uid, revision, ZoneInfo(state.settings.qa.time_zone))
    if review is None:
        raise HTTPException(404, detail="no reading of this study revision is recorded")
    return review


def _sentences(review: StudyReview) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """Each reasoning section as sentences, each naming the findings it is evidence for."""
    by_sentence: dict[str, list[str]] = {}
    for finding in review.findings:
        for sentence in finding.evidence:
            by_sentence.setdefault(sentence, []).append(finding.label)
    sections = []
    for section, text in review.reasoning:
        parts = [match.group(0) for match in _PARTS.finditer(text)]
        sections.append((section, [(part, by_sentence.get(part.strip(), [])) for part in parts]))
    return sections


@router.get("/studies/{study}/{revision}")
def study_page(
    request: Request,
    study: StudyRef,
    revision: RevisionNumber,
    state: StateDep,
    user: UserDep,
    focus: str | None = None,
) -> Response:
    """One draft: images, findings with evidence, reasoning, impression, flags, model; decisions. An old address
    with the Study UID is answered by a redirect to the study's handle (a study with no reading: 404)."""
    sync_worklist(state)  # a link to a revision reported a moment ago shows its worklist details too
    study_uid = study_of(state, study, old_address=True)
    review = review_or_404(state, study_uid, revision)
    if study != state.links.handle(STUDY, study_uid):
        kept = f"?focus={focus}" if focus and focus.isdigit() and len(focus) <= 4 else ""  # console.js's selection
        return redirect(study_path(state, study_uid, revision) + kept)
    AuditRecorder(state.store).record(
        AuditEvent(EventType.STUDY_OPENED, request_actor(request, user), study_uid=study_uid,
                   accession=review.accession,
                   payload={"revision": revision, "via": "console", "role": user.account.role.value})
    )  # fmt: skip
    if user.account.role.may_decide:
        mark_opened(state.store, study_uid, revision, user.account.name)
    typed_key, typed_id = state.links.typed_text_key(user.account.name)
    with state.store.session("reading a draft's flag check") as session:
        check = flag_check(session, study_uid, revision)  # the warning says who checked it, when and why
    moved_handles = state.links.study_handles([to.study_uid for to in check.moved_to]) if check else {}
    return render_page(request, state, "study.html", user=user, review=review, sections=_sentences(review),
                       flag_check=check, moved_handles=moved_handles, reasons=DRAFT_REASONS, handle=study,
                       typed_key=typed_key, typed_id=typed_id,
                       may_decide=user.account.role.may_decide and review.superseded_by is None)  # fmt: skip


@router.get("/studies/{study}/{revision}/images/{number}/{kind}.png")
def study_image(
    request: Request,
    study: StudyRef,
    revision: RevisionNumber,
    number: Annotated[int, PathParam(ge=0, le=99)],
    kind: Annotated[str, PathParam(pattern="^(prepared|original)$")],
    state: StateDep,
    user: UserDep,
) -> Response:
    """An image the model read, by its place in the reading (0 the first): ``prepared`` as the model saw it,
    ``original`` at full resolution (8-bit)."""
    study_uid = study_of(state, study)
    review = review_or_404(state, study_uid, revision)
    if number >= len(review.images):
        raise HTTPException(404, detail="the model did not read this image")
    sop_uid = str(review.images[number].get("sop_instance_uid"))
    try:
        data = render_image(state.store, state.settings, study_uid, revision, sop_uid, kind, state.pictures)
    except (OSError, RadtraceError) as exc:
        log.warning("console: image could not be rendered: %s", type(exc).__name__)
        raise HTTPException(404, detail="the image could not be read from the spool") from exc
    AuditRecorder(state.store).record(
        AuditEvent(EventType.IMAGE_VIEWED, request_actor(request, user), study_uid=study_uid,
                   accession=review.accession,
                   payload={"revision": revision, "sop_instance_uid": sop_uid, "rendering": kind})
    )  # fmt: skip
    return Response(data, media_type="image/png", headers={**SECURITY_HEADERS, "Cache-Control": "private, no-store"})


@router.get("/studies/{study}/{revision}/assessments/{seq}.dcm")
def assessment_file(
    request: Request,
    study: StudyRef,
    revision: RevisionNumber,
    seq: Annotated[int, PathParam(ge=1, le=MAX_SEQ)],
    state: StateDep,
    user: UserDep,
) -> Response:
    """The assessment SR kept for the whole-draft decision recorded as audit event ``seq``, byte for byte
    (recorded as ``draft_exported``); one whose decision was committed just before a crash is kept now
    (:func:`settle_pending`)."""
    study_uid = study_of(state, study)
    review = review_or_404(state, study_uid, revision)
    sop_uid = next((d.assessment_sr for d in review.draft_history if d.seq == seq and d.assessment_sr), None)
    if sop_uid is None or not UID.match(sop_uid):
        raise HTTPException(404, detail="no such assessment SR is kept")
    root = assessments_root(state.settings)
    path = root / study_uid / str(revision) / f"{sop_uid}.dcm"
    if not path.is_file():
        settle_pending(state.store, root, only=sop_uid)
    if not path.is_file():
        raise HTTPException(404, detail="no such assessment SR is kept")
    AuditRecorder(state.store).record(
        AuditEvent(EventType.DRAFT_EXPORTED, request_actor(request, user), study_uid=study_uid,
                   payload={"via": "console", "revision": revision, "assessment_sr": sop_uid})
    )  # fmt: skip
    disposition = {"Content-Disposition": f'attachment; filename="assessment-{seq}.dcm"'}
    return Response(path.read_bytes(), media_type="application/dicom", headers={**SECURITY_HEADERS, **disposition})
