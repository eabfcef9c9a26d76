"""The decisions a radiologist posts from the study page: each finding, the impression and the whole draft.

Each is a POST carrying the session's CSRF token, from a radiologist only; it is recorded as an audit event by
:mod:`.review` (a later one supersedes it, never an edit) and answered by a redirect back to the study page with
the next item selected, so a keyboard review goes on without a mouse. A decision made on a page that is out of
date (one was recorded since the page was loaded: its ``seen`` field, or a later revision was read) records nothing
and is answered 409 with the conflict page, which says when the draft was withdrawn and leads to the current one;
one the rules refuse is a 422 with the reason. A decision from a page of a session that has ended (signed in again
since: its CSRF token is the old session's) records nothing and is answered 403 with a page that says so. Every
page that answers a decision it did not record (these, and the signed-out page of :mod:`.web`) shows it back
(:func:`unsent_decision`): what it was, and the text the radiologist typed, to copy.

A draft read from an image the PACS moved to another patient/study or rejected since (its revision flagged,
:mod:`.reassigned_flags`) takes no accepting or modifying decision (422, with the reason) until a radiologist posts
``flags-checked`` with what they checked; a rejection is always taken. Where the image went to another study whose
draft is read, the refusal leads to that draft (its address in the reason, and a link on the page).

A client that sends no ``seen`` field (a script) sends an ``Idempotency-Key`` header (or an ``idempotency_key``
field; a quoted header value, as the IETF draft writes it, is unquoted) to make a retry safe: the same decision sent
again with the same key is recorded once and answered as the first was (the same redirect); the key with another
decision is a 422. Without either, each request is a decision of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from radtrace.audit.events import Actor
from radtrace.console.accounts import SignedIn
from radtrace.console.decisions import (
    IDEMPOTENCY_KEY,
    DraftWithdrawnError,
    FlagsNotCheckedError,
    check_flags,
    decide_finding,
    decide_impression,
)
from radtrace.console.draft_recording import record_draft_decision, ring
from radtrace.console.pages import (
    PREFIX,
    ConsoleState,
    StateDep,
    UserDep,
    check_csrf,
    read_form,
    redirect,
    render_page,
    request_actor,
    wants_page,
)
from radtrace.console.review import (
    DRAFT_REASONS,
    DecisionConflictError,
    DecisionError,
    Expected,
    StudyReview,
    load_review,
)
from radtrace.console.study_page import RevisionNumber, StudyRef, review_or_404, study_handle, study_of, study_path

__all__ = ["UnsentDecision", "router", "unsent_decision"]

log = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, include_in_schema=False)


#: The study page's decision actions (the last segment of the address a decision is posted to).
ACTIONS: Final = ("findings", "impression", "draft")
_STATUSES: Final = ("present", "absent", "uncertain")
_SHOWN_LABEL: Final = 200


@dataclass(frozen=True)
class UnsentDecision:
    """A decision a radiologist sent that was not recorded, in words (``summary``), and what they typed in it
    (``typed``: what each text was, and the text), to show back so that nothing typed is lost."""

    summary: str
    typed: tuple[tuple[str, str], ...]


def unsent_decision(action: str, form: Mapping[str, str]) -> UnsentDecision:
    """What the form of a decision ``action`` (:data:`ACTIONS`) asked for, from the form alone (it may come from a
    signed-out browser: nothing is looked up): 'Modify Pleural Effusion to absent', 'Reject the impression',
    'Accept the whole draft (RT-A1 Agrees with my reading)'; and the radiologist's own texts in it."""
    verdict = form.get("decision", "")
    verb = verdict.capitalize() if verdict in ("accept", "reject", "modify") else "A decision on"
    if action == "findings":
        summary = f"{verb} {form.get('label', '')[:_SHOWN_LABEL]}".strip()
        if verdict == "modify" and form.get("status") in _STATUSES:
            summary += f" to {form['status']}"
    elif action == "impression":
        summary = f"{verb} the impression" + (" to your text" if verdict == "modify" else "")
    else:
        reason = form.get("reason", "")
        summary = f"{verb} the whole draft" + (
            f" ({reason} {DRAFT_REASONS[reason]})" if reason in DRAFT_REASONS else ""
        )
    texts = (("impression", "Your impression"), ("comment", "Your comment"))
    typed = tuple((what, form[field]) for field, what in texts
                  if (form.get(field) or "").strip() and (field != "impression" or verdict == "modify"))  # fmt: skip
    return UnsentDecision(summary, typed)


