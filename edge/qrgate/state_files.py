"""The gate's state directory for signed lists: files replaced atomically, damaged ones set aside.

``TrustUpdates`` keeps every accepted list here (docs/trust.md, "State on the gate"). A write is a
temporary file in the same directory, fsync, rename, fsync of the directory, so a power cut leaves the
old file or the new one, never half of one; a write cut short leaves a ``.*.tmp`` file that the next
start removes. Reading back at start-up tries the current file, then the last good one, and moves a
file that cannot be used aside (``<name>.damaged``) with its reason in the log.

It also reads and writes ``signers.cbor``, the list keys pinned now and those rotated out.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import cbor2

from .errors import TrustStoreError
from .passes.codec import decode_cbor
from .passes.rejection import Rejected
from .passes.signed_list import ListRefused, SignerKeys

log = logging.getLogger("qrgate.trust_updates")  # the same logger as before this moved out: operators grep it

T = TypeVar("T")

SIGNERS_FILE = "signers.cbor"
_MAX_SIGNERS_FILE_BYTES = 8 * 1024


class StateDirectory:
    """One state directory (mode 0750); ``write`` replaces a file, ``load`` reads current or last good."""

    def __init__(self, path: str | Path) -> None:
        """Create the directory if needed and remove writes a power cut left; TrustStoreError if unusable."""
        self.path = Path(path)
        try:
            self.path.mkdir(mode=0o750, parents=True, exist_ok=True)
            for leftover in self.path.glob(".*.tmp"):
                leftover.unlink()
        except OSError as exc:
            raise TrustStoreError(f"{self.path}: cannot use the trust state directory: {exc.strerror or exc}") from exc

    def write(self, name: str, chunks: Iterable[bytes | memoryview], keep_previous_as: str | None = None) -> None:
        """Replace ``name`` atomically; with ``keep_previous_as`` the file it replaces is kept under that name."""
        target = self.path / name
        fd, temporary = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if keep_previous_as is not None and target.exists():
                # A power cut between the two renames leaves only the previous list, as last good: start-up uses it.
                os.replace(target, self.path / keep_previous_as)
            os.replace(temporary, target)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
        directory_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory_fd)  # the renames themselves must survive a power cut
        finally:
            os.close(directory_fd)

    def read(self, name: str, limit: int) -> bytes:
        """The file's bytes; FileNotFoundError if absent, ValueError if larger than ``limit``."""
        return read_bounded(self.path / name, limit)

    def load(self, names: Iterable[str], limit: int, read: Callable[[bytes], T]) -> tuple[Path, T] | None:
        """The first of ``names`` that exists and that ``read`` accepts, with its path; None if none does.

        ``read`` raises ValueError or ListRefused for a file it cannot use: that file is set aside and
        the next name is tried (the current file first, then the last good one).
        """
        for name in names:
            path = self.path / name
            try:
                return path, read(read_bounded(path, limit))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                self.set_aside(path, str(exc))
            except ListRefused as refused:
                self.set_aside(path, f"{refused.outcome}: {refused.detail}")
        return None

    def set_aside(self, path: Path, reason: str) -> None:
        """Log a damaged state file and move it aside, so the next accepted list does not make it "last good"."""
        damaged = path.with_name(path.name + ".damaged")
        log.error("%s is unusable (%s); moved to %s, trying the last good one", path, reason, damaged.name)
        with suppress(OSError):
            os.replace(path, damaged)


def read_bounded(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def load_signers(state: StateDirectory, provisioned: SignerKeys) -> tuple[SignerKeys, SignerKeys, bool]:
    """The pinned and retired list keys, and whether they came from the file: from ``signers.cbor`` once a
    rotation wrote it, else as provisioned (also when the file is damaged: the log says so)."""
    path = state.path / SIGNERS_FILE
    try:
        data = state.read(SIGNERS_FILE, _MAX_SIGNERS_FILE_BYTES)
    except FileNotFoundError:
        return provisioned, SignerKeys(), False
    except (OSError, ValueError) as exc:
        log.error("%s: unreadable (%s); using the provisioned trust-list signer keys", path, exc)
        return provisioned, SignerKeys(), False
    try:
        saved = decode_cbor(data, "signers")
        if not isinstance(saved, Mapping):
            raise TrustStoreError("not a map")
        pinned = SignerKeys.from_spki_list(saved.get("pinned"), f"{path}: pinned")
        retired_items = saved.get("retired") or []
        retired = SignerKeys.from_spki_list(retired_items, f"{path}: retired") if retired_items else SignerKeys()
    except (Rejected, TrustStoreError) as exc:
        log.error("%s: damaged (%s); using the provisioned trust-list signer keys", path, exc)
        return provisioned, SignerKeys(), False
    return pinned, retired, True


def encode_signers(pinned: SignerKeys, retired: SignerKeys) -> bytes:
    return cbor2.dumps({"pinned": pinned.spki_list(), "retired": retired.spki_list()})
