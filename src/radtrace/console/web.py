"""The console's pages: login, worklist, study review, images and decisions, served under ``/console``.

:func:`mount_console` adds them to the QA API's application, so ``radtrace serve`` (and ``radtrace api``)
serve the console with no further setting. Pages are rendered on the server (Jinja2, autoescaped); the CSS and
the script for keyboard shortcuts and window/level ship in this package (``/console/static``), never from a
CDN. Every state change is a POST carrying the session's CSRF token (the login form a double-submit token);
a request without it is refused with 403 and changes nothing. The session cookie is HttpOnly,
SameSite=Strict, and Secure when the request came over TLS (``console.cookie_secure``).

Routes are ``async`` only to read form bodies; database and image work runs in the thread pool.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.console import dashboard, explorer
from radtrace.console.accounts import LoginFailed, SignedIn, end_session, log_in
from radtrace.console.assessment_files import settle_pending
from radtrace.console.dashboard_agreement import current_agreement
from radtrace.console.draft_recording import assessments_root, record_draft_decision, ring
from radtrace.console.images import render_image
from radtrace.console.links import HANDLE, STUDY, UID
from radtrace.console.names import person_name
from radtrace.console.pages import (
    PREFIX,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    ConsoleState,
    LoginRequiredError,
    StateDep,
    UserDep,
    check_csrf,
    client_host,
    console_state,
    control_character_problem,
    read_form,
    redirect,
    render_page,
    request_actor,
    secure_cookies,
    set_session_cookie,
    signed_in_user,
    sync_worklist,
)
from radtrace.console.review import (
    DRAFT_REASONS,
    DecisionConflictError,
    DecisionError,
    Expected,
    StudyReview,
    decide_finding,
    decide_impression,
    load_review,
)
from radtrace.console.worklist import (
    FailedRow,
    WorklistFilter,
    WorklistPage,
    failed_count,
    failed_page,
    mark_opened,
    next_study,
    now,
    worklist_page,
)
from radtrace.errors import RadtraceError
from radtrace.store.engine import Store

if TYPE_CHECKING:
    from radtrace.reporting.dispatch.outbox import Outbox

__all__ = ["SESSION_COOKIE", "mount_console"]

log = logging.getLogger(__name__)

LOGIN_CSRF_COOKIE: Final = "radtrace_login_csrf"
_STATIC: Final = Path(__file__).with_name("static")
#: A study in a console address: its handle (:mod:`.links`); the Study UID of an old address is still read (see
#: :func:`_study_of`), never written.
StudyRef = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z._-]+$")]
RevisionNumber = Annotated[int, PathParam(ge=1)]

router = APIRouter(prefix=PREFIX, include_in_schema=False)


# --- login -----------------------------------------------------------------------------------


@router.get("/")
def home() -> RedirectResponse:
    """The console starts at the worklist."""
    return redirect(f"{PREFIX}/worklist")


_NEXT: Final = re.compile(r"^/console/(?!/)[A-Za-z0-9._/-]{0,300}$")


def _safe_next(value: str | None) -> str | None:
    """A console page to go to after signing in, or None: only a path under /console, never another site's."""
    if value and _NEXT.match(value) and ".." not in value and "//" not in value:
        return value
    return None


@router.get("/login")
def login_page(
    request: Request, state: StateDep, failed: bool = False,
    next_page: Annotated[str | None, Query(alias="next", max_length=400)] = None,
) -> HTMLResponse:  # fmt: skip
    """The sign-in form, with a fresh double-submit CSRF token (and the page to go back to, when safe)."""
    token = secrets.token_urlsafe(32)
    response = render_page(request, state, "login.html", 401 if failed else 200, csrf_token=token, failed=failed,
                           user=None, next_page=_safe_next(next_page))  # fmt: skip
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookies(request, state), path=f"{PREFIX}/login")  # fmt: skip
    return response


@router.post("/login")
async def login(request: Request, state: StateDep) -> Response:
    """Check the name and password; on success start a session and go to the worklist."""
    form = await read_form(request)
    check_csrf(request.cookies.get(LOGIN_CSRF_COOKIE), form)
    name, password = form.get("username", "").strip(), form.get("password", "")
    problem = control_character_problem({"username": name})
    if problem:
        raise HTTPException(400, detail=problem)
    result = await run_in_threadpool(
        log_in, state.store, name, password, state.settings.console, host=client_host(request)
    )
    next_page = _safe_next(form.get("next"))
    if isinstance(result, LoginFailed) or result.cookie is None:
        return redirect(f"{PREFIX}/login?failed=1" + (f"&next={quote(next_page)}" if next_page else ""))
    response = redirect(next_page or f"{PREFIX}/worklist")
    set_session_cookie(response, request, state, result.cookie)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=f"{PREFIX}/login")
    return response


