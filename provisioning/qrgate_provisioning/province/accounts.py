"""People who log in to the dashboard: their roles, hashed passwords, sessions, and the audit log.

Roles are not a ladder. A ``viewer`` sees the fleet, the places and the reports; an ``operator`` also sends
commands to gates (next issue) and reads the audit log; a ``tracer`` also runs trace queries on people's passages
(next issue) and reads the audit log. An operator cannot trace and a tracer cannot command a gate: the two powers
are kept apart on purpose, so that each is checked by someone who does not hold it.

Passwords are hashed with argon2id (argon2-cffi's ``PasswordHasher``); a hash made with older parameters is
re-made at the next successful log-in. A name that does not exist is verified against a dummy hash, so that a
refusal takes about as long whether or not the name exists. After ``LOCK_AFTER`` wrong passwords in a row a name is
locked for a while that doubles with every further failure (capped), which turns an online guessing attack into a
very slow one without locking anybody out for long.

A session token is 32 random bytes given to the browser once; the server keeps only its SHA-256, so a copy of the
database does not let anyone log in. Each session has its own CSRF token for the forms.

Every log-in, log-out, refused log-in and change to a person is written to ``audit_log`` (who, when, what); the
trace queries and commands of the next issue are written there through ``Accounts.audit``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast, get_args

from ..errors import ProvinceError

if TYPE_CHECKING:
    import psycopg
    from argon2 import PasswordHasher

    from .db import Database

    _Connection = psycopg.Connection[tuple[object, ...]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name          text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'tracer')),
    password_hash text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    failed_logins integer NOT NULL DEFAULT 0,
    locked_until  timestamptz
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 bytea PRIMARY KEY,
    user_name    text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    remote text
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_actor_at ON audit_log (actor, at);
"""

Role = Literal["viewer", "operator", "tracer"]
ROLES: tuple[Role, ...] = get_args(Role)
Refusal = Literal["unknown_name", "wrong_password", "locked", "disabled"]

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
PASSWORD_MIN, PASSWORD_MAX = 10, 1024  # the maximum keeps a hashing request from being a denial of service
LOCK_AFTER = 5  # wrong passwords in a row before a name is locked
LOCK_FIRST_S, LOCK_MAX_S = 30.0, 900.0  # the first lock; each further failure doubles it, up to the cap
UNKNOWN_ACTOR = "?"  # actor of a refused log-in with a name nobody has (the name itself is not kept: see audit)


@dataclass(frozen=True, slots=True)
class User:
    """A person who may log in."""

    name: str
    role: Role
    disabled: bool
    created_at: dt.datetime
    locked_until: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: whose it is (as the users table says now), its CSRF token, when it ends."""

    user: User
    csrf_token: str
    created_at: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """The outcome of a log-in: the user, or why not."""

    user: User | None
    refusal: Refusal | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    detail: dict[str, object]
    remote: str | None


def token_digest(token: str) -> bytes:
    """What the server keeps of a session token."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise ProvinceError(f"unknown role {role!r}: one of {', '.join(ROLES)}")


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ProvinceError(f"user name {name!r}: 1 to 64 of a-z 0-9 . _ - (lower case), starting with a letter or "
                            "digit")
    return name


