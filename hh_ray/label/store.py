"""The labeling store: every read and write the service makes, one class per concern joined into `Store`.

`Database` (database.py) holds the engine, the sessionmaker and the Alembic revision; `Accounts` (users,
sessions, login throttling), `Conversations` (campaigns, turns, open tasks) and `Comparisons` (choices, export
reads) each add their queries on it. The tables are in schema.py, the values handed out in records.py, the
refusals in errors.py; their names are re-exported here, where the rest of the code and the tests import them.
A comparison is written once: `comparisons.task_id` is unique, and a repeated submit returns the stored row.
"""

from __future__ import annotations

from .accounts import Accounts, csrf_token_of, digest
from .comparisons import CHOICES, Comparisons, check_choice
from .conversations import Conversations, check_turn_text, transcript
from .database import MIGRATIONS, Database
from .errors import Conflict, Forbidden, Invalid, LabelError, NotFound, SchemaError
from .records import (
    ADMIN,
    LABELER,
    ROLES,
    ChoiceResult,
    ComparisonRecord,
    ConversationView,
    Sample,
    SessionInfo,
    TaskView,
    TurnPlan,
    TurnView,
    UserInfo,
)
from .schema import (
    AuditLog,
    Base,
    Campaign,
    ComparisonRow,
    Conversation,
    LoginThrottle,
    SessionRow,
    Setting,
    Task,
    Turn,
    User,
    utcnow,
)

__all__ = [
    "ADMIN", "CHOICES", "LABELER", "MIGRATIONS", "ROLES", "Accounts", "AuditLog", "Base", "Campaign", "ChoiceResult",
    "ComparisonRecord", "ComparisonRow", "Comparisons", "Conflict", "Conversation", "ConversationView",
    "Conversations", "Database", "Forbidden", "Invalid", "LabelError", "LoginThrottle", "NotFound", "Sample",
    "SchemaError", "SessionInfo", "SessionRow", "Setting", "Store", "Task", "TaskView", "Turn", "TurnPlan", "TurnView",
    "User", "UserInfo", "check_choice", "check_turn_text", "csrf_token_of", "digest", "transcript", "utcnow",
]


class Store(Accounts, Conversations, Comparisons):
    """All database access over one URL: each concern's queries on one shared engine."""