@router.post("/logout")
async def logout(request: Request, state: StateDep, user: UserDep) -> Response:
    """End the session (recorded) and forget the cookie."""
    form = await read_form(request)
    check_csrf(user.csrf_token, form)
    await run_in_threadpool(end_session, state.store, user, host=client_host(request))
    response = redirect(f"{PREFIX}/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


# --- worklist --------------------------------------------------------------------------------


@router.get("/worklist")
def worklist(
    request: Request,
    state: StateDep,
    user: UserDep,
    show: Annotated[WorklistFilter, Query(alias="filter")] = WorklistFilter.UNASSESSED,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Drafts waiting for a radiologist: STAT first, then the oldest."""
    sync_worklist(state)
    size = state.settings.console.page_size
    failed: tuple[FailedRow, ...] = ()
    if show is WorklistFilter.FAILED:  # the page counts the failed revisions it lists: not counted twice
        failed, failed_total = failed_page(state.store, state.settings.spool_dir, page, size)
        listed = WorklistPage((), failed_total, page, size)
    else:
        listed = worklist_page(state.store, show, user.account.name, page, size)
        failed_total = failed_count(state.store)
    handles = state.links.study_handles(row.study_uid for row in listed.rows)
    return render_page(request, state, "worklist.html", user=user, page=listed, show=show.value, failed=failed,
                       failed_total=failed_total, filters=[f.value for f in WorklistFilter], now=now(),
                       handles=handles)  # fmt: skip


@router.get("/next")
def next_one(
    state: StateDep,
    user: UserDep,
    after: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9A-Za-z_-]+$")] = None,
    study: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9.]+$")] = None,
    revision: Annotated[int | None, Query(ge=1)] = None,
) -> RedirectResponse:
    """The next unassessed study in worklist order after the study of handle ``after`` (``study``: an old link's
    Study UID), or the worklist when none is left."""
    sync_worklist(state)
    skipped = state.links.study_uid(STUDY, after) if after else study
    found = next_study(state.store, user.account.name, (skipped, revision) if skipped and revision else None)
    if found is None:
        return redirect(f"{PREFIX}/worklist")
    return redirect(study_path(state, *found))


@router.get("/agreement")
def agreement_page(request: Request, state: StateDep, user: UserDep) -> HTMLResponse:
    """How often radiologists accept, reject or modify each finding and whole drafts (current decisions only)."""
    figures = current_agreement(state.store)
    return render_page(request, state, "agreement.html", user=user, findings=figures.findings,
                       impression=figures.impression, drafts=figures.drafts, reasons=figures.reasons,
                       reason_meanings=DRAFT_REASONS)  # fmt: skip


# --- study -----------------------------------------------------------------------------------


def study_path(state: ConsoleState, study_uid: str, revision: int) -> str:
    """The address of one revision's study page: the study by its handle, never its UID."""
    return f"{PREFIX}/studies/{_handle(state, study_uid)}/{revision}"


def _handle(state: ConsoleState, study_uid: str) -> str:
    return state.links.study_handles([study_uid])[study_uid]


def _study_of(state: ConsoleState, ref: str, *, old_address: bool = False) -> str:
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


def _review_or_404(state: ConsoleState, study_uid: str, revision: int) -> StudyReview:
    review = load_review(state.store, study_uid, revision)
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
        parts = [match.group(0) for match in re.finditer(r"[^.!?\n]+[.!?]?\s*|\n+", text)]
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
    study_uid = _study_of(state, study, old_address=True)
    review = _review_or_404(state, study_uid, revision)
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
    return render_page(request, state, "study.html", user=user, review=review, sections=_sentences(review),
                       reasons=DRAFT_REASONS, handle=study,
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
    study_uid = _study_of(state, study)
    review = _review_or_404(state, study_uid, revision)
    if number >= len(review.images):
        raise HTTPException(404, detail="the model did not read this image")
    sop_uid = str(review.images[number].get("sop_instance_uid"))
    try:
        data = render_image(state.store, state.settings, study_uid, revision, sop_uid, kind)
    except (OSError, RadtraceError) as exc:
        log.warning("console: image could not be rendered: %s", type(exc).__name__)
        raise HTTPException(404, detail="the image could not be read from the spool") from exc
    AuditRecorder(state.store).record(
        AuditEvent(EventType.IMAGE_VIEWED, request_actor(request, user), study_uid=study_uid,
                   accession=review.accession,
                   payload={"revision": revision, "sop_instance_uid": sop_uid, "rendering": kind})
    )  # fmt: skip
    return Response(data, media_type="image/png", headers={**SECURITY_HEADERS, "Cache-Control": "private, no-store"})


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
                       handle=_handle(state, review.study_uid))  # fmt: skip


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
    study_uid = await run_in_threadpool(_study_of, state, study, old_address=True)
    review = await run_in_threadpool(_review_or_404, state, study_uid, revision)
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
    study_uid = await run_in_threadpool(_study_of, state, study, old_address=True)
    review = await run_in_threadpool(_review_or_404, state, study_uid, revision)
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
    handle = await run_in_threadpool(_handle, state, study_uid)
    if form.get("then") == "next":
        return redirect(f"{PREFIX}/next?after={handle}&revision={revision}")
    return redirect(f"{PREFIX}/studies/{handle}/{revision}#draft")


@router.get("/studies/{study}/{revision}/assessments/{seq}.dcm")
def assessment_file(
    request: Request,
    study: StudyRef,
    revision: RevisionNumber,
    seq: Annotated[int, PathParam(ge=1)],
    state: StateDep,
    user: UserDep,
) -> Response:
    """The assessment SR kept for the whole-draft decision recorded as audit event ``seq``, byte for byte
    (recorded as ``draft_exported``); one whose decision was committed just before a crash is kept now
    (:func:`settle_pending`)."""
    study_uid = _study_of(state, study)
    review = _review_or_404(state, study_uid, revision)
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


# --- wiring ----------------------------------------------------------------------------------


async def _on_needs_login(request: Request, exc: Exception) -> Response:
    """A GET goes to the sign-in form (back to a study page after it, for a link to a study); a POST (a decision,
    say) is answered 401 with a page that says nothing was recorded and leads to the sign-in form, then back to
    the study the form was on. An old address with a Study UID leads back nowhere: the UID is not said again, in
    ``next`` or anywhere."""
    study = re.fullmatch(
        rf"({PREFIX}/studies/([0-9A-Za-z_-]{{24}}|[0-9.]{{1,64}})/[0-9]{{1,9}})(/findings|/draft|/impression)?",
        request.url.path,
    )
    back = _safe_next(study.group(1)) if study and not UID.match(study.group(2)) else None
    if request.method == "GET":
        page = back if study and not study.group(3) else None
        return redirect(f"{PREFIX}/login" + (f"?next={quote(page)}" if page else ""))
    typed: list[tuple[str, str]] = []
    if study and study.group(3):  # what the radiologist wrote is shown back, to copy, not lost with the session
        try:
            form = await read_form(request)
        except HTTPException:
            form = {}
        for field, what in (("impression", "Your impression"), ("comment", "Your comment")):
            if (form.get(field) or "").strip():
                typed.append((what, form[field]))
    return render_page(request, console_state(request), "signed_out.html", 401, user=None, next_page=back,
                       typed=typed)  # fmt: skip


def _wants_page(request: Request) -> bool:
    """Whether an error answers a browser navigating the console (an HTML page) rather than a script or a
    download (FastAPI's JSON, as before)."""
    path = request.url.path
    return (
        (path == PREFIX or path.startswith(f"{PREFIX}/"))
        and not path.endswith(".csv")
        and ("text/html" in request.headers.get("accept", ""))
    )


def _problem_page(request: Request, status: int, reason: str) -> Response:
    state = console_state(request)
    try:
        user: SignedIn | None = signed_in_user(request, state)
    except LoginRequiredError:
        user = None
    return render_page(request, state, "problem.html", status, user=user, reason=reason)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for this class only
        raise exc
    if _wants_page(request) and 400 <= exc.status_code < 500:
        return await run_in_threadpool(_problem_page, request, exc.status_code, str(exc.detail))
    return await http_exception_handler(request, exc)


async def _on_invalid_request(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover - registered for this class only
        raise exc
    if _wants_page(request):
        problems = "; ".join(f"{error['loc'][-1]}: {error['msg']}" for error in exc.errors())
        return await run_in_threadpool(_problem_page, request, 422, problems)
    return await request_validation_exception_handler(request, exc)


def templates() -> Environment:
    """The console's Jinja2 environment (HTML autoescaped)."""
    environment = Environment(
        loader=PackageLoader("radtrace.console", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["waiting"] = _waiting
    environment.filters["person_name"] = person_name
    return environment


def _waiting(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d}" if hours < 48 else f"{hours // 24} d"


def _outbox(store: Store, settings: Settings) -> Outbox:
    from radtrace.reporting.dispatch.outbox import Outbox
    from radtrace.worker.pipeline import payload_dir

    return Outbox(store, AuditRecorder(store), settings.dispatch, payload_dir(settings))


def mount_console(app: FastAPI, store: Store, settings: Settings) -> None:
    """Serve the console under ``/console`` of ``app`` (the QA API), with its static files."""
    app.state.console = ConsoleState(store, settings, templates())
    try:  # assessment SRs and their outbox payloads left pending by a crash between writing and recording them
        settle_pending(store, assessments_root(settings))
        _outbox(store, settings).settle_pending()
    except (OSError, RadtraceError) as exc:
        log.warning("console: pending assessment SRs could not be settled: %s", type(exc).__name__)
    try:  # searches (patient identifiers) and timeline links that expired while no console ran
        app.state.console.links.forget_expired()
    except RadtraceError as exc:
        log.warning("console: expired links could not be forgotten: %s", type(exc).__name__)
    app.include_router(router)
    app.include_router(dashboard.router)
    app.include_router(explorer.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=_STATIC), name="console-static")
    app.add_exception_handler(LoginRequiredError, _on_needs_login)
    # A refusal (4xx) reaches a browser as a console page with its reason; scripts and CSVs get FastAPI's JSON.
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
