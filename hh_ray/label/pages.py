"""The HTML pages: forms in, actions run, templates or redirects out (303 after every successful POST).

A refused form shows its page again with the message (the login, a turn, a choice, a password change); other
refusals are the app's error page (app.py).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .auth import CSRF_FIELD, LOGIN_COOKIE, MIN_PASSWORD_CHARS, SESSION_COOKIE
from .config import HELPFUL, STRENGTHS
from .errors import LabelError
from .records import SessionInfo
from .web import Web, WebOf, client_of, conv_id_of, download

# The scale from left to right, as (choice, strength): "A much better" ... "B much better"; keys 1..6.
SCALE = [("A", s) for s in sorted(STRENGTHS, reverse=True)] + [("B", s) for s in sorted(STRENGTHS)]

router = APIRouter()


def int_or_raw(value: object) -> object:
    """Form fields arrive as text; a JSON body keeps its types (so "2" stays invalid there)."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,9}", value.strip()):  # not "²", which int() refuses
        return int(value)
    return value


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def page(request: Request, web: Web, name: str, session: SessionInfo | None, status: int = 200,
               **ctx) -> HTMLResponse:
    """A template with what every page shows: the session's user and counts, and the CSRF field's name."""
    stats = await web.actions.stats(session) if session else None
    return web.templates.TemplateResponse(request, name, {"session": session, "stats": stats,
                                                          "csrf_field": CSRF_FIELD, **ctx}, status_code=status)


async def login_page(request: Request, web: Web, error: str = "", status: int = 200) -> HTMLResponse:
    cookie, token = web.auth.new_login_token()
    if not error and request.query_params.get("next") == "expired":
        error = "Your session expired or you are not logged in; log in again."
    resp = await page(request, web, "login.html", None, status, login_token=token, error=error)
    web.set_login_cookie(resp, cookie)
    return resp


async def conversation_page(request: Request, web: Web, session: SessionInfo, conv_id: int, error: str = "",
                            status: int = 200, draft: str = "") -> HTMLResponse:
    view = await web.actions.conversation(session, conv_id)
    return await page(request, web, "conversation.html", session, status, conv=view, scale=SCALE,
                      strengths=STRENGTHS, helpful=view.mode == HELPFUL, error=error, draft=draft,
                      max_chars=web.server.max_turn_chars)


async def admin_page(request: Request, web: Web, session: SessionInfo,
                     new_user: tuple[str, str, str] | None = None) -> HTMLResponse:
    progress = await web.actions.progress(session)
    return await page(request, web, "admin.html", session, progress=progress, users=await web.actions.users(session),
                      campaigns=await web.actions.campaigns(session), strengths=STRENGTHS, new_user=new_user)


# ---- accounts ------------------------------------------------------------------------------------------------
@router.get("/")
async def root(request: Request, web: WebOf):
    return redirect("/label" if await web.session_or_none(request) else "/login")


@router.get("/login")
async def login_get(request: Request, web: WebOf):
    return await login_page(request, web)


@router.post("/login")
async def login_post(request: Request, web: WebOf):
    form = dict(await request.form())
    if not web.auth.login_token_ok(request.cookies.get(LOGIN_COOKIE), form.get(CSRF_FIELD)):
        return await login_page(request, web, "The login form expired; try again.", 403)
    try:
        session = await web.actions.login(form.get("name"), form.get("password"), client_of(request))
    except LabelError as exc:
        return await login_page(request, web, str(exc), exc.status)
    resp = redirect("/password" if session.user.must_change_password else "/label")
    web.set_session_cookie(resp, session)
    resp.delete_cookie(LOGIN_COOKIE, path="/")
    return resp


@router.post("/logout")
async def logout(request: Request, web: WebOf):
    session, _ = await web.changing(request)
    await web.actions.logout(session)
    resp = redirect("/login")
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/password")
async def password_get(request: Request, web: WebOf):
    session = await web.session_of(request)
    return await page(request, web, "password.html", session, min_chars=MIN_PASSWORD_CHARS)


@router.post("/password")
async def password_post(request: Request, web: WebOf):
    session, form = await web.changing(request)
    try:
        await web.actions.change_password(session, form.get("current_password"), form.get("new_password"))
    except LabelError as exc:
        return await page(request, web, "password.html", session, exc.status, min_chars=MIN_PASSWORD_CHARS,
                          error=str(exc))
    return redirect("/label")


# ---- conversations -------------------------------------------------------------------------------------------
@router.get("/label")
async def home(request: Request, web: WebOf):
    session = await web.session_of(request)
    return await page(request, web, "home.html", session, campaigns=await web.actions.campaigns(session),
                      conversations=await web.actions.conversations(session))


@router.post("/conversations")
async def new_conversation(request: Request, web: WebOf):
    session, form = await web.changing(request)
    conv_id = await web.actions.start_conversation(session, form.get("campaign"))
    return redirect(f"/conversations/{conv_id}")


@router.get("/conversations/{conv_id}")
async def conversation_get(request: Request, web: WebOf, conv_id: str):
    session = await web.session_of(request)
    return await conversation_page(request, web, session, conv_id_of(conv_id))


@router.post("/conversations/{conv_id}/turn")
async def turn_post(request: Request, web: WebOf, conv_id: str):
    session, form = await web.changing(request)
    cid = conv_id_of(conv_id)
    try:
        await web.actions.take_turn(session, cid, form.get("text", ""))
    except LabelError as exc:  # shown on the conversation page (which is NotFound for others' conversations)
        return await conversation_page(request, web, session, cid, str(exc), exc.status,
                                       draft=str(form.get("text", "")))
    return redirect(f"/conversations/{cid}")


@router.post("/conversations/{conv_id}/choose")
async def choose_post(request: Request, web: WebOf, conv_id: str):
    session, form = await web.changing(request)
    cid = conv_id_of(conv_id)
    try:
        await web.actions.choose(session, form.get("task_id"), form.get("choice"), int_or_raw(form.get("strength")))
    except LabelError as exc:
        return await conversation_page(request, web, session, cid, str(exc), exc.status)
    return redirect(f"/conversations/{cid}")


@router.post("/conversations/{conv_id}/end")
async def end_post(request: Request, web: WebOf, conv_id: str):
    session, _ = await web.changing(request)
    await web.actions.end_conversation(session, conv_id_of(conv_id))
    return redirect("/label")


# ---- admins --------------------------------------------------------------------------------------------------
@router.get("/admin")
async def admin_get(request: Request, web: WebOf):
    return await admin_page(request, web, await web.session_of(request))


@router.get("/admin/progress.png")
async def admin_png(request: Request, web: WebOf):
    png = await web.actions.progress_png(await web.session_of(request))
    return Response(png, media_type="image/png")


@router.post("/admin/users")
async def admin_add_user(request: Request, web: WebOf):
    session, form = await web.changing(request)
    user, password = await web.actions.add_user(session, form.get("name"), form.get("role", "labeler"))
    return await admin_page(request, web, session, (user.name, user.role, password))


@router.post("/admin/export")
async def admin_export(request: Request, web: WebOf):
    session, form = await web.changing(request)
    return download(await web.actions.export(session, str(form.get("campaign") or "")))
