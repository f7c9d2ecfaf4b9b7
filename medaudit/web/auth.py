"""Users, passwords, sessions and login limits of the web portal (``medaudit web``).

Roles: ``reviewer`` (医保局审核员: the queue, decisions, finalize, every institution's reports),
``admin`` (医保局管理员: all a reviewer does; users are managed with ``medaudit web user``) and
``clerk`` (医院经办人员, bound to one institution: only that institution's findings, appeals,
attachments, workbooks, reports and statements).

Passwords are hashed with Argon2id (argon2-cffi). A session is a random id kept server side
(``web_sessions``, only its SHA-256) and sent as a cookie ``<id>.<HMAC>`` signed with the
database's secret (``web_settings``); it expires after a fixed time (``--session-hours``),
on logout, and when the user is disabled. Every form carries the session's CSRF token; the
login form carries one bound to a pre-login cookie. Failed logins are limited per user name and
per client address (:class:`LoginLimiter`). Times come from :func:`medaudit.hospital_loop.lifecycle.wall_now`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
from collections import defaultdict, deque
from dataclasses import dataclass

import duckdb
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..hospital_loop import lifecycle

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS web_user_seq;
CREATE TABLE IF NOT EXISTS web_users (
    user_id BIGINT PRIMARY KEY DEFAULT nextval('web_user_seq'),
    username VARCHAR UNIQUE,
    display_name VARCHAR,
    role VARCHAR,                -- reviewer | admin | clerk
    institution VARCHAR,         -- a clerk's fixmedins_code (NULL for the bureau's roles)
    password_hash VARCHAR,       -- Argon2id
    active BOOLEAN,
    created_at TIMESTAMP,
    created_by VARCHAR,
    disabled_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS web_sessions (
    sid_hash VARCHAR PRIMARY KEY,  -- SHA-256 of the session id (the cookie holds the id itself)
    user_id BIGINT,
    created_at TIMESTAMP,
    expires_at TIMESTAMP,
    csrf VARCHAR,
    flash VARCHAR                  -- one message for the next page
);
CREATE TABLE IF NOT EXISTS web_settings (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS web_login_seq;
CREATE TABLE IF NOT EXISTS web_logins (    -- sign-ins, failed ones and logouts
    login_id BIGINT PRIMARY KEY DEFAULT nextval('web_login_seq'),
    logged_at TIMESTAMP, username VARCHAR, client VARCHAR, outcome VARCHAR
);
"""

ROLES = {"reviewer": "医保局审核员", "admin": "医保局管理员", "clerk": "医院经办人员"}
BUREAU_ROLES = ("reviewer", "admin")
_USERNAME = re.compile(r"[A-Za-z0-9_.@-]{2,64}")
MIN_PASSWORD = 10

_hasher = PasswordHasher()  # Argon2id with the library's current parameters


class UserError(Exception):
    """A refused user change; the message names the field."""


@dataclass
class User:
    user_id: int
    username: str
    display_name: str
    role: str
    institution: str | None
    active: bool

    @property
    def actor(self) -> str:
        """How the audit log names this user: ``王芳 (wangfang)``."""
        return f"{self.display_name} ({self.username})" if self.display_name != self.username else self.username

    @property
    def is_bureau(self) -> bool:
        return self.role in BUREAU_ROLES

    @property
    def role_cn(self) -> str:
        return ROLES.get(self.role, self.role)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA)


