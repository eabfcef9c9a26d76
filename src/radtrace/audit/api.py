"""The read-only QA HTTP API: audit events, study timelines, chain verification and CSV export.

:func:`create_api` builds a FastAPI application around the store it is given; nothing is global.
Every route except ``/healthz`` and the OpenAPI documents (``/docs``, ``/openapi.json``) needs a
bearer token made with ``radtrace audit token create``: role ``qa`` reads events and timelines,
``admin`` also verifies the chain and exports. Every use is recorded in the audit log naming the
token (as the actor's user) and the client's address; a failed authentication is recorded as
``api_authentication_failed``, never with the token that was presented.

Status codes: 200 done; 401 no token or an unknown or revoked one (with ``WWW-Authenticate:
Bearer``); 403 the token's role does not allow the route; 404 no audit event names that study;
422 invalid parameters; 503 the database is unavailable (or not migrated).

The routes are plain ``def`` functions: FastAPI runs them in its thread pool, where the
synchronous SQLAlchemy engine belongs. The access log names route templates, never paths or query
strings, which may hold study UIDs and patient IDs (``radtrace api`` turns uvicorn's own off).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from radtrace import __version__
from radtrace.audit.checkpoints import CheckpointSource
from radtrace.audit.events import Actor, AuditEvent, EventType, Outcome
from radtrace.audit.operations import verify_audit_log
from radtrace.audit.presentation import csv_chunks
from radtrace.audit.queries import (
    AuditFilter,
    AuditQuery,
    QueryError,
    QueryPage,
    Timeline,
    export_records,
    run_query,
    study_timeline,
)
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.tokens import AuthenticationError, Role, TokenInfo, authenticate
from radtrace.errors import RadtraceError, ReportError, StoreUnavailableError
from radtrace.reporting.draft_store import DraftRevision, list_drafts, read_draft
from radtrace.store.engine import Store
from radtrace.store.migrate import current_revision, head_revision

__all__ = ["Caller", "DraftFile", "Health", "KeptRevision", "VerificationReport", "create_api", "on_invalid_request"]

log = logging.getLogger(__name__)

RETRY_AFTER_S: Final = "30"
DESCRIPTION: Final = (
    "Every route but /healthz needs a bearer token from `radtrace audit token create NAME --role qa|admin`: "
    "`qa` reads events and timelines, `admin` also verifies the hash chain and exports CSV. Every use is "
    "itself recorded in the audit log, naming the token and the client's address."
)


class Problem(BaseModel):
    """Why a request failed."""

    detail: str


_PROBLEMS: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": Problem, "description": "no bearer token, or an unknown or revoked one"},
    403: {"model": Problem, "description": "the token's role does not allow this"},
    503: {"model": Problem, "description": "the database is unavailable"},
}
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description="a token from 'radtrace audit token create NAME --role qa|admin'",
)
router = APIRouter()


@dataclass(frozen=True)
class Caller:
    """An authenticated request: the token used and the audit actor it stands for."""

    token: TokenInfo
    actor: Actor


@dataclass(frozen=True)
class Health:
    """The service can reach its database and the schema is the one it needs."""

    status: str
    schema_revision: str


@dataclass(frozen=True)
class VerificationReport:
    """The result of walking the hash chain (see ``radtrace audit verify``)."""

    ok: bool
    rows_checked: int
    head_seq: int
    head_hash: str
    first_break_seq: int | None
    first_break_problem: str | None
    checkpoints_checked: int
    anchored_seq: int | None
    problems: list[str]
    covered: str
    not_checked: str


StudyUid = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9.]+$", description="Study Instance UID")]


def _store(request: Request) -> Store:
    store = request.app.state.store
    if not isinstance(store, Store):  # pragma: no cover - create_api always sets it
        raise RuntimeError("the QA API was built without a store")
    return store


StoreDep = Annotated[Store, Depends(_store)]


def _authenticated(
    request: Request,
    store: StoreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    host = request.client.host if request.client else None
    token_name: str | None = None
    if credentials is None:
        reason = "no bearer token"
    else:
        try:
            token = authenticate(store, credentials.credentials)
        except AuthenticationError as exc:
            reason, token_name = exc.reason, exc.token_name
        else:
            return Caller(token, Actor(user=token.name, host=host))
    payload: dict[str, Any] = {"reason": reason, "method": request.method, "path": request.url.path}
    if token_name is not None:
        payload["token_name"] = token_name
    AuditRecorder(store).record(
        AuditEvent(EventType.API_AUTHENTICATION_FAILED, Actor(host=host), Outcome.MINOR_FAILURE, payload=payload)
    )
    challenge = 'Bearer realm="radtrace"' + ("" if credentials is None else ', error="invalid_token"')
    raise HTTPException(401, detail=f"authentication failed: {reason}", headers={"WWW-Authenticate": challenge})


def _role(needed: Role) -> Callable[[Caller], Caller]:
    def check(caller: Annotated[Caller, Depends(_authenticated)]) -> Caller:
        if not caller.token.role.allows(needed):
            raise HTTPException(
                403, detail=f"this needs the {needed} role; token {caller.token.name!r} has {caller.token.role}"
            )
        return caller

    return check


QaCaller = Annotated[Caller, Depends(_role(Role.QA))]
AdminCaller = Annotated[Caller, Depends(_role(Role.ADMIN))]


#: /healthz asks the database at most once in this long, however often it is asked (anyone may ask, at any rate).
HEALTH_TTL_S: Final = 1.0


class _SchemaCheck:
    """The database's schema revision (or the error asking for it), asked at most once per :data:`HEALTH_TTL_S`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked = -HEALTH_TTL_S
        self._answer: str | None = None
        self._error: Exception | None = None

    def revision(self, store: Store) -> str | None:
        with self._lock:  # one query at a time; the others take its answer
            if time.monotonic() - self._asked >= HEALTH_TTL_S:
                try:
                    self._answer, self._error = current_revision(store), None
                except Exception as exc:
                    self._answer, self._error = None, exc
                self._asked = time.monotonic()
            if self._error is not None:
                raise self._error
            return self._answer


