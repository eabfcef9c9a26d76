"""The console's pages, served under ``/console``: login and worklist here, the study page and its images in
:mod:`.study_page`, the decisions posted from it in :mod:`.study_decisions`.

:func:`mount_console` adds them to the QA API's application, so ``radtrace serve`` (and ``radtrace api``)
serve the console with no further setting. Pages are rendered on the server (Jinja2, autoescaped); the CSS and
the script for keyboard shortcuts and window/level ship in this package (``/console/static``), never from a
CDN. Every state change is a POST carrying the session's CSRF token (the login form a double-submit token);
a request without it is refused with 403 and changes nothing. The session cookie is HttpOnly,
SameSite=Strict, and Secure when the request came over TLS (``console.cookie_secure``).

Routes are ``async`` only to read form bodies; database and image work runs in the thread pool.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from radtrace.audit.api import on_invalid_request
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import Settings
from radtrace.console import dashboard, explorer, study_decisions, study_page
from radtrace.console.accounts import LoginFailed, SignedIn, end_session, log_in
from radtrace.console.ages import shown_age
from radtrace.console.assessment_files import settle_pending
from radtrace.console.dashboard_agreement import current_agreement
from radtrace.console.dashboard_left_out import left_out_days
from radtrace.console.draft_recording import assessments_root
from radtrace.console.identifiers import shown_id, shown_id_text, shown_lines, shown_text
from radtrace.console.images import PictureCache
from radtrace.console.links import STUDY, UID
from radtrace.console.names import shown_name, shown_name_text
from radtrace.console.pages import (
    PREFIX,
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
    secure_cookies,
    set_session_cookie,
    signed_in_user,
    sync_worklist,
    wants_page,
)
from radtrace.console.review import DRAFT_REASONS
from radtrace.console.study_page import MAX_REVISION, study_path
from radtrace.console.times import shown_time
from radtrace.console.worklist import (
    FailedRow,
    WorklistFilter,
    WorklistPage,
    failed_count,
    failed_page,
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
        failed, failed_total = failed_page(
            state.store, state.settings.spool_dir, page, size,
            listener=state.settings.listener,
        )  # fmt: skip
        listed = WorklistPage((), failed_total, page, size)
    else:
        listed = worklist_page(state.store, show, user.account.name, page, size)
        failed_total = failed_count(state.store)
    handles = state.links.study_handles(row.study_uid for row in listed.rows)
    zone = ZoneInfo(state.settings.qa.time_zone)  # the failed list's times, as the review page writes them
    return render_page(request, state, "worklist.html", user=user, page=listed, show=show.value, failed=failed,
                       failed_total=failed_total, filters=[f.value for f in WorklistFilter], now=now(),
                       handles=handles, shown=lambda at: shown_time(at, zone, named=True))  # fmt: skip


@router.get("/next")
def next_one(
    state: StateDep,
    user: UserDep,
    after: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9A-Za-z_-]+$")] = None,
    study: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9.]+$")] = None,
    revision: Annotated[int | None, Query(ge=1, le=MAX_REVISION)] = None,
) -> RedirectResponse:
    """The next unassessed study in worklist order after the study of handle ``after`` (``study``: an old link's
    Study UID), or the worklist when none is left."""
    sync_worklist(state)
    skipped = state.links.study_uid(STUDY, after) if after else study
    found = next_study(state.store, user.account.name, (skipped, revision) if skipped and revision else None,
                       state.settings.console.idle_timeout_s)  # fmt: skip
    if found is None:
        return redirect(f"{PREFIX}/worklist")
    return redirect(study_path(state, *found))


@router.get("/agreement")
def agreement_page(request: Request, state: StateDep, user: UserDep) -> HTMLResponse:
    """How often radiologists accept, reject or modify each finding and whole drafts (current decisions only). The
    note on the decisions left out links QA and admin users (who may see it) to the list of them, over the days
    they were recorded on (at most the dashboard's longest window, the latest days); other roles see the count."""
    figures = current_agreement(state.store)
    listed: dict[str, str] | None = None
    if figures.left_out.decisions and user.account.role.value in ("qa", "admin"):
        days = left_out_days(state.store, state.settings.qa.time_zone)
        if days is not None:
            first, last = max(days[0], days[1] - timedelta(days=dashboard.MAX_DAYS - 1)), days[1]
            listed = {"from": first.isoformat(), "to": last.isoformat(), "all": "yes" if first == days[0] else ""}
    return render_page(request, state, "agreement.html", user=user, findings=figures.findings,
                       impression=figures.impression, drafts=figures.drafts, reasons=figures.reasons,
                       reason_meanings=DRAFT_REASONS, left_out=figures.left_out, listed=listed,
                       max_days=dashboard.MAX_DAYS)  # fmt: skip


# --- wiring ----------------------------------------------------------------------------------


async def _on_needs_login(request: Request, exc: Exception) -> Response:
    """A GET goes to the sign-in form (back to a study page after it, for a link to a study); a POST (a decision,
    say) is answered 401 with a page that says nothing was recorded and leads to the sign-in form, then back to
    the study the form was on. An old address with a Study UID leads back nowhere: the UID is not said again, in
    ``next`` or anywhere."""
    study = _study_form(request)
    back = _safe_next(study.group(1)) if study and not UID.match(study.group(2)) else None
    if request.method == "GET":
        page = back if study and not study.group(3) else None
        return redirect(f"{PREFIX}/login" + (f"?next={quote(page)}" if page else ""))
    unsent = None
    if study and study.group(3):  # the decision and what the radiologist wrote are shown back, not lost
        try:  # a control character in typed text is refused once signed in: here the text is shown back whole
            form = await read_form(request, typed_text_checked=False)
        except HTTPException:
            form = {}
        unsent = study_decisions.unsent_decision(study.group(3)[1:], form)
    return render_page(request, console_state(request), "signed_out.html", 401, user=None, next_page=back,
                       unsent=unsent)  # fmt: skip


def _study_form(request: Request) -> re.Match[str] | None:
    """The study page (group 1), its handle or old Study UID (2) and its form (3: /findings, /draft, /impression)
    an address is of, or None."""
    return re.fullmatch(
        rf"({PREFIX}/studies/([0-9A-Za-z_-]{{24}}|[0-9.]{{1,64}})/[0-9]{{1,9}})(/findings|/draft|/impression)?",
        request.url.path,
    )


def _problem_page(request: Request, status: int, reason: str) -> Response:
    """A refusal as a page with its reason; a decision refused on a study (a comment too long, a control character)
    leads back to that study, where the radiologist goes on, as well as to the worklist."""
    state = console_state(request)
    try:
        user: SignedIn | None = signed_in_user(request, state)
    except LoginRequiredError:
        user = None
    study = _study_form(request)
    back = _safe_next(study.group(1)) if study and study.group(3) and not UID.match(study.group(2)) else None
    return render_page(request, state, "problem.html", status, user=user, reason=reason, back=back)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover - registered for this class only
        raise exc
    if wants_page(request) and 400 <= exc.status_code < 500:
        return await run_in_threadpool(_problem_page, request, exc.status_code, str(exc.detail))
    return await http_exception_handler(request, exc)


async def _on_invalid_request(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # pragma: no cover - registered for this class only
        raise exc
    if wants_page(request):
        problems = "; ".join(f"{error['loc'][-1]}: {error['msg']}" for error in exc.errors())
        return await run_in_threadpool(_problem_page, request, 422, problems)
    return await on_invalid_request(request, exc)  # the QA API's answer: always encodable


def templates() -> Environment:
    """The console's Jinja2 environment (HTML autoescaped)."""
    environment = Environment(
        loader=PackageLoader("radtrace.console", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["waiting"] = _waiting
    environment.filters["age"] = shown_age
    environment.filters["shown_name"] = shown_name
    environment.filters["shown_name_text"] = shown_name_text
    environment.filters["shown_id"] = shown_id
    environment.filters["shown_id_text"] = shown_id_text
    environment.filters["shown_text"] = shown_text
    environment.filters["shown_lines"] = shown_lines
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
    pictures = PictureCache(settings.console.picture_cache_bytes)
    app.state.console = ConsoleState(store, settings, templates(), pictures=pictures)
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
    app.include_router(study_page.router)
    app.include_router(study_decisions.router)
    app.include_router(dashboard.router)
    app.include_router(explorer.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=_STATIC), name="console-static")
    app.add_exception_handler(LoginRequiredError, _on_needs_login)
    # A refusal (4xx) reaches a browser as a console page with its reason; scripts and CSVs get FastAPI's JSON.
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
    _close_on_shutdown(app, pictures)


def _close_on_shutdown(app: FastAPI, pictures: PictureCache) -> None:
    """Stop the picture cache's checker thread when the server shuts down (its lifespan's end), after whatever
    lifespan ``app`` had: left running, it kept looking at the spool every few seconds in a process whose server
    had stopped (a test's, or a process embedding the console)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        try:
            async with inner(application) as state:
                yield state
        finally:
            await run_in_threadpool(pictures.close)

    app.router.lifespan_context = lifespan
