"""What every console page shares: the mount point, the security headers, the request's state and signed-in user,
rendering a template, redirects, reading a form, the CSRF check and the worklist's sync.

:mod:`.web` (login, worklist, study review), :mod:`.dashboard` and :mod:`.explorer` build their routes from these.
A page is rendered with :data:`SECURITY_HEADERS` and, when a trusted proxy's header started the session on this
request, sets the new session cookie. A request without a live session raises :class:`LoginRequiredError`, which
:func:`radtrace.console.web.mount_console` turns into the login page.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final
from urllib.parse import parse_qs

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from radtrace import __version__
from radtrace.audit.events import Actor
from radtrace.config import Settings
from radtrace.console.accounts import SignedIn, resume_session, start_session
from radtrace.console.images import PictureCache
from radtrace.console.links import ConsoleLinks
from radtrace.console.worklist import FLAG_LABELS, sync_review_items
from radtrace.http_limits import MAX_FORM_BYTES  # one limit: what the guard reads before the turn is what is parsed
from radtrace.http_server import direct_peer_host
from radtrace.store.engine import Store

__all__ = [
    "MAX_FORM_BYTES",
    "PREFIX",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "TYPED_TEXT_FIELDS",
    "ConsoleState",
    "LoginRequiredError",
    "StateDep",
    "UserDep",
    "check_csrf",
    "client_host",
    "console_state",
    "control_character_problem",
    "read_form",
    "redirect",
    "render_page",
    "request_actor",
    "secure_cookies",
    "set_session_cookie",
    "signed_in_user",
    "sync_worklist",
    "wants_page",
]

#: C0 controls but tab, LF and CR, and DEL: never in a name, a code or a filter (PostgreSQL refuses NUL outright).
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: The fields of the console's forms a person types free text in (a decision's comment, a modified impression, a
#: flags check's reason): recorded as typed in the audit and written into the assessment SR and ORU, so a control
#: character in one (C0 but tab, LF and CR, DEL, C1: invisible on the page, changed or dropped by the SR's and
#: HL7's text rules) is refused with its reason rather than recorded as a text no page shows and no report carries.
TYPED_TEXT_FIELDS: Final = frozenset({"comment", "impression", "reason"})
_TYPED_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
PREFIX: Final = "/console"
SESSION_COOKIE: Final = "radtrace_session"
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class ConsoleState:
    """What the pages need, kept on ``app.state.console``."""

    store: Store
    settings: Settings
    templates: Environment
    last_sync: float = 0.0
    #: Rings the dispatcher for an outbox row (``radtrace.worker.doorbell.ring_dispatch`` unless a test sets one).
    ring_dispatch: Callable[[int], bool] | None = None
    #: The study page's pictures made so far (bounded; see :mod:`.images`).
    pictures: PictureCache = field(default_factory=PictureCache)
    #: Study handles and saved searches (kept in the database: every console process reads a link alike).
    links: ConsoleLinks = field(init=False)

    def __post_init__(self) -> None:
        self.links = ConsoleLinks(self.store)


class LoginRequiredError(Exception):
    """The request has no live session: send the browser to the login page."""


def console_state(request: Request) -> ConsoleState:
    """The console's state on the application (a FastAPI dependency: :data:`StateDep`)."""
    state = request.app.state.console
    if not isinstance(state, ConsoleState):  # pragma: no cover - mount_console always sets it
        raise RuntimeError("the console was not mounted")
    return state


StateDep = Annotated[ConsoleState, Depends(console_state)]


def client_host(request: Request) -> str | None:
    """The address the request came from, when known."""
    return request.client.host if request.client else None


def secure_cookies(request: Request, state: ConsoleState) -> bool:
    """Whether cookies set on this response are marked Secure (``console.cookie_secure``; ``auto``: over TLS)."""
    mode = state.settings.console.cookie_secure
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def set_session_cookie(response: Response, request: Request, state: ConsoleState, cookie: str) -> None:
    """Set the session cookie on ``response``: HttpOnly, SameSite=Strict, scoped to :data:`PREFIX`."""
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request, state),
        path=PREFIX,
    )


