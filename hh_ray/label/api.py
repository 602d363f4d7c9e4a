"""The JSON API under /api/ (`client.LabelClient` speaks it): the pages' actions for programmatic labelers.

Bodies are JSON objects (forms work too) and keep their types; a refusal is `{"error": message}` with the
`LabelError`'s status (app.py). A streamed turn is server-sent events (the conversation page's script reads them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .actions import TurnText
from .auth import CSRF_HEADER, LOGIN_COOKIE, SESSION_COOKIE
from .errors import Forbidden, LabelError
from .records import TaskView
from .web import WebOf, client_of, conv_id_of, download, form_or_json

log = logging.getLogger(__name__)
router = APIRouter()


def task_json(task: TaskView) -> dict:
    return {"task_id": task.id, "context": task.context, "response_a": task.response_a,
            "response_b": task.response_b}


def sse(event: str, data: dict) -> str:
    """One server-sent event (JSON data on one line)."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def turn_events(steps: AsyncIterator[TurnText | TaskView]) -> AsyncIterator[str]:
    """Server-sent events of a streamed turn: `text` (A and B so far) as they grow, then `task` (the stored
    task, as the JSON API returns it) or `error` (message and HTTP status: the response itself is a 200)."""
    try:
        async for step in steps:
            if isinstance(step, TurnText):
                yield sse("text", {"attempt": step.attempt, "response_a": step.response_a,
                                   "response_b": step.response_b})
            else:
                yield sse("task", task_json(step))
    except LabelError as exc:
        yield sse("error", {"error": str(exc), "status": exc.status})
    except Exception:  # noqa: BLE001 - the stream has begun: the error goes in it, the details in the log
        log.exception("streamed turn failed")
        yield sse("error", {"error": "internal error; the service log has the details", "status": 500})


# ---- accounts ------------------------------------------------------------------------------------------------
@router.get("/api/login")
async def login_token(web: WebOf):
    cookie, token = web.auth.new_login_token()
    resp = JSONResponse({"csrf_token": token})
    web.set_login_cookie(resp, cookie)
    return resp


@router.post("/api/login")
async def login(request: Request, web: WebOf):
    if not web.auth.login_token_ok(request.cookies.get(LOGIN_COOKIE), request.headers.get(CSRF_HEADER)):
        raise Forbidden("missing or wrong login CSRF token; GET /api/login first")
    body = await form_or_json(request)  # only once the token is right
    session = await web.actions.login(body.get("name"), body.get("password"), client_of(request))
    resp = JSONResponse({"user": session.user.name, "role": session.user.role, "csrf_token": session.csrf_token,
                         "expires_at": session.expires_at.isoformat() + "Z",
                         "must_change_password": session.user.must_change_password})
    web.set_session_cookie(resp, session)
    return resp


@router.post("/api/logout")
async def logout(request: Request, web: WebOf):
    session, _ = await web.changing(request)
    await web.actions.logout(session)
    resp = JSONResponse({"logged_out": True})
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.post("/api/password")
async def password(request: Request, web: WebOf):
    session, body = await web.changing(request)
    await web.actions.change_password(session, body.get("current_password"), body.get("new_password"))
    return {"user": session.user.name, "changed": True}


@router.get("/api/me/stats")
async def stats(request: Request, web: WebOf):
    session = await web.session_of(request)
    return {"user": session.user.name, **await web.actions.stats(session)}


# ---- conversations -------------------------------------------------------------------------------------------
@router.get("/api/campaigns")
async def campaigns(request: Request, web: WebOf):
    session = await web.session_of(request)
    return [{"name": n, "mode": m} for n, m in await web.actions.campaigns(session)]


@router.post("/api/conversations")
async def new_conversation(request: Request, web: WebOf):
    session, body = await web.changing(request)
    return {"conversation_id": await web.actions.start_conversation(session, body.get("campaign"))}


@router.get("/api/conversations/{conv_id}")
async def conversation(request: Request, web: WebOf, conv_id: str):
    session = await web.session_of(request)
    v = await web.actions.conversation(session, conv_id_of(conv_id))
    return {"conversation_id": v.id, "campaign": v.campaign, "mode": v.mode, "ended": v.ended,
            "turns": [{"role": t.role, "text": t.text} for t in v.turns],
            "pending": task_json(v.pending) if v.pending else None}


@router.post("/api/conversations/{conv_id}/turns")
async def turn(request: Request, web: WebOf, conv_id: str):
    session, body = await web.changing(request)
    return task_json(await web.actions.take_turn(session, conv_id_of(conv_id), body.get("text")))


@router.post("/api/conversations/{conv_id}/turns/stream")
async def turn_stream(request: Request, web: WebOf, conv_id: str):
    """The turn with its answers streamed as server-sent events (bad input: a plain 4xx, before any event)."""
    session, body = await web.changing(request)
    steps = await web.actions.stream_turn(session, conv_id_of(conv_id), body.get("text"))
    return StreamingResponse(turn_events(steps), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


@router.post("/api/choices")
async def choose(request: Request, web: WebOf):
    session, body = await web.changing(request)
    r = await web.actions.choose(session, body.get("task_id"), body.get("choice"), body.get("strength"))
    return {"comparison_id": r.comparison_id, "task_id": r.task_id, "choice": r.choice, "strength": r.strength,
            "duplicate": r.duplicate}


@router.post("/api/conversations/{conv_id}/end")
async def end(request: Request, web: WebOf, conv_id: str):
    session, _ = await web.changing(request)
    cid = conv_id_of(conv_id)
    await web.actions.end_conversation(session, cid)
    return {"conversation_id": cid, "ended": True}


# ---- admins --------------------------------------------------------------------------------------------------
@router.get("/api/admin/progress")
async def progress(request: Request, web: WebOf):
    return (await web.actions.progress(await web.session_of(request))).as_dict()


@router.post("/api/admin/users")
async def add_user(request: Request, web: WebOf):
    session, body = await web.changing(request)
    user, password = await web.actions.add_user(session, body.get("name"), body.get("role", "labeler"))
    return {"name": user.name, "role": user.role, "password": password}


@router.post("/api/admin/export")
async def export(request: Request, web: WebOf):
    session, body = await web.changing(request)
    return download(await web.actions.export(session, str(body.get("campaign") or "")))


@router.get("/healthz")
async def healthz():
    return {"ok": True}
