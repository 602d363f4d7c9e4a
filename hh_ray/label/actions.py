"""Every action a labeler or an admin takes, written once.

The pages (pages.py) and the JSON API (api.py) only translate HTTP into these calls, and their results, or the
`LabelError` they raise, back into HTML or JSON. The actions check who may do what (admins only, own
conversations through the store) and run the store's blocking calls off the event loop; they know nothing of
requests, cookies or CSRF tokens, which are the web layer's (web.py).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from .auth import Auth, create_user
from .config import LabelConfig
from .errors import Forbidden
from .export import export_records
from .progress import Progress, progress_png, summarize
from .records import ChoiceResult, ComparisonRecord, ConversationView, SessionInfo, TaskView, TurnPlan, UserInfo
from .responses import ResponseSource, streamed_responses, two_responses
from .store import Store


@dataclass(frozen=True)
class TurnText:
    """A streamed turn's two responses so far (they grow; a new `attempt` starts them over)."""

    attempt: int
    response_a: str
    response_b: str


def require_admin(session: SessionInfo) -> None:
    if not session.user.is_admin:
        raise Forbidden("admins only")


@dataclass(frozen=True)
class ExportFile:
    """A download: its file name and its bytes (a zip)."""

    filename: str
    data: bytes


def zip_export(records: list[ComparisonRecord], test_fraction: float) -> tuple[bytes, int]:
    """The export's files (export.py's HH layout) as one zip in memory, and how many records it holds."""
    with tempfile.TemporaryDirectory() as tmp:
        summary = export_records(records, tmp, test_fraction)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in summary.files:
                zf.write(Path(tmp) / rel, rel)
    return buf.getvalue(), summary.total


class Actions:
    """The service's actions over one store and one response source. Each takes the caller's live session (the
    web layer found it and, for a change, checked its CSRF token), also where only being logged in matters."""

    def __init__(self, cfg: LabelConfig, store: Store, sources: ResponseSource, auth: Auth):
        self.cfg, self.store, self.sources, self.auth = cfg, store, sources, auth
        self.server = cfg.server

    # ---- accounts ------------------------------------------------------------------------------------------
    async def login(self, name: object, password: object, client: str) -> SessionInfo:
        return await run_in_threadpool(self.auth.login, name, password, client)

    async def logout(self, session: SessionInfo) -> None:
        await run_in_threadpool(self.store.delete_session, session.id)

    async def change_password(self, session: SessionInfo, current: object, new: object) -> None:
        await run_in_threadpool(self.auth.change_password, session, current, new)

    async def stats(self, session: SessionInfo) -> dict[str, int | None]:
        return await run_in_threadpool(self.store.user_stats, session.user)

    # ---- conversations -------------------------------------------------------------------------------------
    async def campaigns(self, session: SessionInfo) -> list[tuple[str, str]]:
        """(name, mode) of every campaign."""
        return await run_in_threadpool(self.store.campaign_names)

    async def conversations(self, session: SessionInfo) -> list[tuple[int, str, bool, int]]:
        """(id, campaign, ended, turns) of the labeler's newest conversations."""
        return await run_in_threadpool(self.store.conversations_of, session.user)

    async def start_conversation(self, session: SessionInfo, campaign: object) -> int:
        return await run_in_threadpool(self.store.start_conversation, session.user, campaign)

    async def conversation(self, session: SessionInfo, conv_id: int) -> ConversationView:
        return await run_in_threadpool(self.store.conversation, conv_id, session.user)

    async def take_turn(self, session: SessionInfo, conv_id: int, text: object) -> TaskView:
        """The labeler's turn and the task it opens: both responses generated in full, then stored."""
        stored, plan = await self._plan(session, conv_id, text)
        a, b = await two_responses(self.sources, plan, self.server.generate_retries)
        return await run_in_threadpool(self.store.add_task, plan, session.user, stored, a, b)

    async def stream_turn(self, session: SessionInfo, conv_id: int,
                          text: object) -> AsyncIterator[TurnText | TaskView]:
        """As `take_turn`, with the responses as they grow: the turn is checked now (bad input raises before
        anything streams), then the iterator gives `TurnText`s and last the stored task."""
        stored, plan = await self._plan(session, conv_id, text)
        return self._streamed_turn(session.user, stored, plan)

    async def _plan(self, session: SessionInfo, conv_id: int, text: object) -> tuple[str, TurnPlan]:
        return await run_in_threadpool(self.store.plan_turn, conv_id, session.user, text, self.server.max_turn_chars)

    async def _streamed_turn(self, user: UserInfo, stored: str, plan: TurnPlan) -> AsyncIterator[TurnText | TaskView]:
        async for attempt, a, b, pair in streamed_responses(self.sources, plan, self.server.generate_retries):
            if pair is None:
                yield TurnText(attempt, a, b)
            else:
                yield await run_in_threadpool(self.store.add_task, plan, user, stored, *pair)

    async def choose(self, session: SessionInfo, task_id: object, choice: object, strength: object) -> ChoiceResult:
        return await run_in_threadpool(self.store.submit_choice, session.user, task_id, choice, strength)

    async def end_conversation(self, session: SessionInfo, conv_id: int) -> None:
        await run_in_threadpool(self.store.end_conversation, conv_id, session.user)

    # ---- admins --------------------------------------------------------------------------------------------
    async def progress(self, session: SessionInfo) -> Progress:
        require_admin(session)
        return await run_in_threadpool(lambda: summarize(self.store.comparisons()))

    async def progress_png(self, session: SessionInfo) -> bytes:
        require_admin(session)
        return await run_in_threadpool(lambda: progress_png(self.store.comparisons()))

    async def users(self, session: SessionInfo) -> list[UserInfo]:
        require_admin(session)
        return await run_in_threadpool(self.store.users)

    async def add_user(self, session: SessionInfo, name: object, role: object) -> tuple[UserInfo, str]:
        """A new account and its one-time password (shown once)."""
        require_admin(session)
        return await run_in_threadpool(create_user, self.store, name, role, session.user.id)

    async def export(self, session: SessionInfo, campaign: str) -> ExportFile:
        """One campaign's comparisons (all when `campaign` is empty) as a zip of the HH-layout export."""
        require_admin(session)
        records = await run_in_threadpool(self.store.comparisons, campaign or None)
        data, total = await run_in_threadpool(zip_export, records, self.cfg.test_fraction)
        await run_in_threadpool(self.store.audit, session.user.id, "export",
                                f"campaign={campaign or '*'} records={total}")
        return ExportFile(f"{campaign or 'all'}-export.zip", data)
