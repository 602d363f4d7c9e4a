"""The labeling web app (FastAPI): the pages labelers and admins use, and the same actions as a JSON API.

The app knows nothing of Ray: it asks a `ResponseSource` for responses (Serve deployments in production, see
serve.py) and keeps all state in the `Store`, so any number of ingress replicas can serve it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import random
import re
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.templating import Jinja2Templates

from .auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    LOGIN_TOKEN_TTL_S,
    MIN_PASSWORD_CHARS,
    SESSION_COOKIE,
    Auth,
    PasswordChangeRequired,
    Unauthorized,
    create_user,
    tokens_match,
)
from .config import HELPFUL, STRENGTHS, LabelConfig
from .export import export_records
from .progress import progress_png, summarize
from .store import Forbidden, Invalid, LabelError, NotFound, Sample, SessionInfo, Store, TaskView, TurnPlan, UserInfo

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
# The scale from left to right, as (choice, strength): "A much better" ... "B much better"; keys 1..6.
SCALE = [("A", s) for s in sorted(STRENGTHS, reverse=True)] + [("B", s) for s in sorted(STRENGTHS)]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ResponseSource(Protocol):
    """Where responses come from: `n` samples of source `name` for an HH context ending in "Assistant:"."""

    async def generate(self, name: str, context: str, n: int, seed: int) -> list[Sample]: ...

    def stream(self, name: str, context: str, n: int, seed: int) -> AsyncIterator[list[Sample]]:
        """The `n` samples so far, again each time they grow; the last ones are what `generate` returns."""
        ...


class Unavailable(LabelError):
    status = 503


class TooLarge(LabelError):
    status = 413


# what a session with a one-time password may still do: change it, or leave
PASSWORD_PATHS = ("/password", "/api/password", "/logout", "/api/logout")


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


def context_seed(context: str) -> int:
    """Samples are seeded by the context: the same context shown again gets the same responses (repeat tasks)."""
    return int.from_bytes(hashlib.sha256(context.encode("utf-8")).digest()[:4], "big")


def attempt_seed(plan: TurnPlan, attempt: int) -> tuple[int, bool]:
    """The seed of one try at a task's pair, and whether its second sample is shown as A (drawn from the seed, so
    neither source always sits on one side; known before generating, so a stream fills the right columns)."""
    s = context_seed(plan.context) + 7919 * attempt
    return s, random.Random(s).random() < 0.5


def usable(a: Sample, b: Sample) -> bool:
    return bool(a.text.strip() and b.text.strip() and a.text != b.text)


async def two_responses(sources: ResponseSource, plan: TurnPlan, retries: int) -> tuple[Sample, Sample]:
    """Responses A and B for one task: two sources, or two samples of one; non-empty and different."""
    for attempt in range(retries):
        s, swap = attempt_seed(plan, attempt)
        if plan.source_a == plan.source_b:
            a, b = (await sources.generate(plan.source_a, plan.context, 2, s))[:2]
        else:
            (a,), (b,) = await asyncio.gather(sources.generate(plan.source_a, plan.context, 1, s),
                                              sources.generate(plan.source_b, plan.context, 1, s + 1))
        if usable(a, b):
            return (b, a) if swap else (a, b)
    raise Unavailable(f"the sources gave empty or identical responses {retries} times; try another turn")


async def merged(streams: list[AsyncIterator[list[Sample]]]) -> AsyncIterator[list[Sample | None]]:
    """One sample from each stream, the latest of all of them, again each time one grows (None: not started)."""
    latest: list[Sample | None] = [None] * len(streams)
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[list[Sample]]) -> None:
        try:
            async for samples in stream:
                queue.put_nowait((i, samples[0]))
        finally:
            queue.put_nowait((i, None))

    tasks = [asyncio.create_task(pump(i, st)) for i, st in enumerate(streams)]
    try:
        for _ in range(len(streams)):
            while (item := await queue.get())[1] is not None:
                latest[item[0]] = item[1]
                yield list(latest)
        await asyncio.gather(*tasks)  # a stream that failed raises here
    finally:
        for t in tasks:
            t.cancel()


async def streamed_responses(sources: ResponseSource, plan: TurnPlan,
                             retries: int) -> AsyncIterator[tuple[int, str, str, tuple[Sample, Sample] | None]]:
    """As `two_responses`, streamed: (attempt, text A so far, text B so far, None) as the samples grow, and last
    (attempt, A, B, the pair) once a try gave a usable pair."""
    for attempt in range(retries):
        s, swap = attempt_seed(plan, attempt)
        if plan.source_a == plan.source_b:
            steps = sources.stream(plan.source_a, plan.context, 2, s)
        else:
            steps = merged([sources.stream(plan.source_a, plan.context, 1, s),
                            sources.stream(plan.source_b, plan.context, 1, s + 1)])
        a = b = None
        async for step in steps:
            a, b = (step[1], step[0]) if swap else (step[0], step[1])
            yield attempt, a.text if a else "", b.text if b else "", None
        if a is not None and b is not None and usable(a, b):
            yield attempt, a.text, b.text, (a, b)
            return
    raise Unavailable(f"the sources gave empty or identical responses {retries} times; try another turn")


def task_json(task: TaskView) -> dict:
    return {"task_id": task.id, "context": task.context, "response_a": task.response_a,
            "response_b": task.response_b}


def sse(event: str, data: dict) -> str:
    """One server-sent event (JSON data on one line)."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True)
    return Jinja2Templates(env=env)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def client_of(request: Request) -> str:
    """The peer address login throttling counts by (no proxy header is trusted: any client could forge it)."""
    return request.client.host if request.client else "unknown"


