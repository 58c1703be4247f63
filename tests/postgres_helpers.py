"""A throw-away PostgreSQL server for the tests: one per test session on a Unix socket in a temp dir, and a fresh
database per test that needs one (``CREATE DATABASE`` is fast; a server start is not). The server itself is
``qrgate_tools.postgres`` (the province's benchmark runs one too); here a server that cannot run skips the test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from qrgate_tools.postgres import PostgresServer, PostgresUnavailable, create_database

_database_numbers = itertools.count(1)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a private server; yields the DSN of its ``postgres`` database (skips if none can run here)."""
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg")
    try:
        server = PostgresServer(fsync=False, max_connections=200)
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    with server as dsn:
        yield dsn


def fresh_database(server_dsn: str) -> str:
    """A new empty database on the server; its DSN."""
    return create_database(server_dsn, f"test_{os.getpid()}_{next(_database_numbers)}")