@router.get("/healthz", tags=["service"], responses={503: _PROBLEMS[503]})
@router.head("/healthz", include_in_schema=False)  # load balancers' health checks ask with HEAD
def healthz(request: Request, store: StoreDep) -> Health:
    """Whether the database answers and is migrated, as seen at most a second ago (no token needed; records
    nothing). ``HEAD`` answers the same status without the body."""
    current, needed = request.app.state.schema_check.revision(store), head_revision()
    if current != needed:
        raise HTTPException(
            503, detail=f"database schema is at {current or 'none'}, needs {needed}: run 'radtrace db upgrade'"
        )
    return Health("ok", current)


@router.get("/v1/events", tags=["audit"], responses=_PROBLEMS)
def list_events(query: Annotated[AuditQuery, Query()], caller: QaCaller, store: StoreDep) -> QueryPage:
    """Audit events matching every given filter, in seq order, one page at a time (for a patient ID or
    accession number, prefer ``POST /v1/events/search``: a query string is logged by proxies).

    Pass the page's ``next_after_seq`` as ``after_seq`` to get the next page; it is ``null`` on the
    last one. With ``order=desc`` the page is the newest events, newest first: pass its ``next_before_seq`` as
    ``before_seq`` for the older ones. Paging stays stable while new events are appended. The query is itself
    recorded.
    """
    return run_query(store, query, caller.actor)


@router.post("/v1/events/search", tags=["audit"], responses=_PROBLEMS)
def search_events(query: AuditQuery, caller: QaCaller, store: StoreDep) -> QueryPage:
    """As ``GET /v1/events``, the filters in a JSON body: use it for a patient ID or accession number, which in a
    URL end up in proxy and server logs and in browser history."""
    return run_query(store, query, caller.actor)