def signed_in_user(request: Request, state: StateDep) -> SignedIn:
    """The session of the request's cookie, or one started from a trusted proxy's user header (a FastAPI
    dependency: :data:`UserDep`); raises :class:`LoginRequiredError` when there is neither."""
    cookie = request.cookies.get(SESSION_COOKIE)
    found = resume_session(state.store, cookie, state.settings.console) if cookie else None
    if found is not None:
        return found
    header = state.settings.console.trusted_user_header
    # The proxy that may send the header is the connection's peer, not the client it names in X-Forwarded-For.
    proxy = direct_peer_host(request.scope)
    if header and proxy in state.settings.console.trusted_proxies and request.headers.get(header):
        started = start_session(state.store, request.headers[header].strip(), host=client_host(request),
                                method=f"trusted-header {header}")  # fmt: skip
        if isinstance(started, SignedIn):
            request.state.new_session_cookie = started.cookie
            return started
    raise LoginRequiredError


UserDep = Annotated[SignedIn, Depends(signed_in_user)]


def request_actor(request: Request, user: SignedIn) -> Actor:
    """Who did it, for the audit log: the signed-in account and the request's host."""
    return Actor(user=user.account.name, host=client_host(request))


def render_page(
    request: Request, state: ConsoleState, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """``template`` rendered with ``context`` (and the prefix, version and flag labels every page uses), with the
    security headers and, when this request started a session, its cookie."""
    html = state.templates.get_template(template).render(
        prefix=PREFIX, version=__version__, flag_labels=FLAG_LABELS, **context
    )
    response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
    cookie = getattr(request.state, "new_session_cookie", None)
    if cookie:
        set_session_cookie(response, request, state, cookie)
    return response


def redirect(url: str) -> RedirectResponse:
    """A 303 See Other to ``url`` (a POST is followed by a GET), with the security headers."""
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


async def read_form(request: Request, *, typed_text_checked: bool = True) -> dict[str, str]:
    """The request's URL-encoded form, the last value of each field; 413 above :data:`MAX_FORM_BYTES` (read no
    further: a stranger's endless body never fills the memory), 400 when it cannot be read, 422 when a field of
    free text (:data:`TYPED_TEXT_FIELDS`) holds a control character (unless not ``typed_text_checked``: a form
    only shown back)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise HTTPException(413, detail="form too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise HTTPException(413, detail="form too large")
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, detail="unreadable form") from exc
    form = {name: values[-1] for name, values in fields.items()}
    typed = sorted(name for name, value in form.items() if name in TYPED_TEXT_FIELDS and _TYPED_CONTROL.search(value))
    if typed and typed_text_checked:
        reason = f"{', '.join(typed)}: control characters (such as NUL) are not allowed; nothing was recorded"
        raise HTTPException(422, detail=reason)
    return form


def check_csrf(expected: str | None, form: dict[str, str]) -> None:
    """Refuse (403) a form whose ``csrf_token`` is missing or is not ``expected`` (compared in constant time)."""
    given = form.get("csrf_token", "")
    if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise HTTPException(403, detail="missing or wrong CSRF token: reload the page and try again")


def sync_worklist(state: ConsoleState) -> None:
    """Bring the worklist's projection up to date, at most every ``console.sync_interval_s``."""
    if time.monotonic() - state.last_sync >= state.settings.console.sync_interval_s:
        state.last_sync = time.monotonic()
        sync_review_items(state.store, state.settings.spool_dir, listener=state.settings.listener)


def control_character_problem(fields: dict[str, str]) -> str | None:
    """Why these form or query fields cannot be used (a control character in one, named), or None."""
    bad = [name for name, value in fields.items() if _CONTROL.search(value)]
    if not bad:
        return None
    return f"{', '.join(sorted(bad))}: control characters (such as NUL) are not allowed"


def wants_page(request: Request) -> bool:
    """Whether an error answers a browser navigating the console (an HTML page) rather than a script or a
    download (FastAPI's JSON, as before)."""
    path = request.url.path
    return (
        (path == PREFIX or path.startswith(f"{PREFIX}/"))
        and not path.endswith(".csv")
        and ("text/html" in request.headers.get("accept", ""))
    )
