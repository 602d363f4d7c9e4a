"""Accounts and sessions in the database: users, hashed passwords, login throttling, server-side sessions,
and the cookie-signing secret the replicas share (hashing and cookies themselves are auth.py's)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from .database import Database
from .errors import Conflict, Invalid, NotFound
from .records import ADMIN, ROLES, SessionInfo, UserInfo
from .schema import AuditLog, LoginThrottle, SessionRow, Setting, User, utcnow

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def digest(token: str) -> str:
    """SHA-256 of a random token (session ids have 256 bits: no salt or slow hash needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token_of(session_id: str) -> str:
    """The session's CSRF token, derived from its id so that neither is stored."""
    return hmac.new(session_id.encode(), b"hh-ray csrf", hashlib.sha256).hexdigest()


def _info(u: User) -> UserInfo:
    return UserInfo(u.id, u.name, u.role, bool(u.must_change_password))


class Accounts(Database):
    """Users and their sessions."""

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