@router.get(
    "/v1/studies/{study_uid}/timeline",
    tags=["audit"],
    responses={**_PROBLEMS, 404: {"model": Problem, "description": "no audit event names this study"}},
)
def get_timeline(
    study_uid: StudyUid,
    caller: QaCaller,
    store: StoreDep,
) -> Timeline:
    """Every event of one study with the time since the previous and the first, and the stage durations."""
    timeline = study_timeline(store, study_uid, caller.actor)
    if not timeline.entries:
        raise HTTPException(404, detail="no audit event names this study")
    return timeline


def _drafts_dir(request: Request) -> FsPath:
    drafts = request.app.state.drafts_dir
    if not isinstance(drafts, FsPath):
        raise HTTPException(404, detail="this API was started without a drafts folder")
    return drafts


DraftsDep = Annotated[FsPath, Depends(_drafts_dir)]
_NO_DRAFT: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": Problem, "description": "no draft is kept for this study (or revision)"}
}


def _record_draft_use(store: Store, caller: Caller, kind: EventType, study_uid: str, **details: Any) -> None:
    AuditRecorder(store).record(AuditEvent(kind, caller.actor, study_uid=study_uid, payload={"via": "api", **details}))


#: How each kind of kept draft is served.
_DRAFT_MEDIA: Final = {"sr": "application/dicom", "gsps": "application/dicom", "companion": "application/dicom",
                       "hl7": "x-application/hl7-v2+er7", "fhir": "application/fhir+json"}  # fmt: skip


class DraftFile(BaseModel):
    """One kept draft file as a client fetches it: through the API, never by its place on the server."""

    kind: str
    name: str
    media_type: str
    size: int
    sha256: str
    url: str


class KeptRevision(BaseModel):
    """One kept revision of a study's draft: its files and the address of its read-back view."""

    study_uid: str
    revision: int
    modified: str
    url: str
    files: list[DraftFile]


def _draft_files(request: Request, study_uid: str, revision: int, kept: dict[str, FsPath]) -> list[DraftFile]:
    """The revision's files as a client uses them: name, media type, size, SHA-256 of the bytes the API serves
    and the API address to fetch each one (under the application's root path)."""
    files = []
    for kind, path in kept.items():
        data = path.read_bytes()
        url = request.app.url_path_for("download_study_draft", study_uid=study_uid, revision=str(revision), kind=kind)
        files.append(DraftFile(kind=kind, name=path.name, media_type=_DRAFT_MEDIA[kind], size=len(data),
                               sha256=hashlib.sha256(data).hexdigest(),
                               url=request.scope.get("root_path", "") + url))  # fmt: skip
    return files


def _kept_revision(request: Request, draft: DraftRevision) -> KeptRevision:
    url = request.app.url_path_for("get_study_draft", study_uid=draft.study_uid, revision=str(draft.revision))
    return KeptRevision(
        study_uid=draft.study_uid,
        revision=draft.revision,
        modified=draft.modified.isoformat(timespec="seconds"),
        url=request.scope.get("root_path", "") + url,
        files=_draft_files(request, draft.study_uid, draft.revision, draft.files),
    )


@router.get("/v1/studies/{study_uid}/drafts", tags=["drafts"], responses={**_PROBLEMS, **_NO_DRAFT})
def list_study_drafts(request: Request, study_uid: StudyUid, caller: QaCaller, drafts: DraftsDep) -> list[KeptRevision]:
    """The kept revisions of one study's draft, newest first: each file's kind, name, media type, size and
    SHA-256, and the API address to fetch it from (``url``)."""
    kept = list_drafts(drafts, study_uid)
    if not kept:
        raise HTTPException(404, detail="no draft is kept for this study")
    return [_kept_revision(request, draft) for draft in kept]