def secret(con: duckdb.DuckDBPyConnection) -> bytes:
    """The database's signing key, made on first use (random, 32 bytes)."""
    row = con.execute("SELECT value FROM web_settings WHERE key = 'secret'").fetchall()
    if row:
        return bytes.fromhex(row[0][0])
    key = secrets.token_bytes(32)
    con.execute("INSERT INTO web_settings VALUES ('secret', ?)", [key.hex()])
    return key


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_strength(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")


_USER_COLS = "user_id, username, display_name, role, institution, active"


def _user(con: duckdb.DuckDBPyConnection, username: str) -> User:
    """A user this transaction has just written (so it is there)."""
    u = get_user(con, username)
    assert u is not None, username
    return u


def get_user(con: duckdb.DuckDBPyConnection, username: str) -> User | None:
    rows = con.execute(f"SELECT {_USER_COLS} FROM web_users WHERE username = ?", [username]).fetchall()
    return User(*rows[0]) if rows else None


def add_user(
    con: duckdb.DuckDBPyConnection,
    username: str,
    role: str,
    password: str,
    display_name: str = "",
    institution: str | None = None,
    by: str = "",
) -> User:
    username = (username or "").strip()
    if not _USERNAME.fullmatch(username):
        raise UserError(f"username {username!r}: 2-64 letters, digits or _ . @ -")
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    institution = (institution or "").strip() or None
    if role == "clerk" and not institution:
        raise UserError("institution: a hospital clerk is bound to one institution (--institution CODE)")
    if role != "clerk" and institution:
        raise UserError(f"institution: only a clerk is bound to an institution, not a {role}")
    check_password_strength(password)
    if get_user(con, username):
        raise UserError(f"username {username!r} exists already")
    con.execute(
        "INSERT INTO web_users (username, display_name, role, institution, password_hash, active, created_at, created_by)"
        " VALUES (?, ?, ?, ?, ?, TRUE, ?, ?)",
        [
            username,
            (display_name or "").strip() or username,
            role,
            institution,
            hash_password(password),
            lifecycle.wall_now(),
            by,
        ],
    )
    return _user(con, username)


def set_active(con: duckdb.DuckDBPyConnection, username: str, active: bool) -> User:
    u = get_user(con, username)
    if not u:
        raise UserError(f"username {username!r}: no such user")
    con.execute(
        "UPDATE web_users SET active = ?, disabled_at = ? WHERE user_id = ?",
        [active, None if active else lifecycle.wall_now(), u.user_id],
    )
    if not active:  # signed out everywhere at once
        con.execute("DELETE FROM web_sessions WHERE user_id = ?", [u.user_id])
    return _user(con, username)


def set_password(con: duckdb.DuckDBPyConnection, username: str, password: str) -> None:
    u = get_user(con, username)
    if not u:
        raise UserError(f"username {username!r}: no such user")
    check_password_strength(password)
    con.execute("UPDATE web_users SET password_hash = ? WHERE user_id = ?", [hash_password(password), u.user_id])
    con.execute("DELETE FROM web_sessions WHERE user_id = ?", [u.user_id])


def list_users(con: duckdb.DuckDBPyConnection) -> list[User]:
    return [User(*r) for r in con.execute(f"SELECT {_USER_COLS} FROM web_users ORDER BY username").fetchall()]


# a hash to verify against when the user does not exist, so both answers take the same time
_DUMMY = _hasher.hash(secrets.token_hex(16))


def authenticate(con: duckdb.DuckDBPyConnection, username: str, password: str) -> User | None:
    """The user when the password is right and the user is active, else None (same time either way)."""
    rows = con.execute(
        f"SELECT {_USER_COLS}, password_hash FROM web_users WHERE username = ?", [(username or "").strip()]
    ).fetchall()
    stored = rows[0][-1] if rows else _DUMMY
    try:
        ok: bool = _hasher.verify(stored, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not rows or not ok:
        return None
    user = User(*rows[0][:-1])
    if not user.active:
        return None
    if _hasher.check_needs_rehash(stored):
        con.execute("UPDATE web_users SET password_hash = ? WHERE user_id = ?", [hash_password(password), user.user_id])
    return user


def log_login(con: duckdb.DuckDBPyConnection, username: str, client: str, outcome: str) -> None:
    con.execute(
        "INSERT INTO web_logins (logged_at, username, client, outcome) VALUES (?, ?, ?, ?)",
        [lifecycle.wall_now(), (username or "")[:64], client, outcome],
    )


# ---------------------------------------------------------------------------- sessions


def sign(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass
class Session:
    sid_hash: str
    user: User
    csrf: str
    expires_at: dt.datetime


def new_session(con: duckdb.DuckDBPyConnection, key: bytes, user: User, hours: float) -> tuple[str, Session]:
    """A new session for ``user``; returns (the cookie value, the session)."""
    sid = secrets.token_urlsafe(32)
    now = lifecycle.wall_now()
    expires = now + dt.timedelta(hours=hours)
    csrf = secrets.token_urlsafe(32)
    con.execute("DELETE FROM web_sessions WHERE expires_at < ?", [now])
    con.execute(
        "INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?, NULL)", [_sid_hash(sid), user.user_id, now, expires, csrf]
    )
    return f"{sid}.{sign(key, sid)}", Session(_sid_hash(sid), user, csrf, expires)


def load_session(con: duckdb.DuckDBPyConnection, key: bytes, cookie: str | None) -> Session | None:
    """The session a cookie stands for: the signature checks, it is stored, not expired, and its user is active."""
    if not cookie or "." not in cookie:
        return None
    sid, _, sig = cookie.rpartition(".")
    if not hmac.compare_digest(sign(key, sid), sig):
        return None
    rows = con.execute(
        f"""SELECT s.sid_hash, s.csrf, s.expires_at, {", ".join("u." + c.strip() for c in _USER_COLS.split(","))}
            FROM web_sessions s JOIN web_users u USING (user_id) WHERE s.sid_hash = ?""",
        [_sid_hash(sid)],
    ).fetchall()
    if not rows:
        return None
    h, csrf, expires, *u = rows[0]
    user = User(*u)
    if expires <= lifecycle.wall_now() or not user.active:
        con.execute("DELETE FROM web_sessions WHERE sid_hash = ?", [h])
        return None
    return Session(h, user, csrf, expires)


def end_session(con: duckdb.DuckDBPyConnection, s: Session) -> None:
    con.execute("DELETE FROM web_sessions WHERE sid_hash = ?", [s.sid_hash])


def set_flash(con: duckdb.DuckDBPyConnection, s: Session, text: str) -> None:
    con.execute("UPDATE web_sessions SET flash = ? WHERE sid_hash = ?", [text, s.sid_hash])


def pop_flash(con: duckdb.DuckDBPyConnection, s: Session) -> str:
    rows = con.execute("SELECT flash FROM web_sessions WHERE sid_hash = ?", [s.sid_hash]).fetchall()
    if rows and rows[0][0]:
        con.execute("UPDATE web_sessions SET flash = NULL WHERE sid_hash = ?", [s.sid_hash])
        return rows[0][0]
    return ""


# ---------------------------------------------------------------------------- login limits


class LoginLimiter:
    """At most ``max_failures`` failed logins per user name and per client address in ``window``
    (a sliding window); past that, logins are refused until the oldest failure leaves it."""

    def __init__(self, max_failures: int = 5, window: dt.timedelta = dt.timedelta(minutes=15)):
        self.max_failures, self.window = max_failures, window
        self._fails: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _prune(self, key: str, now: dt.datetime) -> deque:
        q = self._fails[key]
        while q and now - q[0] >= self.window:
            q.popleft()
        return q

    def retry_after(self, keys: list[str]) -> int:
        """Seconds to wait before another try (0: a try is allowed now)."""
        now = lifecycle.wall_now()
        with self._lock:
            wait = 0
            for k in keys:
                q = self._prune(k, now)
                if len(q) >= self.max_failures:
                    wait = max(wait, int((q[0] + self.window - now).total_seconds()) + 1)
            return wait

    def failed(self, keys: list[str]) -> None:
        now = lifecycle.wall_now()
        with self._lock:
            for k in keys:
                self._prune(k, now).append(now)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for k in keys:
                if k.startswith("user:"):
                    self._fails.pop(k, None)
