"""The nonces of the commands this gate has accepted, kept until each command expires, across restarts.

A replay must be refused even right after a restart (a restart is itself a command), so the nonces are on disk:
one small SQLite file beside the outbox, fsync'd per command (commands are rare; a check-in never waits for it).
A command lives at most wire.MAX_COMMAND_LIFETIME_S, so the table holds at most the commands of ten minutes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import QrgateError


class NonceStoreError(QrgateError):
    """The nonce file cannot be opened or written: commands are refused (``failed``) until it can."""


class NonceStore:
    """Nonces seen, each with the expiry of its command."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL)")
        except sqlite3.Error as exc:
            raise NonceStoreError(f"command nonces {self.path}: cannot open: {exc}") from exc

    def claim(self, nonce: str, expires_at: float, now: float) -> bool:
        """Record ``nonce``; False if it was already there (a replay). Forgets the expired ones first."""
        try:
            self._db.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
            cursor = self._db.execute("INSERT OR IGNORE INTO nonces (nonce, expires_at) VALUES (?, ?)",
                                      (nonce, expires_at))
        except sqlite3.Error as exc:
            raise NonceStoreError(f"command nonces {self.path}: cannot write: {exc}") from exc
        return cursor.rowcount == 1

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM nonces").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> NonceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
