"""Accounts and sessions: Argon2 password hashes, signed session cookies, CSRF tokens, login throttling.

A session is a server-side row (so it can expire and be revoked) stored by the SHA-256 of a random id; the cookie
carries that id signed with the service secret (itsdangerous), HttpOnly and SameSite. Every state-changing
request carries the session's CSRF token (form field or `X-CSRF-Token` header), derived from the id. Before
login there is no session, so the login form uses a double-submit token: a random value in a signed cookie that
the form must repeat. Failed logins are counted per (client address, name), so a stranger's guesses lock out
only the stranger. A one-time password (a new account's, or one reset by an operator) must be changed first.
"""

from __future__ import annotations

import hmac
import logging
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .config import ServerConfig
from .store import Invalid, LabelError, SessionInfo, Store, UserInfo

log = logging.getLogger(__name__)

SESSION_COOKIE = "hh_session"
LOGIN_COOKIE = "hh_login"  # pre-login CSRF (double submit)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
LOGIN_TOKEN_TTL_S = 3600

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password of anyone")  # unknown names cost the same time as known ones


class Unauthorized(LabelError):
    status = 401


class Throttled(LabelError):
    status = 429


class PasswordChangeRequired(LabelError):
    status = 403


MIN_PASSWORD_CHARS, MAX_PASSWORD_CHARS = 12, 256


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    """A one-time password: shown once, only its Argon2 hash is stored."""
    return secrets.token_urlsafe(12)


def create_user(store: Store, name: str, role: str, by: int | None = None,
                one_time: bool = True) -> tuple[UserInfo, str]:
    """A new account and its password; `one_time` (people's accounts) makes its owner change it at first login.
    Simulated labelers, whose passwords never leave the driver, keep theirs."""
    password = new_password()
    return store.add_user(name, role, hash_password(password), by=by, must_change=one_time), password


def reset_password(store: Store, name: str, by: int | None = None) -> str:
    """A new one-time password for `name` (an operator's reset); the owner changes it at the next login."""
    password = new_password()
    store.set_password_hash(store.user_id_of(name), hash_password(password), must_change=True, by=by)
    return password


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


class Auth:
    """Logins, sessions and tokens for one service replica (the secret is shared through the database)."""

    def __init__(self, store: Store, server: ServerConfig):
        self.store, self.server = store, server
        secret = store.session_secret()
        self._session_signer = URLSafeTimedSerializer(secret, salt="hh-ray-session")
        self._login_signer = URLSafeTimedSerializer(secret, salt="hh-ray-login")

    def login(self, name: object, password: object, client: str) -> SessionInfo:
        """A new session, or Unauthorized / Throttled; after too many failures from this client for this name,
        even the right password waits (from this client only)."""
        if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
            raise Unauthorized("give a user name and a password")
        if len(password) > MAX_PASSWORD_CHARS:
            raise Unauthorized("wrong user name or password")
        srv = self.server
        wait_s = self.store.claim_login_attempt(client, name, srv.login_max_failures, srv.login_window_s,
                                                srv.login_max_lockout_s)
        if wait_s:
            log.warning("login throttled for a (client, user name) pair after repeated failures")
            raise Throttled(f"too many failed logins from this address for this name; wait {wait_s:.0f} s "
                            "and try again")
        creds = self.store.user_credentials(name)
        if not (verify_password(creds[1] if creds else _DUMMY_HASH, password) and creds is not None):
            raise Unauthorized("wrong user name or password")
        self.store.clear_login_failures(client, name)
        user, stored_hash = creds
        if _hasher.check_needs_rehash(stored_hash):
            self.store.set_password_hash(user.id, hash_password(password))
        return self.store.create_session(user, self.server.session_ttl_s)

    def change_password(self, session: SessionInfo, current: object, new: object) -> None:
        """The owner's change: the current password, then a new one of 12-256 characters that differs from it."""
        creds = self.store.user_credentials(session.user.name)
        if creds is None or not isinstance(current, str) or not verify_password(creds[1], current):
            raise Unauthorized("the current password is wrong")
        if not isinstance(new, str) or not MIN_PASSWORD_CHARS <= len(new) <= MAX_PASSWORD_CHARS:
            raise Invalid(f"the new password must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
        if new == current:
            raise Invalid("the new password must differ from the one-time password")
        self.store.set_password_hash(session.user.id, hash_password(new), must_change=False, by=session.user.id)

    def session_cookie(self, session: SessionInfo) -> str:
        return self._session_signer.dumps(session.id)

    def session_from_cookie(self, value: str | None) -> SessionInfo | None:
        if not value:
            return None
        try:
            sid = self._session_signer.loads(value, max_age=self.server.session_ttl_s)
        except BadSignature:  # also SignatureExpired
            return None
        return self.store.get_session(sid) if isinstance(sid, str) else None

    def new_login_token(self) -> tuple[str, str]:
        """(cookie value, token for the form): the form must send back the token the cookie signs."""
        token = secrets.token_urlsafe(32)
        return self._login_signer.dumps(token), token

    def login_token_ok(self, cookie: str | None, given: str | None) -> bool:
        if not cookie:
            return False
        try:
            expected = self._login_signer.loads(cookie, max_age=LOGIN_TOKEN_TTL_S)
        except BadSignature:
            return False
        return tokens_match(expected, given)