def _stale_session(
    request: Request, state: ConsoleState, user: SignedIn, study: str, revision: int, action: str,
    form: Mapping[str, str],
) -> Response | None:  # fmt: skip
    """403 when the form was made for a session that has ended (its CSRF token is not this session's: signed in
    again since, here or in another tab): nothing is recorded and a browser is shown back what was sent. None
    when the token is this session's. A form with no token, or a script's request, is refused as before."""
    try:
        check_csrf(user.csrf_token, dict(form))
    except HTTPException:
        if not form.get("csrf_token") or not wants_page(request):
            raise
        log.info("console: a decision from a page of an earlier session was refused (403)")
        return render_page(request, state, "stale_session.html", 403, user=user,
                           study_page=f"{PREFIX}/studies/{study}/{revision}",
                           unsent=unsent_decision(action, form))  # fmt: skip
    return None


def _expected(form: dict[str, str]) -> Expected | None:
    """The decision the page showed as current (its ``seen`` field: empty for none), and for the whole draft the
    newest finding or impression decision it showed (``seen_findings``); None when the form has no ``seen``
    field (a client that does not ask for the check)."""
    seen = _seen(form, "seen")
    if seen is None:
        return None
    return Expected(seen.seq, findings=_seen(form, "seen_findings"))


def _seen(form: dict[str, str], field: str) -> Expected | None:
    seen = form.get(field)
    if seen is None:
        return None
    if seen == "":
        return Expected(None)
    if not seen.isdigit() or len(seen) > 18:
        raise HTTPException(422, detail=f"the form's {field} field is empty or the number of the decision it showed")
    return Expected(int(seen))


def _idempotency_key(request: Request, form: Mapping[str, str]) -> str | None:
    """The idempotency key the client sent: its ``Idempotency-Key`` header or ``idempotency_key`` field (None
    without either); 422 when it is not one (:data:`IDEMPOTENCY_KEY`) or the two differ."""
    header, field = request.headers.get("idempotency-key"), form.get("idempotency_key")
    if header is not None and len(header) >= 2 and header[0] == header[-1] == '"':
        header = header[1:-1]  # a structured-field string, as the IETF draft's examples send it
    if header is not None and field is not None and header != field:
        raise HTTPException(422, detail="the Idempotency-Key header and the idempotency_key field differ")
    key = header if header is not None else field
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise HTTPException(422, detail="an idempotency key is 8 to 128 letters, digits or ._:+/=~- (a UUID)")
    return key


def _conflict(request: Request, state: ConsoleState, user: SignedIn, review: StudyReview,
              exc: DecisionConflictError, unsent: UnsentDecision) -> Response:  # fmt: skip
    """409: the decision was made on a page that is out of date; nothing was recorded (shown back). The review is
    read again: the one the decision was checked against may predate what made it out of date (a later revision
    read meanwhile, which the reload link must open). When the draft was withdrawn (a correction at the PACS
    re-sent its image, and a later revision of the study was read from the corrected one), the page says so and
    leads to the current draft; a script's 409 says so and names the current draft's address."""
    current = (study_path(state, review.study_uid, exc.current) if isinstance(exc, DraftWithdrawnError)
               else None)  # fmt: skip
    if current is not None and not wants_page(request):
        raise HTTPException(409, detail=f"{exc.reason} The current draft is {current}.") from exc
    log.info("console: a decision from an out-of-date page was refused (409%s)", ", draft withdrawn" if current else "")
    review = load_review(state.store, review.study_uid, review.revision, review.zone) or review
    return render_page(request, state, "conflict.html", 409, user=user, review=review, reason=exc.reason,
                       handle=study_handle(state, review.study_uid), unsent=unsent, current=current,
                       current_revision=exc.current if isinstance(exc, DraftWithdrawnError) else None)  # fmt: skip


