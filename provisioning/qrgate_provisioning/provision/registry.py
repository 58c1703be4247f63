"""The device CA's registry of issued certificates: ``registry.sqlite`` in the CA directory.

Why SQLite (the standard library's sqlite3) rather than a JSON file written atomically: the rules that
keep a second identity from being minted are in the schema, not only in Python. A partial unique index
allows one active certificate per gate id, a unique key fingerprint forbids certifying one public key
twice, and ``BEGIN IMMEDIATE`` serialises two signers on one CA directory (two technicians' terminals),
so a replacement's "revoke the old, record the new" is one transaction that happens entirely or not at
all. A JSON file would need its own lock file and a read-modify-write that a second process could race.
The price is a binary file: ``qrgate_provisioning.provision.device_ca.DeviceCA.records`` and the audit
log are the readable views.

Serial numbers are stored as hex text (they are 159-bit random numbers; SQLite integers hold 64 bits),
times as ISO 8601 UTC text.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from qrgate.errors import QrgateError

REGISTRY_FILE_NAME = "registry.sqlite"
SCHEMA_VERSION = 1

Action = Literal["provision", "renew", "replace"]
Status = Literal["active", "revoked"]

_SCHEMA = """
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,                  -- hex, lower case
    gate_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,         -- SHA-256 of the certificate's DER, hex
    key_fingerprint TEXT NOT NULL UNIQUE,     -- SHA-256 of the SubjectPublicKeyInfo: no key is certified twice
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('provision', 'renew', 'replace')),
    technician TEXT NOT NULL,
    software_version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    revoked_at TEXT,
    revocation_reason TEXT,
    cert_pem TEXT NOT NULL,                   -- the public certificate (never a key)
    CHECK ((status = 'active') = (revoked_at IS NULL))
);
-- Deny by default, in the schema itself: at most one active certificate per gate id.
CREATE UNIQUE INDEX one_active_certificate_per_gate ON certificates (gate_id) WHERE status = 'active';
CREATE TABLE crl (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    number INTEGER NOT NULL,                  -- the last CRL's cRLNumber
    last_update TEXT NOT NULL                 -- and its thisUpdate: the next one is strictly later
);
"""


class RegistryError(QrgateError):
    """The registry file is missing, not a registry, or of another schema version."""


@dataclass(frozen=True, slots=True)
class IssuedRecord:
    """One certificate the CA issued, and whether it is still active."""

    gate_id: str
    serial: int
    fingerprint: str  # SHA-256 of the certificate (DER), lower-case hex
    key_fingerprint: str  # SHA-256 of its SubjectPublicKeyInfo (DER), lower-case hex
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    action: Action  # what issued it
    technician: str
    software_version: str
    status: Status
    revoked_at: datetime | None
    revocation_reason: str | None  # e.g. "superseded", "key_compromise", "cessation_of_operation"
    cert_pem: bytes

    @property
    def active(self) -> bool:
        """Not revoked (it may still have expired: see ``expired``)."""
        return self.status == "active"

    def expired(self, at: datetime) -> bool:
        return at >= self.not_after


@dataclass(frozen=True, slots=True)
class CrlState:
    number: int
    last_update: datetime


class Registry:
    """The SQLite file; every write runs in ``transaction()``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: Path) -> Registry:
        """A new, empty registry at ``path`` (mode 0600); FileExistsError if one is there."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)  # sqlite keeps the mode
        os.close(fd)
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.executescript(f"BEGIN;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;")
        finally:
            connection.close()
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> Registry:
        if not Path(path).is_file():
            raise RegistryError(f"{path}: no registry")
        registry = cls(path)
        with registry._connect() as connection:
            try:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                connection.execute("SELECT count(*) FROM certificates").fetchone()
            except sqlite3.DatabaseError as exc:
                raise RegistryError(f"{path}: not a device CA registry: {exc}") from exc
        if version != SCHEMA_VERSION:
            raise RegistryError(f"{path}: registry schema version {version}, this qrgate reads {SCHEMA_VERSION}")
        return registry

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: no implicit transactions; BEGIN IMMEDIATE below takes the write lock up front.
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            connection.execute("PRAGMA synchronous = FULL")
            yield connection
        finally:
            connection.close()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction: committed if the block returns, rolled back if it raises."""
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def active(self, gate_id: str) -> IssuedRecord | None:
        with self._connect() as connection:
            return Transaction(connection).active(gate_id)

    def records(self, gate_id: str | None = None) -> list[IssuedRecord]:
        with self._connect() as connection:
            return Transaction(connection).records(gate_id)