@router.get("/v1/studies/{study_uid}/drafts/{revision}", tags=["drafts"], responses={**_PROBLEMS, **_NO_DRAFT})
def get_study_draft(
    request: Request,
    study_uid: StudyUid,
    revision: Annotated[int, Path(ge=1)],
    caller: QaCaller,
    store: StoreDep,
    drafts: DraftsDep,
) -> dict[str, Any]:
    """One kept draft read back from its SR: findings, impression, reasoning, and its files as the listing
    names them (recorded as draft_accessed)."""
    if not any(kept.revision == revision for kept in list_drafts(drafts, study_uid)):
        raise HTTPException(404, detail=f"no draft is kept for revision {revision} of this study")
    try:
        view = read_draft(drafts, study_uid, revision)
    except ReportError as exc:  # its reason names the file on the server: for the server's log and CLI, not a client
        log.error("GET draft: the kept SR of revision %d of a study cannot be read (%s)", revision, type(exc).__name__)
        detail = f"the kept SR of revision {revision} of this study cannot be read ('radtrace drafts show' says why)"
        raise HTTPException(500, detail=detail) from exc
    _record_draft_use(store, caller, EventType.DRAFT_ACCESSED, study_uid, revision=revision)
    files = _draft_files(request, view.study_uid, view.revision, view.files)
    return {**view.as_json(), "files": [file.model_dump() for file in files]}


@router.get(
    "/v1/studies/{study_uid}/drafts/{revision}/{kind}",
    tags=["drafts"],
    response_class=Response,
    responses={**_PROBLEMS, **_NO_DRAFT, 200: {"description": "the file as kept (DICOM, HL7 v2 or FHIR JSON)"}},
)
def download_study_draft(
    study_uid: StudyUid,
    revision: Annotated[int, Path(ge=1)],
    kind: Annotated[
        str, Path(pattern="^(sr|hl7|fhir|gsps|companion)$", description="sr, hl7, fhir, gsps or companion")
    ],
    caller: QaCaller,
    store: StoreDep,
    drafts: DraftsDep,
) -> Response:
    """One kept draft file, byte for byte (recorded as draft_exported)."""
    kept = [draft for draft in list_drafts(drafts, study_uid) if draft.revision == revision]
    if not kept or kind not in kept[0].files:
        raise HTTPException(404, detail=f"no {kind} draft is kept for this study and revision")
    path = kept[0].files[kind]
    _record_draft_use(store, caller, EventType.DRAFT_EXPORTED, study_uid, revision=revision, files=[path.name])
    return Response(
        path.read_bytes(),
        media_type=_DRAFT_MEDIA[kind],
        headers={"Content-Disposition": f'attachment; filename="{path.name}"'},
    )


@router.get("/v1/verify", tags=["admin"], responses=_PROBLEMS)
def verify(request: Request, caller: AdminCaller, store: StoreDep) -> VerificationReport:
    """Walk the whole hash chain against every signed checkpoint this service holds and report the first broken
    row, each checkpoint that fails, and in words what is covered (``covered``) and what is not (``not_checked``)
    (admin only; recorded, and alerts if anything fails)."""
    verified = verify_audit_log(store, caller.actor, checkpoints=request.app.state.checkpoints)
    result = verified.result
    broken = result.first_break
    return VerificationReport(
        ok=verified.ok,
        rows_checked=result.rows_checked,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
        first_break_seq=broken.seq if broken else None,
        first_break_problem=broken.problem if broken else None,
        checkpoints_checked=result.checkpoints_checked,
        anchored_seq=result.anchored_seq,
        problems=verified.problems,
        covered=verified.covered,
        not_checked=verified.not_covered,
    )


@router.get(
    "/v1/export.csv",
    tags=["admin"],
    response_class=StreamingResponse,
    responses={**_PROBLEMS, 200: {"content": {"text/csv": {}}, "description": "header line, then one event a line"}},
)
def export_csv(filters: Annotated[AuditFilter, Query()], caller: AdminCaller, store: StoreDep) -> StreamingResponse:
    """Every event matching the filters as CSV, streamed (admin only; the export is recorded first)."""
    records = export_records(store, filters, caller.actor)
    return StreamingResponse(
        csv_chunks(records),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="radtrace-audit.csv"'},
    )


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, RadtraceError) else "internal error"


def _route(request: Request) -> str:
    # The route's template (/v1/studies/{study_uid}/timeline), never the path or query string, which
    # carry study UIDs and patient IDs that must not reach a log line. A mount's (the console's static files,
    # /console/static/{path}) is its path and {path}.
    route = _served_by(request)
    if isinstance(route, Mount):
        return f"{route.path}/{{path}}"
    return str(getattr(route, "path", "(no route)"))


