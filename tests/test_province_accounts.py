"""The dashboard's people (province.accounts) on a real PostgreSQL: argon2 hashes and their upgrade, sessions that
expire and of which only a digest is kept, the lock after repeated wrong passwords, and the audit log."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher

from qrgate_provisioning.errors import ProvinceError
from qrgate_provisioning.province import accounts as accounts_module
from qrgate_provisioning.province.accounts import LOCK_AFTER, LOCK_FIRST_S, Accounts, token_digest
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.settings import DatabaseSettings

# cheap parameters keep the tests fast; the service uses argon2-cffi's defaults
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "correct horse battery"


class Clock:
    """Epoch seconds that the test moves on."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="database")
def database_fixture(province_dsn: str) -> Iterator[Database]:
    with Database(DatabaseSettings(dsn=province_dsn), max_connections=2) as database:
        with database.connection() as connection:
            connection.execute(accounts_module.SCHEMA)
        yield database


def make_accounts(database: Database, clock: Clock, **kwargs: object) -> Accounts:
    return Accounts(database, session_max_age_s=3600, hasher=FAST, clock=clock, **kwargs)  # type: ignore[arg-type]


def stored_hash(database: Database, name: str) -> str:
    with database.connection() as connection:
        row = connection.execute("SELECT password_hash FROM users WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def test_passwords_are_argon2_hashes_and_only_the_right_one_logs_in(database: Database):
    accounts = make_accounts(database, Clock())
    user = accounts.add_user("lan", "viewer", PASSWORD, actor="cli:root")
    assert (user.name, user.role, user.disabled) == ("lan", "viewer", False)
    password_hash = stored_hash(database, "lan")
    assert password_hash.startswith("$argon2id$") and PASSWORD not in password_hash

    assert accounts.authenticate("lan", PASSWORD) == accounts.user("lan")
    assert accounts.authenticate("lan", PASSWORD + "x") is None
    assert accounts.attempt("lan", "wrong one!").refusal == "wrong_password"
    assert accounts.attempt("nobody", PASSWORD).refusal == "unknown_name"
    assert accounts.attempt("lan", "x" * 5000).refusal == "wrong_password"


def test_a_hash_with_old_parameters_is_remade_at_the_next_log_in(database: Database):
    clock = Clock()
    make_accounts(database, clock).add_user("minh", "operator", PASSWORD, actor="cli:root")
    old = stored_hash(database, "minh")
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    upgraded = Accounts(database, hasher=stronger, clock=clock)
    assert stronger.check_needs_rehash(old)

    assert upgraded.authenticate("minh", "not the password") is None
    assert stored_hash(database, "minh") == old  # a wrong password changes nothing
    assert upgraded.authenticate("minh", PASSWORD) is not None
    new = stored_hash(database, "minh")
    assert new != old and not stronger.check_needs_rehash(new)
    assert upgraded.authenticate("minh", PASSWORD) is not None


def test_sessions_keep_only_a_digest_and_expire(database: Database):
    clock = Clock()
    accounts = make_accounts(database, clock)
    user = accounts.add_user("hoa", "tracer", PASSWORD, actor="cli:root")
    token, csrf = accounts.start_session(user)
    assert len(token) >= 40 and len(csrf) >= 40 and token != csrf
    with database.connection() as connection:
        rows = connection.execute("SELECT token_sha256 FROM sessions").fetchall()
    assert [bytes(row[0]) for row in rows] == [token_digest(token)]

    session = accounts.session(token)
    assert session is not None and session.user.name == "hoa" and session.csrf_token == csrf
    assert accounts.session(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert accounts.session("") is None

    clock.now += 3599
    assert accounts.session(token) is not None
    clock.now += 2
    assert accounts.session(token) is None  # expired: refused, and swept at the next log-in
    accounts.start_session(user)
    with database.connection() as connection:
        assert connection.execute("SELECT count(*) FROM sessions").fetchone() == (1,)


def test_logout_role_change_and_disable_act_on_live_sessions(database: Database):
    accounts = make_accounts(database, Clock())
    user = accounts.add_user("tuan", "viewer", PASSWORD, actor="cli:root")
    first, _ = accounts.start_session(user)
    second, _ = accounts.start_session(user)
    assert accounts.end_session(first) and not accounts.end_session(first)
    assert accounts.session(first) is None

    accounts.set_role("tuan", "operator", actor="cli:root")
    session = accounts.session(second)
    assert session is not None and session.user.role == "operator"  # in force at once

    accounts.set_password("tuan", "another long password", actor="cli:root")
    assert accounts.session(second) is None  # a new password ends the sessions
    assert accounts.authenticate("tuan", PASSWORD) is None
    user_again = accounts.authenticate("tuan", "another long password")
    assert user_again is not None
    third, _ = accounts.start_session(user_again)
    accounts.disable("tuan", actor="cli:root")
    assert accounts.session(third) is None
    assert accounts.attempt("tuan", "another long password").refusal == "disabled"


def test_repeated_wrong_passwords_lock_the_name_for_a_doubling_while(database: Database):
    clock = Clock()
    accounts = make_accounts(database, clock)
    accounts.add_user("an", "viewer", PASSWORD, actor="cli:root")
    for _ in range(LOCK_AFTER - 1):
        assert accounts.attempt("an", "guess guess").refusal == "wrong_password"
    assert accounts.authenticate("an", PASSWORD) is not None  # success clears the count
    for _ in range(LOCK_AFTER):
        assert accounts.attempt("an", "guess guess").refusal == "wrong_password"
    assert accounts.attempt("an", PASSWORD).refusal == "locked"  # even the right password, while locked
    clock.now += LOCK_FIRST_S + 1
    assert accounts.attempt("an", "guess guess").refusal == "wrong_password"  # one more: locked twice as long
    clock.now += LOCK_FIRST_S + 1
    assert accounts.attempt("an", PASSWORD).refusal == "locked"
    clock.now += LOCK_FIRST_S
    assert accounts.authenticate("an", PASSWORD) is not None
    assert accounts.user("an").locked_until is None  # type: ignore[union-attr]


def test_changes_to_people_are_audited_newest_first(database: Database):
    accounts = make_accounts(database, Clock())
    accounts.add_user("linh", "viewer", PASSWORD, actor="cli:root", remote="tty")
    accounts.set_role("linh", "tracer", actor="cli:root")
    accounts.disable("linh", actor="cli:admin")
    accounts.audit("linh", "trace.query", {"subject_id": "ab12", "days": 14}, remote="10.0.0.7")

    entries = accounts.audit_entries()
    assert [(e.actor, e.action, e.detail) for e in entries] == [
        ("linh", "trace.query", {"subject_id": "ab12", "days": 14}),
        ("cli:admin", "user.disable", {"user": "linh"}),
        ("cli:root", "user.role", {"user": "linh", "role": "tracer"}),
        ("cli:root", "user.add", {"user": "linh", "role": "viewer"}),
    ]
    assert entries[0].remote == "10.0.0.7" and entries[-1].remote == "tty"
    assert [e.action for e in accounts.audit_entries(actor="cli:root")] == ["user.role", "user.add"]
    assert len(accounts.audit_entries(limit=1)) == 1
    assert all(PASSWORD not in str(e.detail) for e in entries)


def test_bad_names_roles_passwords_and_duplicates_are_refused_with_the_reason(database: Database):
    accounts = make_accounts(database, Clock())
    accounts.add_user("mai", "viewer", PASSWORD, actor="cli:root")
    with pytest.raises(ProvinceError, match="exists already"):
        accounts.add_user("mai", "viewer", PASSWORD, actor="cli:root")
    with pytest.raises(ProvinceError, match="user name 'Mai Anh'"):
        accounts.add_user("Mai Anh", "viewer", PASSWORD, actor="cli:root")
    with pytest.raises(ProvinceError, match="unknown role 'admin'"):
        accounts.add_user("quang", "admin", PASSWORD, actor="cli:root")
    with pytest.raises(ProvinceError, match="10 to 1024 characters"):
        accounts.add_user("quang", "viewer", "short", actor="cli:root")
    with pytest.raises(ProvinceError, match="no user 'ghost'"):
        accounts.set_role("ghost", "viewer", actor="cli:root")
    assert [u.name for u in accounts.list_users()] == ["mai"]
    assert len(accounts.audit_entries()) == 1  # refused changes leave no line
