"""The labeling store: SQLAlchemy 2 models and every read and write the service makes.

SQLite (a file in the service folder) by default, PostgreSQL by URL. The schema is versioned with Alembic
(scripts under `migrations/`, applied by `Store.migrate()` at startup); replicas only check the revision.
A comparison is written once: `comparisons.task_id` is unique, and a repeated submit returns the stored row.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    delete,
    event,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from hh_ray.data.hh import ASSISTANT, HUMAN

from .config import RED_TEAM, STRENGTHS, LabelConfig

ADMIN, LABELER = "admin", "labeler"
ROLES = (ADMIN, LABELER)
CHOICES = ("A", "B")
MIGRATIONS = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def utcnow() -> datetime:
    """Naive UTC: SQLite drops time zones, so every timestamp is stored and compared naive in UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class LabelError(Exception):
    """A request the service refuses; `status` is the HTTP status, the message says what is wrong."""

    status = 400


class Invalid(LabelError):
    status = 422


class NotFound(LabelError):
    status = 404


class Conflict(LabelError):
    status = 409


class Forbidden(LabelError):
    status = 403


class SchemaError(LabelError):
    status = 500


# ---- schema ----------------------------------------------------------------------------------------------
class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class SessionRow(Base):
    """A session by the SHA-256 of its id: the database alone gives no session (its CSRF token derives from the id)."""

    __tablename__ = "sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class LoginThrottle(Base):
    """Failed logins per (client address, user name): a stranger's failures never lock the user out elsewhere."""

    __tablename__ = "login_throttle"
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # within the window, since the last lockout
    lockouts: Mapped[int] = mapped_column(Integer, default=0)  # each one doubles the next
    last_failure: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    mode: Mapped[str] = mapped_column(String(16))
    source_a: Mapped[str] = mapped_column(String(64))
    source_b: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Turn(Base):
    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("conversation_id", "position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))  # Human or Assistant
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Task(Base):
    """Two responses shown to a labeler, waiting for a choice (at most one open task per conversation)."""

    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    context: Mapped[str] = mapped_column(Text)
    response_a: Mapped[str] = mapped_column(Text)
    response_b: Mapped[str] = mapped_column(Text)
    source_a: Mapped[str] = mapped_column(String(64))
    source_b: Mapped[str] = mapped_column(String(64))
    version_a: Mapped[int] = mapped_column(Integer)
    version_b: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    decided: Mapped[bool] = mapped_column(Boolean, default=False)


class ComparisonRow(Base):
    __tablename__ = "comparisons"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    context: Mapped[str] = mapped_column(Text)
    response_a: Mapped[str] = mapped_column(Text)
    response_b: Mapped[str] = mapped_column(Text)
    source_a: Mapped[str] = mapped_column(String(64))
    source_b: Mapped[str] = mapped_column(String(64))
    version_a: Mapped[int] = mapped_column(Integer)
    version_b: Mapped[int] = mapped_column(Integer)
    choice: Mapped[str] = mapped_column(String(1))  # what the labeler picked (the more harmful in red-team)
    strength: Mapped[int] = mapped_column(Integer)
    chosen: Mapped[str] = mapped_column(Text)  # the preferred response in HH's sense (the less harmful in red-team)
    rejected: Mapped[str] = mapped_column(Text)
    shown_at: Mapped[datetime] = mapped_column(DateTime)
    decided_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    decide_seconds: Mapped[float] = mapped_column(Float)


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# ---- what the store hands out ------------------------------------------------------------------------------
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


def digest(token: str) -> str:
    """SHA-256 of a random token (session ids have 256 bits: no salt or slow hash needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_of(session_id: str) -> str:
    """The session's CSRF token, derived from its id so that neither is stored."""
    return hmac.new(session_id.encode(), b"hh-ray csrf", hashlib.sha256).hexdigest()


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


def check_choice(choice: object, strength: object) -> tuple[str, int]:
    if choice not in CHOICES:
        raise Invalid(f"choice must be 'A' or 'B', got {choice!r}")
    if isinstance(strength, bool) or not isinstance(strength, int) or strength not in STRENGTHS:
        raise Invalid(f"strength must be one of {sorted(STRENGTHS)} ({', '.join(STRENGTHS.values())}), "
                      f"got {strength!r}")
    return choice, strength


def _info(u: User) -> UserInfo:
    return UserInfo(u.id, u.name, u.role, bool(u.must_change_password))


class Store:
    """All database access; one short transaction per call, safe across threads and processes."""

    def __init__(self, url: str):
        self.url = url
        kwargs: dict = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(dbapi_conn, _record):  # WAL lets several replicas read while one writes
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    # ---- schema versions ----------------------------------------------------------------------------------
    def _alembic(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def migrate(self) -> str:
        """Bring the schema to the newest revision (Alembic, programmatically); returns that revision."""
        from alembic import command

        cfg = self._alembic()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return self.revision()

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic()).get_current_head()

    def check_schema(self) -> None:
        have, want = self.revision(), self.head()
        if have != want:
            raise SchemaError(f"database schema at revision {have}, the code needs {want}; run the service "
                               "startup (it migrates) or Store.migrate()")

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- settings and audit ------------------------------------------------------------------------------
    def session_secret(self) -> str:
        """The cookie-signing secret, made once and shared by every replica through the database."""
        with self.sessions() as s:
            row = s.get(Setting, "session_secret")
            if row is not None:
                return row.value
        try:
            with self.sessions.begin() as s:
                s.add(Setting(key="session_secret", value=secrets.token_urlsafe(48)))
        except IntegrityError:  # another replica wrote it first; both read back the one stored
            pass
        with self.sessions() as s:
            return s.get(Setting, "session_secret").value

    def audit(self, user_id: int | None, action: str, detail: str = "") -> None:
        with self.sessions.begin() as s:
            s.add(AuditLog(user_id=user_id, action=action, detail=detail))

    def audit_log(self) -> list[tuple[str, str, str]]:
        with self.sessions() as s:
            rows = s.execute(select(AuditLog.action, AuditLog.detail, User.name)
                             .join(User, User.id == AuditLog.user_id, isouter=True).order_by(AuditLog.id)).all()
            return [(a, d, n or "") for a, d, n in rows]

    # ---- users -------------------------------------------------------------------------------------------
    def add_user(self, name: str, role: str, password_hash: str, by: int | None = None,
                 must_change: bool = False) -> UserInfo:
        if not isinstance(name, str) or not _NAME.match(name):
            raise Invalid(f"user name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if role not in ROLES:
            raise Invalid(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        try:
            with self.sessions.begin() as s:
                user = User(name=name, role=role, password_hash=password_hash, must_change_password=must_change)
                s.add(user)
                s.flush()
                s.add(AuditLog(user_id=by, action="user.add", detail=f"{name} ({role})"))
                return _info(user)
        except IntegrityError:
            raise Conflict(f"user '{name}' exists already") from None

    def user_credentials(self, name: str) -> tuple[UserInfo, str] | None:
        with self.sessions() as s:
            u = s.scalar(select(User).where(User.name == name, User.active.is_(True)))
            return (_info(u), u.password_hash) if u else None

    def set_password_hash(self, user_id: int, password_hash: str, must_change: bool | None = None,
                          by: int | None = None) -> None:
        """A new password; `must_change` True makes it one-time (changed at the next login)."""
        with self.sessions.begin() as s:
            u = s.get(User, user_id)
            u.password_hash = password_hash
            if must_change is not None:
                u.must_change_password = must_change
                s.add(AuditLog(user_id=by, action="user.password", detail=f"{u.name} one-time={must_change}"))

    def set_active(self, name: str, active: bool, by: int | None = None) -> UserInfo:
        """Disable (every session ends, logins fail) or re-enable an account."""
        with self.sessions.begin() as s:
            u = s.scalar(select(User).where(User.name == name)) if isinstance(name, str) else None
            if u is None:
                raise NotFound(f"no user named {name!r}")
            u.active = active
            if not active:
                s.execute(delete(SessionRow).where(SessionRow.user_id == u.id))
            s.add(AuditLog(user_id=by, action="user.enable" if active else "user.disable", detail=name))
            return _info(u)

    def user_id_of(self, name: str) -> int:
        with self.sessions() as s:
            uid = s.scalar(select(User.id).where(User.name == name)) if isinstance(name, str) else None
        if uid is None:
            raise NotFound(f"no user named {name!r}")
        return uid

    def has_admin(self) -> bool:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(User).where(User.role == ADMIN)) > 0

    def users(self) -> list[UserInfo]:
        with self.sessions() as s:
            return [_info(u) for u in s.scalars(select(User).order_by(User.id))]

    # ---- login throttling and sessions -------------------------------------------------------------------
    def claim_login_attempt(self, client: str, name: str, max_failures: int, window_s: float,
                            max_lockout_s: float) -> float:
        """Count a login attempt as failed before its password is checked; 0 when it may go on, else the seconds
        the (client, name) pair is locked for.

        Counting first, in one transaction with the lock check, makes concurrent attempts see each other (a check
        that reads the count and writes it after the password would let them all through). The `max_failures`-th
        failure within `window_s` locks the pair for `window_s`, doubling with each lockout up to `max_lockout_s`;
        a success clears it (`clear_login_failures`)."""
        key = (client[:64], name[:64])
        where = (LoginThrottle.client == key[0], LoginThrottle.name == key[1])
        now = utcnow()
        insert = (sqlite_insert if self.engine.dialect.name == "sqlite" else pg_insert)(LoginThrottle)
        with self.sessions.begin() as s:  # pairs quiet for max_lockout_s are forgotten (the table stays small)
            s.execute(delete(LoginThrottle).where(
                LoginThrottle.last_failure < now - timedelta(seconds=max(window_s, max_lockout_s)),
                or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now)))
            s.execute(insert.values(client=key[0], name=key[1], failures=0, lockouts=0, last_failure=now)
                      .on_conflict_do_nothing())
            stale = now - timedelta(seconds=window_s)
            counted = s.execute(
                update(LoginThrottle).where(*where, or_(LoginThrottle.locked_until.is_(None),
                                                        LoginThrottle.locked_until <= now))
                .values(failures=case((LoginThrottle.last_failure < stale, 1), else_=LoginThrottle.failures + 1),
                        last_failure=now, locked_until=None)
                .returning(LoginThrottle.failures, LoginThrottle.lockouts)).first()
            if counted is None:
                locked_until = s.scalar(select(LoginThrottle.locked_until).where(*where))
                return max(1.0, (locked_until - now).total_seconds())
            failures, lockouts = counted
            if failures >= max_failures:
                lock_s = min(window_s * 2 ** lockouts, max_lockout_s)
                s.execute(update(LoginThrottle).where(*where).values(
                    failures=0, lockouts=lockouts + 1, locked_until=now + timedelta(seconds=lock_s)))
            return 0.0

    def clear_login_failures(self, client: str, name: str) -> None:
        with self.sessions.begin() as s:
            s.execute(delete(LoginThrottle).where(LoginThrottle.client == client[:64],
                                                  LoginThrottle.name == name[:64]))

    def create_session(self, user: UserInfo, ttl_s: float) -> SessionInfo:
        sid = secrets.token_urlsafe(32)
        expires = utcnow() + timedelta(seconds=ttl_s)
        with self.sessions.begin() as s:
            s.add(SessionRow(id_hash=digest(sid), user_id=user.id, expires_at=expires))
        return SessionInfo(sid, user, csrf_token_of(sid), expires)

    def get_session(self, sid: str) -> SessionInfo | None:
        """The live session with this id, or None (an expired one is deleted on sight)."""
        with self.sessions.begin() as s:
            row = s.get(SessionRow, digest(sid))
            if row is None:
                return None
            if row.expires_at <= utcnow():
                s.delete(row)
                return None
            u = s.get(User, row.user_id)
            if u is None or not u.active:
                return None
            return SessionInfo(sid, _info(u), csrf_token_of(sid), row.expires_at)

    def delete_session(self, sid: str) -> None:
        with self.sessions.begin() as s:
            row = s.get(SessionRow, digest(sid))
            if row is not None:
                s.delete(row)

    # ---- campaigns ---------------------------------------------------------------------------------------
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

    # ---- conversations -----------------------------------------------------------------------------------
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

    # ---- reading comparisons -----------------------------------------------------------------------------
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

    def count(self, table: type[Base]) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(table))