def _refused(
    request: Request, state: ConsoleState, user: SignedIn, review: StudyReview, exc: DecisionError
) -> Response:
    """422 with the reason the rules refused a decision; a draft read from an image the PACS moved to another study
    leads to the draft that covers the image now (that study's newest read revision): its address in the reason,
    and a link on the page."""
    moved = exc.moved_to if isinstance(exc, FlagsNotCheckedError) else ()
    current = next((study_path(state, to.study_uid, to.revision) for to in reversed(moved) if to.revision), None)
    if current is None:
        raise HTTPException(422, detail=exc.reason) from exc
    if not wants_page(request):
        raise HTTPException(422, detail=f"{exc.reason} The image is now in another study, whose draft is {current}.")
    log.info("console: a decision on a draft whose image the PACS moved was refused (422)")
    return render_page(request, state, "problem.html", 422, user=user, reason=exc.reason, current=current,
                       back=study_path(state, review.study_uid, review.revision))  # fmt: skip


def _decider(user: SignedIn) -> None:
    if not user.account.role.may_decide:
        raise HTTPException(403, detail=f"only a radiologist records decisions; you are signed in as "
                                        f"{user.account.role.value}")  # fmt: skip


async def _decide(
    request: Request,
    study: str,
    revision: int,
    state: ConsoleState,
    user: SignedIn,
    action: str,
    decide: Callable[[dict[str, str], StudyReview, Actor, str | None], int],
) -> tuple[dict[str, str], StudyReview | Response]:
    """Record one decision a radiologist posted (CSRF-checked, radiologists only): the form and the review, or
    the conflict page in its place when a decision was recorded since the page was loaded (409); a decision the
    rules refuse is a 422 with the reason."""
    form = await read_form(request)
    refused = await run_in_threadpool(_stale_session, request, state, user, study, revision, action, form)
    if refused is not None:
        return form, refused
    _decider(user)
    key = _idempotency_key(request, form)
    study_uid = await run_in_threadpool(study_of, state, study, old_address=True)
    review = await run_in_threadpool(review_or_404, state, study_uid, revision)
    try:
        await run_in_threadpool(decide, form, review, request_actor(request, user), key)
    except DecisionConflictError as exc:
        unsent = unsent_decision(action, form)
        return form, await run_in_threadpool(_conflict, request, state, user, review, exc, unsent)
    except DecisionError as exc:
        return form, await run_in_threadpool(_refused, request, state, user, review, exc)
    return form, review


@router.post("/studies/{study}/{revision}/findings")
async def finding_decision(
    request: Request, study: StudyRef, revision: RevisionNumber, state: StateDep, user: UserDep
) -> Response:
    """Accept, reject or modify one finding (a new audit event; a later one supersedes it)."""

    def decide(form: dict[str, str], review: StudyReview, actor: Actor, key: str | None) -> int:
        return decide_finding(state.store, review, actor, form.get("label", ""), form.get("decision", ""),
                              form.get("status") or None, form.get("comment"), _expected(form), key)  # fmt: skip

    form, review = await _decide(request, study, revision, state, user, "findings", decide)
    if isinstance(review, Response):
        return review
    label = form.get("label", "")
    page = await run_in_threadpool(study_path, state, review.study_uid, revision)
    # The next finding is selected after a decision, so the keyboard path is j-less: a, a, r, a …
    index = next((i for i, f in enumerate(review.findings) if f.label == label), 0)
    if index + 1 == len(review.findings) and (review.impression or "").strip():  # the impression is next
        return redirect(f"{page}?focus={index + 1}#impression")
    index = min(index + 1, max(0, len(review.findings) - 1))
    return redirect(f"{page}?focus={index}#finding-{index}")