def _served_by(request: Request) -> object:
    """The route, or the mount, that served the request (None: none did)."""
    return request.scope.get("route") or _mount(request)


def _mount(request: Request) -> Mount | None:
    """The mount that served the request: FastAPI (0.165) sets no ``route`` in the scope for a mount, only the
    application it handed the request to (``endpoint``)."""
    endpoint = request.scope.get("endpoint")
    if endpoint is None:
        return None
    routes = getattr(request.scope.get("app"), "routes", ())
    return next((route for route in routes if isinstance(route, Mount) and route.app is endpoint), None)


async def _on_store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("QA API %s %s: %s", request.method, _route(request), _reason(exc))
    return JSONResponse({"detail": _reason(exc)}, status_code=503, headers={"Retry-After": RETRY_AFTER_S})


async def _on_query_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": _reason(exc)}, status_code=422)


async def on_invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for invalid parameters (each problem's location, message and input), answered here so that it
    can always be encoded: FastAPI's own handler echoes each invalid input, and one holding a lone surrogate (a JSON
    ``"\\ud800"``, which pydantic refuses as no text) could not be encoded in UTF-8, a 500 whose logged traceback
    held the request's values. Each lone surrogate is said as its escape. The console's handler answers an API
    client with this too (:mod:`radtrace.console.web`)."""
    if not isinstance(exc, RequestValidationError):  # pragma: no cover - registered for this class only
        raise exc
    return JSONResponse({"detail": _encodable(jsonable_encoder(exc.errors()))}, status_code=422)


def _encodable(value: object) -> object:
    """``value`` (JSON data) with each lone surrogate written as its escape (``\\ud800``), so it encodes as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    if isinstance(value, dict):
        return {_encodable(key): _encodable(item) for key, item in value.items()}
    return value


async def _on_radtrace_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("QA API %s %s failed: %s", request.method, _route(request), _reason(exc))
    return JSONResponse({"detail": _reason(exc)}, status_code=500)


async def _access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """One log line per request, naming the route template instead of the path (see ``_route``); a static file
    served, at DEBUG."""
    started = time.perf_counter()
    response = await call_next(request)
    client = request.client.host if request.client else "-"
    elapsed_ms = (time.perf_counter() - started) * 1000
    # a static file answered (a console page's styles and scripts, several a page) is no event: DEBUG
    route = _served_by(request)
    static = isinstance(route, Mount) and isinstance(route.app, StaticFiles) and response.status_code < 400
    level = logging.DEBUG if static else logging.INFO
    log.log(
        level, "%s %s %s -> %d (%.0f ms)", client, request.method, _route(request), response.status_code, elapsed_ms
    )
    return response


def create_api(
    store: Store, *, drafts_dir: FsPath | None = None, checkpoints: CheckpointSource | None = None
) -> FastAPI:
    """The QA API over ``store`` (and the kept drafts in ``drafts_dir``); serve it with any ASGI server.

    ``checkpoints``: where the signed checkpoints are and their key, which ``/v1/verify`` checks the chain
    against (without, it says that no row is anchored).
    """
    # FastAPIOffline serves Swagger UI's scripts and styles from its package (under /static-offline-docs):
    # /docs must work on a hospital network with no route to a CDN.
    app = FastAPIOffline(
        title="radtrace QA API",
        version=__version__,
        summary="Read-only access to radtrace's hash-chained audit log and the kept drafts.",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.store = store
    app.state.drafts_dir = drafts_dir
    app.state.checkpoints = checkpoints
    app.state.schema_check = _SchemaCheck()
    app.include_router(router)
    app.middleware("http")(_access_log)
    app.add_exception_handler(StoreUnavailableError, _on_store_unavailable)
    app.add_exception_handler(QueryError, _on_query_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)
    app.add_exception_handler(RadtraceError, _on_radtrace_error)
    return app