def create_app(cfg: LabelConfig, store: Store, sources: ResponseSource) -> FastAPI:
    """The whole web app over one store and one response source."""
    app = FastAPI(title="hh-ray labeling", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    templates = _templates()
    auth = Auth(store, cfg.server)
    srv = cfg.server
    app.add_middleware(BodyLimit, max_bytes=srv.max_body_bytes)  # inside security_headers: its 413s get them

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        try:
            response = await call_next(request)
        except Exception:  # a bug: one generic 500, with the same headers as every other response
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            response = JSONResponse({"error": "internal error; the service log has the details"}, status_code=500)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.exception_handler(LabelError)
    async def label_error(request: Request, exc: LabelError):
        if _is_api(request):
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        if isinstance(exc, Unauthorized) and request.method == "GET":
            return RedirectResponse("/login?next=expired", status_code=303)
        if isinstance(exc, PasswordChangeRequired) and request.method == "GET":
            return RedirectResponse("/password", status_code=303)
        return templates.TemplateResponse(request, "error.html", {"message": str(exc), "status": exc.status},
                                          status_code=exc.status)

    # ---- helpers shared by pages and API ---------------------------------------------------------------
    async def session_of(request: Request) -> SessionInfo:
        session = await run_in_threadpool(auth.session_from_cookie, request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise Unauthorized("not logged in, or the session expired; log in again")
        if session.user.must_change_password and request.url.path not in PASSWORD_PATHS:
            raise PasswordChangeRequired("change your one-time password first (the page /password, or "
                                         "POST /api/password with current_password and new_password)")
        return session

    async def form_or_json(request: Request) -> dict:
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

    async def changing(request: Request, admin: bool = False) -> tuple[SessionInfo, dict]:
        """A state-changing request: a live session, its CSRF token (header or form field), the body."""
        session = await session_of(request)
        body = await form_or_json(request)
        if not tokens_match(session.csrf_token, request.headers.get(CSRF_HEADER) or body.get(CSRF_FIELD)):
            raise Forbidden("missing or wrong CSRF token; reload the page")
        if admin and not session.user.is_admin:
            raise Forbidden("admins only")
        return session, body

    async def reading(request: Request, admin: bool = False) -> SessionInfo:
        session = await session_of(request)
        if admin and not session.user.is_admin:
            raise Forbidden("admins only")
        return session

    def conv_id_of(value: str) -> int:
        """A conversation id from the path; anything that is not a plausible id is simply not found."""
        if not re.fullmatch(r"[0-9]{1,10}", value) or not 0 < int(value) < 2**31:  # ASCII: "²".isdigit()
            raise NotFound(f"no conversation {value[:40]!r}")
        return int(value)

    async def post_turn(user: UserInfo, conv_id: int, text: object) -> TaskView:
        stored, plan = await run_in_threadpool(store.plan_turn, conv_id, user, text, srv.max_turn_chars)
        a, b = await two_responses(sources, plan, srv.generate_retries)
        return await run_in_threadpool(store.add_task, plan, user, stored, a, b)

    async def turn_events(user: UserInfo, stored: str, plan: TurnPlan) -> AsyncIterator[str]:
        """Server-sent events of a streamed turn: `text` (A and B so far) as they grow, then `task` (the stored
        task, as the JSON API returns it) or `error` (message and HTTP status: the response itself is a 200)."""
        try:
            async for attempt, a, b, pair in streamed_responses(sources, plan, srv.generate_retries):
                if pair is None:
                    yield sse("text", {"attempt": attempt, "response_a": a, "response_b": b})
                else:
                    task = await run_in_threadpool(store.add_task, plan, user, stored, *pair)
                    yield sse("task", task_json(task))
        except LabelError as exc:
            yield sse("error", {"error": str(exc), "status": exc.status})
        except Exception:  # noqa: BLE001 - the stream has begun: the error goes in it, the details in the log
            log.exception("streamed turn failed")
            yield sse("error", {"error": "internal error; the service log has the details", "status": 500})

    def int_or_raw(value: object) -> object:
        """Form fields arrive as text; a JSON body keeps its types (so "2" stays invalid there)."""
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,9}", value.strip()):  # not "²", which int() refuses
            return int(value)
        return value

    async def export_zip(user: UserInfo, campaign: str) -> Response:
        records = await run_in_threadpool(store.comparisons, campaign or None)
        with tempfile.TemporaryDirectory() as tmp:
            summary = await run_in_threadpool(export_records, records, tmp, cfg.test_fraction)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for rel in summary.files:
                    zf.write(Path(tmp) / rel, rel)
        await run_in_threadpool(store.audit, user.id, "export", f"campaign={campaign or '*'} records={summary.total}")
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": attachment(f"{campaign or 'all'}-export.zip")})

    def set_session_cookie(response: Response, session: SessionInfo) -> None:
        response.set_cookie(SESSION_COOKIE, auth.session_cookie(session), max_age=int(srv.session_ttl_s),
                            httponly=True, samesite="strict", secure=srv.secure_cookies, path="/")

    def set_login_cookie(response: Response, cookie: str) -> None:
        response.set_cookie(LOGIN_COOKIE, cookie, max_age=LOGIN_TOKEN_TTL_S, httponly=True, samesite="strict",
                            secure=srv.secure_cookies, path="/")

    def page(request: Request, name: str, session: SessionInfo | None, status: int = 200, **ctx) -> HTMLResponse:
        stats = store.user_stats(session.user) if session else None
        return templates.TemplateResponse(request, name, {"session": session, "stats": stats, "csrf_field": CSRF_FIELD,
                                                          **ctx}, status_code=status)

    # ---- pages -----------------------------------------------------------------------------------------
    @app.get("/")
    async def root(request: Request):
        session = await run_in_threadpool(auth.session_from_cookie, request.cookies.get(SESSION_COOKIE))
        return RedirectResponse("/label" if session else "/login", status_code=303)

    async def login_page(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
        cookie, token = auth.new_login_token()
        if not error and request.query_params.get("next") == "expired":
            error = "Your session expired or you are not logged in; log in again."
        resp = page(request, "login.html", None, status, login_token=token, error=error)
        set_login_cookie(resp, cookie)
        return resp

    @app.get("/login")
    async def login_get(request: Request):
        return await login_page(request)

    @app.post("/login")
    async def login_post(request: Request):
        form = dict(await request.form())
        if not auth.login_token_ok(request.cookies.get(LOGIN_COOKIE), form.get(CSRF_FIELD)):
            return await login_page(request, "The login form expired; try again.", 403)
        try:
            session = await run_in_threadpool(auth.login, form.get("name"), form.get("password"), client_of(request))
        except LabelError as exc:
            return await login_page(request, str(exc), exc.status)
        resp = RedirectResponse("/password" if session.user.must_change_password else "/label", status_code=303)
        set_session_cookie(resp, session)
        resp.delete_cookie(LOGIN_COOKIE, path="/")
        return resp

    @app.post("/logout")
    async def logout(request: Request):
        session, _ = await changing(request)
        await run_in_threadpool(store.delete_session, session.id)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    @app.get("/label")
    async def home(request: Request):
        session = await reading(request)

        def render():
            return page(request, "home.html", session, campaigns=store.campaign_names(),
                        conversations=store.conversations_of(session.user))
        return await run_in_threadpool(render)

    @app.post("/conversations")
    async def new_conversation(request: Request):
        session, form = await changing(request)
        conv_id = await run_in_threadpool(store.start_conversation, session.user, form.get("campaign"))
        return RedirectResponse(f"/conversations/{conv_id}", status_code=303)

    async def conversation_page(request: Request, session: SessionInfo, conv_id: int, error: str = "",
                                status: int = 200, draft: str = "") -> HTMLResponse:
        def render():
            view = store.conversation(conv_id, session.user)
            return page(request, "conversation.html", session, status, conv=view, scale=SCALE, strengths=STRENGTHS,
                        helpful=view.mode == HELPFUL, error=error, draft=draft, max_chars=srv.max_turn_chars)
        return await run_in_threadpool(render)

    @app.get("/conversations/{conv_id}")
    async def conversation_get(request: Request, conv_id: str):
        session = await reading(request)
        return await conversation_page(request, session, conv_id_of(conv_id))

    @app.post("/conversations/{conv_id}/turn")
    async def turn_post(request: Request, conv_id: str):
        session, form = await changing(request)
        cid = conv_id_of(conv_id)
        try:
            await post_turn(session.user, cid, form.get("text", ""))
        except LabelError as exc:  # shown on the conversation page (which is NotFound for others' conversations)
            return await conversation_page(request, session, cid, str(exc), exc.status, draft=str(form.get("text", "")))
        return RedirectResponse(f"/conversations/{cid}", status_code=303)

    @app.post("/conversations/{conv_id}/choose")
    async def choose_post(request: Request, conv_id: str):
        session, form = await changing(request)
        cid = conv_id_of(conv_id)
        try:
            await run_in_threadpool(store.submit_choice, session.user, form.get("task_id"), form.get("choice"),
                                    int_or_raw(form.get("strength")))
        except LabelError as exc:
            return await conversation_page(request, session, cid, str(exc), exc.status)
        return RedirectResponse(f"/conversations/{cid}", status_code=303)

    @app.post("/conversations/{conv_id}/end")
    async def end_post(request: Request, conv_id: str):
        session, _ = await changing(request)
        await run_in_threadpool(store.end_conversation, conv_id_of(conv_id), session.user)
        return RedirectResponse("/label", status_code=303)

    def admin_view(request: Request, session: SessionInfo, new_user: tuple[str, str, str] | None = None):
        return page(request, "admin.html", session, progress=summarize(store.comparisons()), users=store.users(),
                    campaigns=store.campaign_names(), strengths=STRENGTHS, new_user=new_user)

    @app.get("/admin")
    async def admin_page(request: Request):
        session = await reading(request, admin=True)
        return await run_in_threadpool(admin_view, request, session)

    @app.get("/admin/progress.png")
    async def admin_png(request: Request):
        await reading(request, admin=True)
        png = await run_in_threadpool(lambda: progress_png(store.comparisons()))
        return Response(png, media_type="image/png")

    @app.post("/admin/users")
    async def admin_add_user(request: Request):
        session, form = await changing(request, admin=True)
        user, password = await run_in_threadpool(create_user, store, form.get("name"), form.get("role", "labeler"),
                                                 session.user.id)
        return await run_in_threadpool(admin_view, request, session, (user.name, user.role, password))

    @app.post("/admin/export")
    async def admin_export(request: Request):
        session, form = await changing(request, admin=True)
        return await export_zip(session.user, str(form.get("campaign") or ""))

    # ---- JSON API (the same actions, for programmatic labelers) ------------------------------------------
    @app.get("/api/login")
    async def api_login_token():
        cookie, token = auth.new_login_token()
        resp = JSONResponse({"csrf_token": token})
        set_login_cookie(resp, cookie)
        return resp

    @app.post("/api/login")
    async def api_login(request: Request):
        if not auth.login_token_ok(request.cookies.get(LOGIN_COOKIE), request.headers.get(CSRF_HEADER)):
            raise Forbidden("missing or wrong login CSRF token; GET /api/login first")
        body = await form_or_json(request)  # only once the token is right
        session = await run_in_threadpool(auth.login, body.get("name"), body.get("password"), client_of(request))
        resp = JSONResponse({"user": session.user.name, "role": session.user.role, "csrf_token": session.csrf_token,
                             "expires_at": session.expires_at.isoformat() + "Z",
                             "must_change_password": session.user.must_change_password})
        set_session_cookie(resp, session)
        return resp

    @app.post("/api/logout")
    async def api_logout(request: Request):
        session, _ = await changing(request)
        await run_in_threadpool(store.delete_session, session.id)
        resp = JSONResponse({"logged_out": True})
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    @app.get("/api/campaigns")
    async def api_campaigns(request: Request):
        await reading(request)
        return [{"name": n, "mode": m} for n, m in await run_in_threadpool(store.campaign_names)]

    @app.post("/api/conversations")
    async def api_new_conversation(request: Request):
        session, body = await changing(request)
        conv_id = await run_in_threadpool(store.start_conversation, session.user, body.get("campaign"))
        return {"conversation_id": conv_id}

    @app.get("/api/conversations/{conv_id}")
    async def api_conversation(request: Request, conv_id: str):
        session = await reading(request)
        v = await run_in_threadpool(store.conversation, conv_id_of(conv_id), session.user)
        pending = ({"task_id": v.pending.id, "context": v.pending.context, "response_a": v.pending.response_a,
                    "response_b": v.pending.response_b} if v.pending else None)
        return {"conversation_id": v.id, "campaign": v.campaign, "mode": v.mode, "ended": v.ended,
                "turns": [{"role": t.role, "text": t.text} for t in v.turns], "pending": pending}

    @app.post("/api/conversations/{conv_id}/turns")
    async def api_turn(request: Request, conv_id: str):
        session, body = await changing(request)
        return task_json(await post_turn(session.user, conv_id_of(conv_id), body.get("text")))

    @app.post("/api/conversations/{conv_id}/turns/stream")
    async def api_turn_stream(request: Request, conv_id: str):
        """The turn with its answers streamed as server-sent events (the page's script reads them)."""
        session, body = await changing(request)
        stored, plan = await run_in_threadpool(store.plan_turn, conv_id_of(conv_id), session.user, body.get("text"),
                                               srv.max_turn_chars)  # bad input: a plain 4xx, before any event
        return StreamingResponse(turn_events(session.user, stored, plan), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    @app.post("/api/choices")
    async def api_choose(request: Request):
        session, body = await changing(request)
        r = await run_in_threadpool(store.submit_choice, session.user, body.get("task_id"), body.get("choice"),
                                    body.get("strength"))
        return {"comparison_id": r.comparison_id, "task_id": r.task_id, "choice": r.choice, "strength": r.strength,
                "duplicate": r.duplicate}

    @app.post("/api/conversations/{conv_id}/end")
    async def api_end(request: Request, conv_id: str):
        session, _ = await changing(request)
        cid = conv_id_of(conv_id)
        await run_in_threadpool(store.end_conversation, cid, session.user)
        return {"conversation_id": cid, "ended": True}

    @app.get("/api/me/stats")
    async def api_stats(request: Request):
        session = await reading(request)
        return {"user": session.user.name, **await run_in_threadpool(store.user_stats, session.user)}

    @app.get("/api/admin/progress")
    async def api_progress(request: Request):
        await reading(request, admin=True)
        return (await run_in_threadpool(lambda: summarize(store.comparisons()))).as_dict()

    @app.post("/api/admin/users")
    async def api_add_user(request: Request):
        session, body = await changing(request, admin=True)
        user, password = await run_in_threadpool(create_user, store, body.get("name"), body.get("role", "labeler"),
                                                 session.user.id)
        return {"name": user.name, "role": user.role, "password": password}

    @app.post("/api/admin/export")
    async def api_export(request: Request):
        session, body = await changing(request, admin=True)
        return await export_zip(session.user, str(body.get("campaign") or ""))

    @app.get("/password")
    async def password_page(request: Request):
        session = await reading(request)
        return page(request, "password.html", session, min_chars=MIN_PASSWORD_CHARS)

    @app.post("/password")
    async def password_post(request: Request):
        session, form = await changing(request)
        try:
            await run_in_threadpool(auth.change_password, session, form.get("current_password"),
                                    form.get("new_password"))
        except LabelError as exc:
            return page(request, "password.html", session, exc.status, min_chars=MIN_PASSWORD_CHARS, error=str(exc))
        return RedirectResponse("/label", status_code=303)

    @app.post("/api/password")
    async def api_password(request: Request):
        session, body = await changing(request)
        await run_in_threadpool(auth.change_password, session, body.get("current_password"), body.get("new_password"))
        return {"user": session.user.name, "changed": True}

    @app.get("/healthz")
    async def healthz():
        return {"ok": True}

    return app
