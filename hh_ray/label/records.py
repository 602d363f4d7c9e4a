"""What the store hands out: frozen values, detached from any database session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

ADMIN, LABELER = "admin", "labeler"
ROLES = (ADMIN, LABELER)


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    role: str
    must_change_password: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@dataclass(frozen=True)
class SessionInfo:
    id: str
    user: UserInfo
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class TaskView:
    id: str
    context: str
    response_a: str
    response_b: str
    created_at: datetime


@dataclass(frozen=True)
class TurnView:
    role: str
    text: str


@dataclass(frozen=True)
class ConversationView:
    id: int
    campaign: str
    mode: str
    user_id: int
    ended: bool
    turns: list[TurnView]
    pending: TaskView | None


@dataclass(frozen=True)
class TurnPlan:
    """What the generator needs for a new human turn: the campaign's sources and the HH context to answer."""

    conversation_id: int
    campaign: str
    source_a: str
    source_b: str
    context: str


@dataclass(frozen=True)
class Sample:
    """One generated response and where it came from."""

    text: str
    source: str
    version: int


@dataclass(frozen=True)
class ChoiceResult:
    comparison_id: int
    task_id: str
    choice: str
    strength: int
    duplicate: bool  # True when this task had been decided before (the stored result is returned)


@dataclass(frozen=True)
class ComparisonRecord:
    """A stored comparison as export and analyses read it."""

    id: int
    task_id: str
    campaign: str
    mode: str
    labeler: str
    context: str
    chosen: str
    rejected: str
    choice: str
    strength: int
    response_a: str
    response_b: str
    source_a: str
    source_b: str
    version_a: int
    version_b: int
    decided_at: datetime
    decide_seconds: float