@router.post("/studies/{study}/{revision}/impression")
async def impression_decision(
    request: Request, study: StudyRef, revision: RevisionNumber, state: StateDep, user: UserDep
) -> Response:
    """Accept, reject or modify (with the radiologist's own text) the draft's impression (a new audit event)."""

    def decide(form: dict[str, str], review: StudyReview, actor: Actor, key: str | None) -> int:
        return decide_impression(state.store, review, actor, form.get("decision", ""), form.get("impression"),
                                 form.get("comment"), _expected(form), key)  # fmt: skip

    _form, review = await _decide(request, study, revision, state, user, "impression", decide)
    if isinstance(review, Response):
        return review
    page = await run_in_threadpool(study_path, state, review.study_uid, revision)
    # the impression comes after the findings in the keyboard order; the whole draft is next
    return redirect(f"{page}?focus={len(review.findings)}#impression")


@router.post("/studies/{study}/{revision}/draft")
async def draft_decision(
    request: Request, study: StudyRef, revision: RevisionNumber, state: StateDep, user: UserDep
) -> Response:
    """Accept or reject the whole draft with a coded reason (a new audit event)."""
    form = await read_form(request)
    refused = await run_in_threadpool(_stale_session, request, state, user, study, revision, "draft", form)
    if refused is not None:
        return refused
    _decider(user)
    key = _idempotency_key(request, form)
    study_uid = await run_in_threadpool(study_of, state, study, old_address=True)
    review = await run_in_threadpool(review_or_404, state, study_uid, revision)
    verdict, reason, comment = form.get("decision", ""), form.get("reason", ""), form.get("comment")
    try:
        _seq, queued = await run_in_threadpool(record_draft_decision, state, review, request_actor(request, user),
                                               user.account.name, verdict, reason, comment,
                                               _expected(form), key)  # fmt: skip
    except DecisionConflictError as exc:
        unsent = unsent_decision("draft", form)
        return await run_in_threadpool(_conflict, request, state, user, review, exc, unsent)
    except DecisionError as exc:
        return await run_in_threadpool(_refused, request, state, user, review, exc)
    if queued:
        await run_in_threadpool(ring, state, queued)
    handle = await run_in_threadpool(study_handle, state, study_uid)
    if form.get("then") == "next":
        return redirect(f"{PREFIX}/next?after={handle}&revision={revision}")
    return redirect(f"{PREFIX}/studies/{handle}/{revision}#draft")


@router.post("/studies/{study}/{revision}/flags-checked")
async def flags_checked(
    request: Request, study: StudyRef, revision: RevisionNumber, state: StateDep, user: UserDep
) -> Response:
    """Record that the radiologist checked a draft read from an image the PACS moved to another patient/study or
    rejected (``reason``: what they checked, required; an ``image_flags_checked`` event): the warning stays, as
    checked by them, and accepting the draft is allowed from then on. CSRF-checked, radiologists only. The form's
    ``marks_shown`` says which marks the page showed: 409 with the reason when they changed since it was loaded."""
    form = await read_form(request)
    check_csrf(user.csrf_token, dict(form))
    _decider(user)
    study_uid = await run_in_threadpool(study_of, state, study, old_address=True)
    review = await run_in_threadpool(review_or_404, state, study_uid, revision)
    try:
        await run_in_threadpool(check_flags, state.store, review, request_actor(request, user), form.get("reason"),
                                form.get("marks_shown"))  # fmt: skip
    except DecisionConflictError as exc:  # a new flag since the page was loaded: the check would not cover it
        raise HTTPException(409, detail=exc.reason) from exc
    except DecisionError as exc:
        raise HTTPException(422, detail=exc.reason) from exc
    handle = await run_in_threadpool(study_handle, state, study_uid)
    return redirect(f"{PREFIX}/studies/{handle}/{revision}#reassigned-warning")
