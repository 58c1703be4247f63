"""The device CA's files: its key read with its permissions checked, and files written new or atomically.

Opening or creating the CA fails with ``ca_exists`` (create never overwrites), ``missing``,
``registry_missing`` (never silently a new, empty registry), ``key_permissions`` (the key is readable by
group or others, or not a regular file), ``dir_permissions``, ``bad_key``, ``bad_certificate``, ``not_a_ca``
or ``key_mismatch``; a registry or audit log that cannot be written, with ``registry`` or ``audit_log``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .ca_policy import DeviceCAError

# ---- files ----------------------------------------------------------------------------------------


def read_ca_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise DeviceCAError("missing", f"{path}: the CA key is missing") from exc
    except OSError as exc:  # ELOOP: a symbolic link
        raise DeviceCAError("key_permissions", f"{path}: cannot open the CA key as a plain file: "
                            f"{exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DeviceCAError("key_permissions", f"{path}: the CA key is not a regular file")
        if info.st_mode & 0o077:
            raise DeviceCAError("key_permissions", f"{path} is mode {stat.S_IMODE(info.st_mode):04o}: group or "
                                f"others can use the CA key; chmod 600 {path} (and ask who copied it)")
        with os.fdopen(os.dup(fd), "rb") as file:
            pem = file.read()
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:  # the message would not hold key bytes, but none is needed
        raise DeviceCAError("bad_key", f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DeviceCAError("bad_key", f"{path}: the CA key is not an EC key")
    return key


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the first byte (O_EXCL: FileExistsError if it is there) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new one, never a part."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_new(scratch, data, mode)
        os.replace(scratch, path)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    written = 0
    while written < len(data):
        written += os.write(fd, data[written:])


