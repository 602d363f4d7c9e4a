"""The labeling web app (FastAPI): the pages labelers and admins use (pages.py), and the same actions as a JSON
API (api.py), both over one action layer (actions.py).

The app knows nothing of Ray: it asks a `ResponseSource` for responses (Serve deployments in production, see
serve.py) and keeps all state in the `Store`, so any number of ingress replicas can serve it. This module only
assembles it: the body limit, the security headers on every response, and how a refusal becomes a response.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from . import api, pages
from .actions import Actions
from .auth import Auth, PasswordChangeRequired, Unauthorized
from .config import LabelConfig
from .errors import LabelError
from .responses import ResponseSource
from .store import Store
from .web import Web

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class TooLarge(LabelError):
    status = 413


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is refused before any route reads it, by its
    Content-Length at once, else (chunked) as soon as the bytes received pass the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.refusal = f"the request body is over {max_bytes} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return await JSONResponse({"error": self.refusal}, status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise TooLarge(self.refusal)
            return message

        return await self.app(scope, limited, send)


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True)
    return Jinja2Templates(env=env)


async def security_headers(request: Request, call_next):
    """Every response gets SECURITY_HEADERS; a bug is one generic 500 (the details go to the log)."""
    try:
        response = await call_next(request)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        response = JSONResponse({"error": "internal error; the service log has the details"}, status_code=500)
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


async def label_error(request: Request, exc: LabelError):
    """A refusal: JSON under /api/; on a page, a GET without a (usable) session goes where it can get one, and
    anything else is the error page."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    if isinstance(exc, Unauthorized) and request.method == "GET":
        return RedirectResponse("/login?next=expired", status_code=303)
    if isinstance(exc, PasswordChangeRequired) and request.method == "GET":
        return RedirectResponse("/password", status_code=303)
    return request.app.state.web.templates.TemplateResponse(request, "error.html",
                                                            {"message": str(exc), "status": exc.status},
                                                            status_code=exc.status)


def create_app(cfg: LabelConfig, store: Store, sources: ResponseSource) -> FastAPI:
    """The whole web app over one store and one response source."""
    app = FastAPI(title="hh-ray labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    auth = Auth(store, cfg.server)
    app.state.web = Web(Actions(cfg, store, sources, auth), auth, cfg.server, _templates())
    app.add_middleware(BodyLimit, max_bytes=cfg.server.max_body_bytes)  # inside security_headers: its 413s get them
    app.middleware("http")(security_headers)
    app.add_exception_handler(LabelError, label_error)
    app.include_router(pages.router)
    app.include_router(api.router)
    return app
