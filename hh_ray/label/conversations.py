"""Campaigns, conversations and their open tasks: the dialogue's rules (whose turn it is, what a turn may hold,
what the sources answer) kept in the database."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hh_ray.data.hh import ASSISTANT, HUMAN

from .config import LabelConfig
from .database import Database
from .errors import Conflict, Forbidden, Invalid, NotFound
from .records import ConversationView, Sample, TaskView, TurnPlan, TurnView, UserInfo
from .schema import AuditLog, Campaign, Conversation, Task, Turn, utcnow


def transcript(turns: list[TurnView]) -> str:
    """HH's text form: "\\n\\nHuman: ...\\n\\nAssistant: ..." for the turns so far."""
    return "".join(f"{HUMAN if t.role == 'Human' else ASSISTANT} {t.text}" for t in turns)


def check_turn_text(text: str, max_chars: int) -> str:
    """The human turn as stored (stripped), or Invalid naming what is wrong with it."""
    if not isinstance(text, str):
        raise Invalid("the turn must be text")
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()  # a browser textarea sends CRLF
    if not text:
        raise Invalid("the turn is empty; write something for the assistant to answer")
    if len(text) > max_chars:
        raise Invalid(f"the turn is {len(text)} characters long; the limit is {max_chars}")
    for marker in (HUMAN, ASSISTANT):
        if marker in "\n\n" + text:
            raise Invalid(f"the turn may not contain the transcript marker {marker.strip()!r} after a blank line")
    return text


class Conversations(Database):
    """Campaigns and the labelers' conversations in them, up to the task that waits for a choice."""

    def sync_campaigns(self, cfg: LabelConfig) -> None:
        """Create the configured campaigns; a stored campaign keeps its mode and sources (a new name for new ones)."""
        with self.sessions.begin() as s:
            for c in cfg.campaigns:
                row = s.scalar(select(Campaign).where(Campaign.name == c.name))
                if row is None:
                    s.add(Campaign(name=c.name, mode=c.mode, source_a=c.sources[0], source_b=c.sources[1]))
                    s.add(AuditLog(action="campaign.create", detail=f"{c.name}: {c.mode}, {c.sources}"))
                elif (row.mode, row.source_a, row.source_b) != (c.mode, *c.sources):
                    raise Conflict(f"campaign '{c.name}' is stored with mode {row.mode} and sources "
                                   f"{[row.source_a, row.source_b]}; give the new setup a new campaign name")

    def campaign_names(self) -> list[tuple[str, str]]:
        with self.sessions() as s:
            return [(r.name, r.mode) for r in s.scalars(select(Campaign).order_by(Campaign.id))]

    def start_conversation(self, user: UserInfo, campaign: str) -> int:
        with self.sessions.begin() as s:
            c = s.scalar(select(Campaign).where(Campaign.name == campaign)) if isinstance(campaign, str) else None
            if c is None:
                raise NotFound(f"no campaign named {campaign!r}")
            conv = Conversation(campaign_id=c.id, user_id=user.id)
            s.add(conv)
            s.flush()
            return conv.id

    def _own_conversation(self, s: Session, conv_id: int, user: UserInfo) -> Conversation:
        conv = s.get(Conversation, conv_id) if isinstance(conv_id, int) else None
        if conv is None or (conv.user_id != user.id and not user.is_admin):
            raise NotFound(f"no conversation {conv_id} of yours")  # another labeler's looks like none at all
        return conv

    def conversation(self, conv_id: int, user: UserInfo) -> ConversationView:
        with self.sessions() as s:
            conv = self._own_conversation(s, conv_id, user)
            camp = s.get(Campaign, conv.campaign_id)
            turns = [TurnView(t.role, t.text) for t in
                     s.scalars(select(Turn).where(Turn.conversation_id == conv.id).order_by(Turn.position))]
            task = s.scalar(select(Task).where(Task.conversation_id == conv.id, Task.decided.is_(False)))
            pending = (TaskView(task.id, task.context, task.response_a, task.response_b, task.created_at)
                       if task else None)
            return ConversationView(conv.id, camp.name, camp.mode, conv.user_id, conv.ended_at is not None, turns,
                                    pending)

    def conversations_of(self, user: UserInfo, limit: int = 50) -> list[tuple[int, str, bool, int]]:
        """(id, campaign, ended, turns) of the user's newest conversations."""
        with self.sessions() as s:
            n_turns = (select(func.count()).select_from(Turn).where(Turn.conversation_id == Conversation.id)
                       .scalar_subquery())
            rows = s.execute(select(Conversation.id, Campaign.name, Conversation.ended_at, n_turns)
                             .join(Campaign, Campaign.id == Conversation.campaign_id)
                             .where(Conversation.user_id == user.id).order_by(Conversation.id.desc()).limit(limit))
            return [(i, c, e is not None, n) for i, c, e, n in rows]

    def plan_turn(self, conv_id: int, user: UserInfo, text: str, max_chars: int) -> tuple[str, TurnPlan]:
        """Check a new human turn against the conversation's state; (stored text, what to generate)."""
        text = check_turn_text(text, max_chars)
        view = self.conversation(conv_id, user)
        if view.user_id != user.id:
            raise Forbidden("only the conversation's own labeler writes its turns")
        if view.ended:
            raise Conflict(f"conversation {conv_id} has ended; start a new one")
        if view.pending is not None:
            raise Conflict(f"conversation {conv_id} waits for a choice on task {view.pending.id}")
        with self.sessions() as s:
            camp = s.scalar(select(Campaign).where(Campaign.name == view.campaign))
        context = transcript(view.turns + [TurnView("Human", text)]) + ASSISTANT
        return text, TurnPlan(conv_id, camp.name, camp.source_a, camp.source_b, context)

    def add_task(self, plan: TurnPlan, user: UserInfo, human_text: str, a: Sample, b: Sample) -> TaskView:
        """Store the human turn and the two responses as one open task (in one transaction)."""
        try:
            with self.sessions.begin() as s:
                conv = self._own_conversation(s, plan.conversation_id, user)
                if conv.ended_at is not None:
                    raise Conflict(f"conversation {conv.id} has ended")
                if s.scalar(select(Task).where(Task.conversation_id == conv.id, Task.decided.is_(False))):
                    raise Conflict(f"conversation {conv.id} already waits for a choice")
                position = s.scalar(select(func.count()).select_from(Turn).where(Turn.conversation_id == conv.id))
                s.add(Turn(conversation_id=conv.id, position=position, role="Human", text=human_text))
                task = Task(id=uuid.uuid4().hex, conversation_id=conv.id, user_id=user.id, context=plan.context,
                            response_a=a.text, response_b=b.text, source_a=a.source, source_b=b.source,
                            version_a=a.version, version_b=b.version)
                s.add(task)
                s.flush()
                return TaskView(task.id, task.context, task.response_a, task.response_b, task.created_at)
        except IntegrityError:  # a concurrent post on the same conversation took this position
            raise Conflict(f"conversation {plan.conversation_id} changed meanwhile; reload it") from None

    def end_conversation(self, conv_id: int, user: UserInfo) -> None:
        with self.sessions.begin() as s:
            conv = self._own_conversation(s, conv_id, user)
            if conv.user_id != user.id:
                raise Forbidden("only the conversation's own labeler ends it")
            if conv.ended_at is None:
                conv.ended_at = utcnow()
                # an open task is abandoned: it never becomes a comparison
                for task in s.scalars(select(Task).where(Task.conversation_id == conv.id, Task.decided.is_(False))):
                    s.delete(task)