class Transaction:
    """Reads and writes within one connection (and, from ``Registry.transaction``, one transaction)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def active(self, gate_id: str) -> IssuedRecord | None:
        row = self._connection.execute(
            "SELECT * FROM certificates WHERE gate_id = ? AND status = 'active'", (gate_id,)
        ).fetchone()
        return None if row is None else _record(row)

    def records(self, gate_id: str | None = None) -> list[IssuedRecord]:
        query = "SELECT * FROM certificates"
        parameters: tuple[str, ...] = ()
        if gate_id is not None:
            query, parameters = query + " WHERE gate_id = ?", (gate_id,)
        rows = self._connection.execute(query + " ORDER BY issued_at, rowid", parameters).fetchall()
        return [_record(row) for row in rows]

    def by_key(self, key_fingerprint: str) -> IssuedRecord | None:
        row = self._connection.execute(
            "SELECT * FROM certificates WHERE key_fingerprint = ?", (key_fingerprint,)
        ).fetchone()
        return None if row is None else _record(row)

    def revoked(self) -> list[IssuedRecord]:
        rows = self._connection.execute(
            "SELECT * FROM certificates WHERE status = 'revoked' ORDER BY revoked_at, rowid"
        ).fetchall()
        return [_record(row) for row in rows]

    def insert(self, record: IssuedRecord) -> None:
        self._connection.execute(
            "INSERT INTO certificates (serial, gate_id, fingerprint, key_fingerprint, not_before, not_after, "
            "issued_at, action, technician, software_version, status, revoked_at, revocation_reason, cert_pem) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_hex(record.serial), record.gate_id, record.fingerprint, record.key_fingerprint,
             _iso(record.not_before), _iso(record.not_after), _iso(record.issued_at), record.action,
             record.technician, record.software_version, record.status,
             None if record.revoked_at is None else _iso(record.revoked_at), record.revocation_reason,
             record.cert_pem.decode("ascii")),
        )

    def revoke(self, serial: int, reason: str, at: datetime) -> None:
        cursor = self._connection.execute(
            "UPDATE certificates SET status = 'revoked', revoked_at = ?, revocation_reason = ? "
            "WHERE serial = ? AND status = 'active'",
            (_iso(at), reason, _hex(serial)),
        )
        if cursor.rowcount != 1:
            raise RegistryError(f"certificate {_hex(serial)} is not active")

    def crl_state(self) -> CrlState | None:
        row = self._connection.execute("SELECT number, last_update FROM crl WHERE id = 1").fetchone()
        return None if row is None else CrlState(int(row[0]), _time(row[1]))

    def set_crl_state(self, state: CrlState) -> None:
        self._connection.execute(
            "INSERT INTO crl (id, number, last_update) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET number = excluded.number, last_update = excluded.last_update",
            (state.number, _iso(state.last_update)),
        )


def _record(row: tuple[object, ...]) -> IssuedRecord:
    (serial, gate_id, fingerprint, key_fingerprint, not_before, not_after, issued_at, action, technician,
     software_version, status, revoked_at, reason, cert_pem) = row
    return IssuedRecord(
        gate_id=str(gate_id), serial=int(str(serial), 16), fingerprint=str(fingerprint),
        key_fingerprint=str(key_fingerprint), not_before=_time(not_before), not_after=_time(not_after),
        issued_at=_time(issued_at), action=_action(action), technician=str(technician),
        software_version=str(software_version), status="active" if status == "active" else "revoked",
        revoked_at=None if revoked_at is None else _time(revoked_at),
        revocation_reason=None if reason is None else str(reason), cert_pem=str(cert_pem).encode("ascii"),
    )


def _action(value: object) -> Action:
    if value == "provision":
        return "provision"
    if value == "renew":
        return "renew"
    if value == "replace":
        return "replace"
    raise RegistryError(f"unknown action {value!r} in the registry")


def _hex(serial: int) -> str:
    return format(serial, "x")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time(value: object) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
