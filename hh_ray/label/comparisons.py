"""Comparisons: a labeler's choice on a task, written once per task, and what export and the progress page read."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .config import RED_TEAM, STRENGTHS
from .database import Database
from .errors import Invalid, NotFound
from .records import ChoiceResult, ComparisonRecord, UserInfo
from .schema import Campaign, ComparisonRow, Conversation, Task, Turn, User, utcnow

CHOICES = ("A", "B")


def check_choice(choice: object, strength: object) -> tuple[str, int]:
    if choice not in CHOICES:
        raise Invalid(f"choice must be 'A' or 'B', got {choice!r}")
    if isinstance(strength, bool) or not isinstance(strength, int) or strength not in STRENGTHS:
        raise Invalid(f"strength must be one of {sorted(STRENGTHS)} ({', '.join(STRENGTHS.values())}), "
                      f"got {strength!r}")
    return choice, strength


class Comparisons(Database):
    """Choices written (idempotent per task) and read back."""

    def submit_choice(self, user: UserInfo, task_id: str, choice: object, strength: object) -> ChoiceResult:
        """Write the comparison and continue the dialogue with the picked response; idempotent per task."""
        if not isinstance(task_id, str) or not re.fullmatch(r"[0-9a-f]{32}", task_id):
            raise NotFound(f"unknown task id {task_id!r}")
        choice, strength = check_choice(choice, strength)
        stored = self._stored_choice(task_id, user)
        if stored is not None:
            return stored
        try:
            with self.sessions.begin() as s:
                task = s.get(Task, task_id)
                if task is None or task.user_id != user.id:
                    raise NotFound(f"unknown task id {task_id!r}")
                conv = s.get(Conversation, task.conversation_id)
                camp = s.get(Campaign, conv.campaign_id)
                picked, other = ((task.response_a, task.response_b) if choice == "A"
                                 else (task.response_b, task.response_a))
                chosen, rejected = (other, picked) if camp.mode == RED_TEAM else (picked, other)
                now = utcnow()
                row = ComparisonRow(
                    task_id=task.id, campaign_id=camp.id, conversation_id=conv.id, user_id=user.id, mode=camp.mode,
                    context=task.context, response_a=task.response_a, response_b=task.response_b,
                    source_a=task.source_a, source_b=task.source_b, version_a=task.version_a,
                    version_b=task.version_b, choice=choice, strength=strength, chosen=chosen, rejected=rejected,
                    shown_at=task.created_at, decided_at=now,
                    decide_seconds=max(0.0, (now - task.created_at).total_seconds()))
                s.add(row)
                task.decided = True
                position = s.scalar(select(func.count()).select_from(Turn).where(Turn.conversation_id == conv.id))
                src, ver = (task.source_a, task.version_a) if choice == "A" else (task.source_b, task.version_b)
                s.add(Turn(conversation_id=conv.id, position=position, role="Assistant", text=picked,
                           source=src, version=ver))
                s.flush()
                return ChoiceResult(row.id, task.id, choice, strength, duplicate=False)
        except IntegrityError:  # the same task submitted concurrently: the first write stands
            stored = self._stored_choice(task_id, user)
            if stored is None:
                raise
            return stored

    def _stored_choice(self, task_id: str, user: UserInfo) -> ChoiceResult | None:
        with self.sessions() as s:
            row = s.scalar(select(ComparisonRow).where(ComparisonRow.task_id == task_id))
            if row is None:
                return None
            if row.user_id != user.id:
                raise NotFound(f"unknown task id {task_id!r}")
            return ChoiceResult(row.id, row.task_id, row.choice, row.strength, duplicate=True)

    def user_stats(self, user: UserInfo) -> dict[str, int | None]:
        """Comparisons and conversations of a user, and the newest conversation still open (None when all ended):
        a labeler killed mid-conversation finishes that one first."""
        with self.sessions() as s:
            n_cmp = s.scalar(select(func.count()).select_from(ComparisonRow).where(ComparisonRow.user_id == user.id))
            n_conv = s.scalar(select(func.count()).select_from(Conversation).where(Conversation.user_id == user.id))
            open_id = s.scalar(select(Conversation.id).where(Conversation.user_id == user.id,
                                                              Conversation.ended_at.is_(None))
                               .order_by(Conversation.id.desc()).limit(1))
            return {"comparisons": n_cmp, "conversations": n_conv, "open_conversation": open_id}

    def comparisons(self, campaign: str | None = None) -> list[ComparisonRecord]:
        with self.sessions() as s:
            q = (select(ComparisonRow, Campaign.name, User.name)
                 .join(Campaign, Campaign.id == ComparisonRow.campaign_id)
                 .join(User, User.id == ComparisonRow.user_id).order_by(ComparisonRow.id))
            if campaign is not None:
                if s.scalar(select(Campaign).where(Campaign.name == campaign)) is None:
                    raise NotFound(f"no campaign named {campaign!r}")
                q = q.where(Campaign.name == campaign)
            return [ComparisonRecord(r.id, r.task_id, camp, r.mode, labeler, r.context, r.chosen, r.rejected,
                                     r.choice, r.strength, r.response_a, r.response_b, r.source_a, r.source_b,
                                     r.version_a, r.version_b, r.decided_at, r.decide_seconds)
                    for r, camp, labeler in s.execute(q)]
