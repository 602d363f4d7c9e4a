"""What the pages and the JSON API share in turning HTTP into actions: the session from its cookie, the CSRF
check of every state-changing request, the parsed body, ids from paths, cookies and downloads."""

from __future__ import annotations

import json
import re
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.templating import Jinja2Templates

from .actions import Actions, ExportFile
from .auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    LOGIN_TOKEN_TTL_S,
    SESSION_COOKIE,
    Auth,
    PasswordChangeRequired,
    Unauthorized,
    tokens_match,
)
from .config import ServerConfig
from .errors import Forbidden, Invalid, NotFound
from .records import SessionInfo

# what a session with a one-time password may still do: change it, or leave
PASSWORD_PATHS = ("/password", "/api/password", "/logout", "/api/logout")


def check_text(value: object) -> None:
    """Strings of a parsed body must be encodable (a lone surrogate from JSON's \\ud800 is not: the database
    driver would fail on it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("the body holds text that is not valid Unicode (a lone surrogate)") from None
    elif isinstance(value, (dict, list)):
        for v in (*value.keys(), *value.values()) if isinstance(value, dict) else value:
            check_text(v)


def attachment(filename: str) -> str:
    """A Content-Disposition header for any file name (headers are Latin-1: the name goes RFC 5987-encoded)."""
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


def download(file: ExportFile) -> Response:
    return Response(file.data, media_type="application/zip", headers={"Content-Disposition": attachment(file.filename)})


def client_of(request: Request) -> str:
    """The peer address login throttling counts by (no proxy header is trusted: any client could forge it)."""
    return request.client.host if request.client else "unknown"


def conv_id_of(value: str) -> int:
    """A conversation id from the path; anything that is not a plausible id is simply not found."""
    if not re.fullmatch(r"[0-9]{1,10}", value) or not 0 < int(value) < 2**31:  # ASCII: "²".isdigit()
        raise NotFound(f"no conversation {value[:40]!r}")
    return int(value)


async def form_or_json(request: Request) -> dict:
    """The body as a dict, from a JSON object or a form, its text checked."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Invalid("the body is not valid JSON") from None
        except RecursionError:
            raise Invalid("the JSON body is nested too deeply") from None
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object")
    else:
        body = dict(await request.form())
    check_text(body)
    return body


class Web:
    """One app's actions with what its routes need around them (auth's cookies, the server config, templates);
    the routers reach it through `WebOf`."""

    def __init__(self, actions: Actions, auth: Auth, server: ServerConfig, templates: Jinja2Templates):
        self.actions, self.auth, self.server, self.templates = actions, auth, server, templates

    async def session_or_none(self, request: Request) -> SessionInfo | None:
        return await run_in_threadpool(self.auth.session_from_cookie, request.cookies.get(SESSION_COOKIE))

    async def session_of(self, request: Request) -> SessionInfo:
        """The request's live session; one with a one-time password reaches only PASSWORD_PATHS."""
        session = await self.session_or_none(request)
        if session is None:
            raise Unauthorized("not logged in, or the session expired; log in again")
        if session.user.must_change_password and request.url.path not in PASSWORD_PATHS:
            raise PasswordChangeRequired("change your one-time password first (the page /password, or "
                                         "POST /api/password with current_password and new_password)")
        return session

    async def changing(self, request: Request) -> tuple[SessionInfo, dict]:
        """A state-changing request: a live session, its CSRF token (header or form field), the body."""
        session = await self.session_of(request)
        body = await form_or_json(request)
        if not tokens_match(session.csrf_token, request.headers.get(CSRF_HEADER) or body.get(CSRF_FIELD)):
            raise Forbidden("missing or wrong CSRF token; reload the page")
        return session, body

    def set_session_cookie(self, response: Response, session: SessionInfo) -> None:
        response.set_cookie(SESSION_COOKIE, self.auth.session_cookie(session), max_age=int(self.server.session_ttl_s),
                            httponly=True, samesite="strict", secure=self.server.secure_cookies, path="/")

    def set_login_cookie(self, response: Response, cookie: str) -> None:
        response.set_cookie(LOGIN_COOKIE, cookie, max_age=LOGIN_TOKEN_TTL_S, httponly=True, samesite="strict",
                            secure=self.server.secure_cookies, path="/")


def web_of(request: Request) -> Web:
    return request.app.state.web


WebOf = Annotated[Web, Depends(web_of)]
