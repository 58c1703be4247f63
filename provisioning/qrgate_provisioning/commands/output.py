"""What the subcommands share on the way out: files written whole, messages on stderr, timestamps."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

from . import EXIT_FAILED, EXIT_USAGE, PROG


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half of one.

    For the issuer's own outputs (pass CSVs with personal data at 0600, card PDFs): ``mode`` is
    the new file's, as ``os.open`` applies it (under the umask).
    """
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def write_list_atomically(path: Path, data: bytes) -> None:
    """Write a signed list to ``path`` so that a reader (a gate polling its drop directory) never sees half of it.

    The temporary file has a unique name (``mkstemp``, mode 0600), so two deliveries into one drop
    directory cannot write into each other's, and it is removed when the write fails.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fail(exc: Exception) -> int:
    """Report a failed command (an unreadable file, a bad key) and return its exit code."""
    print(f"{PROG}: {exc}", file=sys.stderr)
    return EXIT_FAILED


def usage(message: str) -> int:
    """Report options that do not go together (argparse cannot say so) and return the usage exit code."""
    print(f"{PROG}: usage error: {message}", file=sys.stderr)
    return EXIT_USAGE


def iso(epoch: int) -> str:
    """``epoch`` as ISO 8601 UTC to the second, as the commands report expiries."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")
