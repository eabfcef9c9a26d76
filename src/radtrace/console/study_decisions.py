"""The decisions a radiologist posts from the study page: each finding, the impression and the whole draft.

Each is a POST carrying the session's CSRF token, from a radiologist only; it is recorded as an audit event by
:mod:`.review` (a later one supersedes it, never an edit) and answered by a redirect back to the study page with
the next item selected, so a keyboard review goes on without a mouse. A decision made on a page that is out of
date (one was recorded since the page was loaded: its ``seen`` field) records nothing and is answered 409 with
the conflict page; one the rules refuse is a 422 with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from radtrace.audit.events import Actor
from radtrace.console.accounts import SignedIn
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
)
from radtrace.console.review import (
    DecisionConflictError,
    DecisionError,
    Expected,
    StudyReview,
    decide_finding,
    decide_impression,
)
from radtrace.console.study_page import RevisionNumber, StudyRef, review_or_404, study_handle, study_of, study_path

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _expected(form: dict[str, str]) -> Expected | None:
    """The decision the page showed as current (its ``seen`` field: empty for none); None when the form has no
    such field (a client that does not ask for the check)."""
    seen = form.get("seen")
    if seen is None:
        return None
    if seen == "":
        return Expected(None)
    if not seen.isdigit() or len(seen) > 18:
        raise HTTPException(422, detail="the form's seen field is empty or the number of the decision it showed")
    return Expected(int(seen))


def _conflict(request: Request, state: ConsoleState, user: SignedIn, review: StudyReview, reason: str) -> Response:
    """409: the decision was made on a page that is out of date; nothing was recorded."""
    log.info("console: a decision from an out-of-date page was refused (409)")
    return render_page(request, state, "conflict.html", 409, user=user, review=review, reason=reason,
                       handle=study_handle(state, review.study_uid))  # fmt: skip


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
    decide: Callable[[dict[str, str], StudyReview, Actor], int],
) -> tuple[dict[str, str], StudyReview | Response]:
    """Record one decision a radiologist posted (CSRF-checked, radiologists only): the form and the review, or
    the conflict page in its place when a decision was recorded since the page was loaded (409); a decision the
    rules refuse is a 422 with the reason."""
    form = await read_form(request)
    check_csrf(user.csrf_token, form)
    _decider(user)
    study_uid = await run_in_threadpool(study_of, state, study, old_address=True)
    review = await run_in_threadpool(review_or_404, state, study_uid, revision)
    try:
        await run_in_threadpool(decide, form, review, request_actor(request, user))
    except DecisionConflictError as exc:
        return form, await run_in_threadpool(_conflict, request, state, user, review, exc.reason)
    except DecisionError as exc:
        raise HTTPException(422, detail=exc.reason) from exc
    return form, review


@router.post("/studies/{study}/{revision}/findings")
async def finding_decision(
    request: Request, study: StudyRef, revision: RevisionNumber, state: StateDep, user: UserDep
) -> Response:
    """Accept, reject or modify one finding (a new audit event; a later one supersedes it)."""

    def decide(form: dict[str, str], review: StudyReview, actor: Actor) -> int:
        return decide_finding(state.store, review, actor, form.get("label", ""), form.get("decision", ""),
                              form.get("status") or None, form.get("comment"), _expected(form))  # fmt: skip

    form, review = await _decide(request, study, revision, state, user, decide)
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

    def decide(form: dict[str, str], review: StudyReview, actor: Actor) -> int:
        return decide_impression(state.store, review, actor, form.get("decision", ""), form.get("impression"),
                                 form.get("comment"), _expected(form))  # fmt: skip

    _form, review = await _decide(request, study, revision, state, user, decide)
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
    check_csrf(user.csrf_token, form)
    _decider(user)
    study_uid = await run_in_threadpool(study_of, state, study, old_address=True)
    review = await run_in_threadpool(review_or_404, state, study_uid, revision)
    verdict, reason, comment = form.get("decision", ""), form.get("reason", ""), form.get("comment")
    try:
        _seq, queued = await run_in_threadpool(record_draft_decision, state, review, request_actor(request, user),
                                               user.account.name, verdict, reason, comment,
                                               _expected(form))  # fmt: skip
    except DecisionConflictError as exc:
        return await run_in_threadpool(_conflict, request, state, user, review, exc.reason)
    except DecisionError as exc:
        raise HTTPException(422, detail=exc.reason) from exc
    if queued:
        await run_in_threadpool(ring, state, queued)
    handle = await run_in_threadpool(study_handle, state, study_uid)
    if form.get("then") == "next":
        return redirect(f"{PREFIX}/next?after={handle}&revision={revision}")
    return redirect(f"{PREFIX}/studies/{handle}/{revision}#draft")
