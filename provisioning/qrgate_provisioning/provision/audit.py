"""The device CA's audit log: ``audit.jsonl``, one JSON object per line, appended and fsync'd, never rewritten.

Every issuance, revocation and CRL, and every *refused* request with its reason (a refused mint attempt
is exactly what an auditor wants to see), becomes one line::

    {"time": "2025-01-31T08:00:00Z", "action": "provision", "outcome": "issued", "gate_id": "gate-a",
     "serial": "5f3c...", "fingerprint": "9a0b...", "key_fingerprint": "c4d1...", "not_after": "...",
     "technician": "lan", "software_version": "qrgate 0.1.0", "reason": null}

Lines hold identifiers, fingerprints and times only: no key, no CSR, no certificate body. ``append``
refuses a line that looks like PEM, so a future field cannot leak one by mistake.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from qrgate.errors import QrgateError

AUDIT_FILE_NAME = "audit.jsonl"
_MAX_FIELD = 256  # a typo'd or hostile gate id is logged, truncated: the log must not be a way to fill the disk


class AuditLogError(QrgateError):
    """The audit log cannot be written (so nothing is issued) or read."""


class AuditLog:
    """Append-only JSON lines at ``path`` (mode 0600, created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, entry: Mapping[str, object]) -> None:
        """Write ``entry`` as one line and fsync it before returning; AuditLogError if that fails."""
        line = json.dumps({name: _clip(value) for name, value in entry.items()}, ensure_ascii=False,
                          sort_keys=True, separators=(",", ":")) + "\n"
        if "-----BEGIN" in line:
            raise AuditLogError("refusing to write PEM material into the audit log")
        data = line.encode("utf-8")
        try:
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                # Two processes on one CA directory (two technicians' terminals) must not interleave lines.
                fcntl.flock(fd, fcntl.LOCK_EX)
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)  # closing releases the lock
            if created:
                _fsync_directory(self.path.parent)
        except OSError as exc:
            raise AuditLogError(f"{self.path}: cannot append to the audit log: {exc.strerror or exc}") from exc

    def entries(self) -> Iterator[dict[str, object]]:
        """Every line as a dict, oldest first (an empty iterator before the first line)."""
        try:
            with open(self.path, encoding="utf-8") as file:
                for number, line in enumerate(file, start=1):
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise AuditLogError(f"{self.path}:{number}: not a JSON line: {exc}") from exc
                    if not isinstance(entry, dict):
                        raise AuditLogError(f"{self.path}:{number}: not a JSON object")
                    yield entry
        except FileNotFoundError:
            return


def _clip(value: object) -> object:
    if isinstance(value, str) and len(value) > _MAX_FIELD:
        return value[:_MAX_FIELD] + "..."
    return value


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable too (a power cut must not lose the whole log)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