def check_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ProvinceError(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters (this one has "
                            f"{len(password)})")
    return password


_USER_COLUMNS = "name, role, disabled, created_at, locked_until"


def _user(row: tuple[object, ...]) -> User:
    name, role, disabled, created_at, locked_until = row
    return User(str(name), cast(Role, role), bool(disabled), cast(dt.datetime, created_at),
                cast("dt.datetime | None", locked_until))


class Accounts:
    """The users, sessions and audit log tables, over the province's database.

    ``hasher`` defaults to argon2-cffi's recommended parameters; ``clock`` (epoch seconds) is what sessions and
    locks are timed by."""

    def __init__(self, database: Database, *, session_max_age_s: float = 8 * 3600,
                 hasher: PasswordHasher | None = None, clock: Callable[[], float] = time.time) -> None:
        from argon2 import PasswordHasher

        self._database = database
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._clock = clock
        self.session_max_age_s = session_max_age_s
        self._dummy_hash: str | None = None

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    # --- people -------------------------------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str, *, actor: str, remote: str | None = None) -> User:
        """A new person; ProvinceError if the name is taken."""
        check_name(name)
        role = check_role(role)
        password_hash = self._hasher.hash(check_password(password))
        with self._database.connection() as connection:
            row = connection.execute(
                f"INSERT INTO users (name, role, password_hash, created_at) VALUES (%s, %s, %s, %s) "
                f"ON CONFLICT (name) DO NOTHING RETURNING {_USER_COLUMNS}",
                (name, role, password_hash, self._now())).fetchone()
            if row is None:
                raise ProvinceError(f"user {name!r} exists already")
            self._audit(connection, actor, "user.add", {"user": name, "role": role}, remote)
        return _user(row)

    def set_password(self, name: str, password: str, *, actor: str, remote: str | None = None) -> None:
        """A new password; the person's sessions end (a changed password is often a suspected leak)."""
        password_hash = self._hasher.hash(check_password(password))
        self._change(name, "password_hash = %s, failed_logins = 0, locked_until = NULL", (password_hash,),
                     actor, "user.passwd", {"user": name}, remote, end_sessions=True)

    def set_role(self, name: str, role: str, *, actor: str, remote: str | None = None) -> None:
        """A new role, in force at the person's next request (sessions read the role from the users table)."""
        role = check_role(role)
        self._change(name, "role = %s", (role,), actor, "user.role", {"user": name, "role": role}, remote)

    def disable(self, name: str, *, actor: str, remote: str | None = None) -> None:
        """The person can no longer log in; their sessions end. (Kept, not deleted: the audit log names them.)"""
        self._change(name, "disabled = true", (), actor, "user.disable", {"user": name}, remote, end_sessions=True)

    def _change(self, name: str, assignments: str, values: tuple[object, ...], actor: str, action: str,
                detail: dict[str, object], remote: str | None, *, end_sessions: bool = False) -> None:
        with self._database.connection() as connection:
            row = connection.execute(f"UPDATE users SET {assignments} WHERE name = %s RETURNING name",
                                     (*values, name)).fetchone()
            if row is None:
                raise ProvinceError(f"no user {name!r}")
            if end_sessions:
                connection.execute("DELETE FROM sessions WHERE user_name = %s", (name,))
            self._audit(connection, actor, action, detail, remote)

    def list_users(self) -> list[User]:
        with self._database.connection() as connection:
            rows = connection.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name").fetchall()
        return [_user(row) for row in rows]

    def user(self, name: str) -> User | None:
        with self._database.connection() as connection:
            row = connection.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name = %s", (name,)).fetchone()
        return None if row is None else _user(row)

    # --- log-in -------------------------------------------------------------------------------------------------

    def authenticate(self, name: str, password: str) -> User | None:
        """The user whose name and password these are, or None."""
        return self.attempt(name, password).user

    def attempt(self, name: str, password: str) -> LoginAttempt:
        """Check a log-in; counts a wrong password towards the lock, clears the count on success."""
        from argon2.exceptions import InvalidHashError, VerificationError

        with self._database.connection() as connection:
            row = connection.execute(
                f"SELECT {_USER_COLUMNS}, password_hash FROM users WHERE name = %s FOR UPDATE",
                (name,)).fetchone()
            password = password[:PASSWORD_MAX + 1]  # longer cannot match (check_password), and costs no more
            if row is None:
                self._verify_dummy(password)
                return LoginAttempt(None, "unknown_name")
            user, password_hash = _user(row[:5]), str(row[5])
            now = self._now()
            if user.disabled or (user.locked_until is not None and user.locked_until > now):
                self._verify_dummy(password)
                return LoginAttempt(None, "disabled" if user.disabled else "locked")
            try:
                self._hasher.verify(password_hash, password)
            except (VerificationError, InvalidHashError):
                self._count_failure(connection, name, now)
                return LoginAttempt(None, "wrong_password")
            if self._hasher.check_needs_rehash(password_hash):
                connection.execute("UPDATE users SET password_hash = %s WHERE name = %s",
                                   (self._hasher.hash(password), name))
            connection.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE name = %s", (name,))
        return LoginAttempt(User(user.name, user.role, user.disabled, user.created_at), None)

    def _verify_dummy(self, password: str) -> None:
        from argon2.exceptions import VerificationError

        if self._dummy_hash is None:  # made once, with the same parameters, so a refusal costs as much as a real one
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        with contextlib.suppress(VerificationError):
            self._hasher.verify(self._dummy_hash, password)

    def _count_failure(self, connection: _Connection, name: str, now: dt.datetime) -> None:
        row = connection.execute("UPDATE users SET failed_logins = failed_logins + 1 WHERE name = %s "
                                 "RETURNING failed_logins", (name,)).fetchone()
        failures = int(cast(int, row[0])) if row is not None else 0
        if failures >= LOCK_AFTER:
            lock_s = min(LOCK_MAX_S, LOCK_FIRST_S * 2 ** min(failures - LOCK_AFTER, 32))
            connection.execute("UPDATE users SET locked_until = %s WHERE name = %s",
                               (now + dt.timedelta(seconds=lock_s), name))

    # --- sessions -----------------------------------------------------------------------------------------------

    def start_session(self, user: User) -> tuple[str, str]:
        """A new session for a user who has just logged in: (token for the cookie, CSRF token for the forms)."""
        token, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self._now()
        with self._database.connection() as connection:
            connection.execute("DELETE FROM sessions WHERE expires_at <= %s", (now,))  # keep the table small
            connection.execute(
                "INSERT INTO sessions (token_sha256, user_name, csrf_token, created_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (token_digest(token), user.name, csrf_token, now, now + dt.timedelta(seconds=self.session_max_age_s)))
        return token, csrf_token

    def session(self, token: str) -> Session | None:
        """The live session of this token: not expired, its user not disabled; else None."""
        if not token or len(token) > 256:
            return None
        with self._database.connection() as connection:
            row = connection.execute(
                f"SELECT {', '.join('u.' + c for c in _USER_COLUMNS.split(', '))}, s.csrf_token, s.created_at, "
                "s.expires_at FROM sessions s JOIN users u ON u.name = s.user_name "
                "WHERE s.token_sha256 = %s AND s.expires_at > %s AND NOT u.disabled",
                (token_digest(token), self._now())).fetchone()
        if row is None:
            return None
        return Session(_user(row[:5]), str(row[5]), cast(dt.datetime, row[6]), cast(dt.datetime, row[7]))

    def end_session(self, token: str) -> bool:
        """Log out: whether there was such a session."""
        with self._database.connection() as connection:
            row = connection.execute("DELETE FROM sessions WHERE token_sha256 = %s RETURNING user_name",
                                     (token_digest(token),)).fetchone()
        return row is not None

    # --- audit log ----------------------------------------------------------------------------------------------

    def audit(self, actor: str, action: str, detail: dict[str, object], remote: str | None = None) -> None:
        """Write one line of the audit log: who (a user name, ``cli:<unix user>``, or ``?``), what, from where.

        ``detail`` must not hold a password; a trace query's detail names the pseudonymous ids it asked for."""
        with self._database.connection() as connection:
            self._audit(connection, actor, action, detail, remote)

    def _audit(self, connection: _Connection, actor: str, action: str, detail: dict[str, object],
               remote: str | None) -> None:
        from psycopg.types.json import Jsonb

        connection.execute("INSERT INTO audit_log (at, actor, action, detail, remote) VALUES (%s, %s, %s, %s, %s)",
                           (self._now(), actor, action, Jsonb(detail), remote))

    def audit_entries(self, limit: int = 200, actor: str | None = None) -> list[AuditEntry]:
        """The newest lines first, at most ``limit``, of one actor when given."""
        where, values = ("WHERE actor = %s", (actor,)) if actor is not None else ("", ())
        with self._database.connection() as connection:
            rows = connection.execute(
                f"SELECT id, at, actor, action, detail, remote FROM audit_log {where} ORDER BY at DESC, id DESC "
                "LIMIT %s", (*values, max(0, limit))).fetchall()
        return [AuditEntry(int(cast(int, r[0])), cast(dt.datetime, r[1]), str(r[2]), str(r[3]),
                           cast("dict[str, object]", r[4]), cast("str | None", r[5])) for r in rows]
