"""Signed trust lists and revocation lists on the device: accept or refuse each offered one, keep it, swap it in.

Both delivery paths call ``TrustUpdates.offer``: the retained MQTT messages on the province topics
(``wire.TRUST_LIST_TOPIC``, ``wire.REVOCATION_TOPIC``; the uplink hands each payload to a worker thread) and
files dropped into a directory (``import_directory``, for provisioning and for sites without network).
A refused document changes nothing: the lists in force stay, and the answer names the reason.

The state directory (``/var/lib/qrgate/trust`` on a gate) holds, each file replaced atomically
(temporary file in the same directory, fsync, rename, fsync of the directory):

- ``trust-list.cose``: the trust list in force, exactly as received, re-verified at start-up;
  ``trust-list.last-good.cose``: the one before it, used when the current file is damaged;
- ``revocation.state`` and ``revocation.last-good.state``: the revocation index in force and the one
  before (``revocation.py``, "the device's state file");
- ``signers.cbor``: the list-signing keys pinned now and the ones rotated out (docs/trust.md).

When a signed trust list is in force it is the only source of issuer keys; the static anchors of the
configuration (``trust.paths``) are used only until the first list is accepted. Merging both would
make removing a key from the list useless: the kill switch must be able to remove any key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import cbor2

from .errors import TrustStoreError
from .passes.authority import TrustAuthority, TrustState
from .passes.codec import decode_cbor
from .passes.rejection import Rejected
from .passes.revocation import (
    EMPTY_INDEX,
    MAX_REVOCATION_BYTES,
    RevocationList,
    decode_state,
    encode_state,
    read_revocation_list,
)
from .passes.signed_list import (
    MAX_SIGNERS,
    ListOutcome,
    ListRefused,
    ListType,
    SignedList,
    SignerKeys,
    open_signed_list,
)
from .passes.trust import TrustStore
from .passes.trust_list import MAX_TRUST_LIST_BYTES, TrustList, read_trust_list

log = logging.getLogger(__name__)

# Province-wide topics: QoS 1, trust lists and revocation snapshots retained, written only by the province's issuer.

TRUST_LIST_FILE = "trust-list.cose"
TRUST_LIST_LAST_GOOD = "trust-list.last-good.cose"
REVOCATION_FILE = "revocation.state"
REVOCATION_LAST_GOOD = "revocation.last-good.state"
SIGNERS_FILE = "signers.cbor"
REFUSED_SUFFIX = ".refused"
_MAX_SIGNERS_FILE_BYTES = 8 * 1024
_MAX_REVOCATION_STATE_BYTES = MAX_REVOCATION_BYTES + 8 * 1024
_MAX_BY_TYPE = {ListType.TRUST_LIST: MAX_TRUST_LIST_BYTES, ListType.REVOCATION: MAX_REVOCATION_BYTES}


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The answer to one offered document."""

    outcome: ListOutcome
    list_type: ListType | None = None
    version: int | None = None
    detail: str | None = None  # why it was refused, for technicians; lists carry no personal data

    @property
    def accepted(self) -> bool:
        return self.outcome is ListOutcome.ACCEPTED


class TrustUpdates:
    """The signed lists of one gate: start-up from its state directory, then ``offer`` for every delivery.

    ``authority`` is what ``PassVerifier`` reads. ``offer`` may be called from any thread (offers are
    serialised); the verifier never waits for it.
    """

    def __init__(self, state_dir: str | Path, *, provisioned_signers: SignerKeys, static_store: TrustStore) -> None:
        """Load what the state directory holds, falling back file by file and saying so in the log.

        ``provisioned_signers`` are the list keys pinned at provisioning (``SignerKeys.from_pem_dir``);
        ``static_store`` the configuration's anchors, in force until a trust list is. Raises
        TrustStoreError only if the state directory cannot be created or listed.
        """
        self._dir = Path(state_dir)
        self._lock = threading.Lock()
        try:
            self._dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            for leftover in self._dir.glob(".*.tmp"):  # a write cut short by a power cut
                leftover.unlink()
        except OSError as exc:
            raise TrustStoreError(f"{self._dir}: cannot use the trust state directory: {exc.strerror or exc}") from exc
        self._pinned, self._retired, pins_saved = self._load_signers(provisioned_signers)
        self._trust_list = self._load_trust_list(self._pinned | self._retired)
        if self._trust_list is not None and not pins_saved:
            self._pinned = self._trust_list.signers  # the list verified against the provisioned keys: follow it
        self._revocation = self._load_revocation()
        list_, revocation = self._trust_list, self._revocation
        if list_ is None:
            log.warning("no signed trust list in force: verifying with the %d static trust anchors of trust.paths "
                        "until one is accepted", len(static_store))
        self.authority = TrustAuthority(TrustState(
            store=static_store if list_ is None else list_.store,
            revoked=EMPTY_INDEX if revocation is None else revocation.index,
            list_version=None if list_ is None else list_.version,
            list_issued_at=None if list_ is None else list_.issued_at,
            list_expires_at=None if list_ is None else list_.expires_at,
            revocation_version=None if revocation is None else revocation.version,
            revocation_issued_at=None if revocation is None else revocation.issued_at,
        ))

    @classmethod
    def open(cls, state_dir: str | Path, signers_dir: str | Path, static_paths: Iterable[str | Path]) -> "TrustUpdates":
        """From configuration values: the state directory, the directory of pinned PEM keys, ``trust.paths``."""
        return cls(state_dir, provisioned_signers=SignerKeys.from_pem_dir(signers_dir),
                   static_store=TrustStore.from_paths(static_paths))

    # --- what is in force -----------------------------------------------------------------------------------

    @property
    def pinned_signers(self) -> SignerKeys:
        return self._pinned

    @property
    def version(self) -> int | None:
        """Version of the trust list in force; None while the static anchors are."""
        return self.authority.state.list_version

    @property
    def issued_at(self) -> int | None:
        return self.authority.state.list_issued_at

    @property
    def revocation_version(self) -> int | None:
        return self.authority.state.revocation_version

    def age_s(self, now: float) -> float | None:
        return self.authority.state.list_age_s(now)

    def is_stale(self, now: float, max_age_s: float | None) -> bool:
        return self.authority.state.is_stale(now, max_age_s)

    def report(self, now: float, max_age_s: float | None) -> dict[str, int | float | bool | None]:
        """What the device says about its lists on its status topic (None: no signed list of that kind yet)."""
        state = self.authority.state
        age = state.list_age_s(now)
        return {
            "trust_list_version": state.list_version,
            "trust_list_age_s": None if age is None else round(age),
            "trust_stale": state.is_stale(now, max_age_s),
            "revocation_version": state.revocation_version,
        }

    # --- offers ------------------------------------------------------------------------------------------------

    def offer(self, document: bytes, source: str, now: float, expect: ListType | None = None) -> Acceptance:
        """Accept ``document`` (a signed trust or revocation list) or refuse it with a reason. Never raises.

        ``source`` names the delivery for the log ("mqtt:<topic>", "file:<path>"); ``expect`` is the
        list type the delivery path carries (None: either, as in a drop directory).
        """
        with self._lock:
            try:
                acceptance = self._offer(bytes(document), now, expect)
            except ListRefused as refused:
                acceptance = Acceptance(refused.outcome, expect, detail=refused.detail)
            except Exception as exc:  # noqa: BLE001 - this runs on the delivery thread: a fault here must not end updates
                log.exception("list from %s: unexpected error; the lists in force stay", source)
                acceptance = Acceptance(ListOutcome.MALFORMED, expect, detail=f"unexpected {type(exc).__name__}")
        if acceptance.outcome is ListOutcome.ACCEPTED:
            log.info("%s v%d from %s accepted%s", acceptance.list_type, acceptance.version, source,
                     f" ({acceptance.detail})" if acceptance.detail else "")
        elif acceptance.outcome is ListOutcome.UNCHANGED:
            log.debug("%s from %s: already in force", acceptance.list_type, source)
        else:
            what = "list" if acceptance.list_type is None else str(acceptance.list_type)
            if acceptance.version is not None:
                what += f" v{acceptance.version}"
            log.warning("%s from %s refused: %s (%s); the lists in force stay", what, source, acceptance.outcome, acceptance.detail)
        return acceptance

    def _offer(self, document: bytes, now: float, expect: ListType | None) -> Acceptance:
        digest = hashlib.sha256(document).digest()
        for list_type, in_force in ((ListType.TRUST_LIST, self._trust_list), (ListType.REVOCATION, self._revocation)):
            if in_force is not None and in_force.digest == digest and expect in (None, list_type):
                return Acceptance(ListOutcome.UNCHANGED, list_type, in_force.version)
        max_bytes = _MAX_BY_TYPE[expect] if expect is not None else max(_MAX_BY_TYPE.values())
        signed = open_signed_list(document, self._pinned, max_bytes)
        try:
            return self._accept(signed, document, now, expect)
        except ListRefused as refused:
            return Acceptance(refused.outcome, signed.type, signed.version, refused.detail)

    def _accept(self, signed: SignedList, document: bytes, now: float, expect: ListType | None) -> Acceptance:
        if expect is not None and signed.type is not expect:
            raise ListRefused(ListOutcome.WRONG_TYPE, f"a {signed.type} where a {expect} was expected")
        if len(document) > _MAX_BY_TYPE[signed.type]:
            raise ListRefused(ListOutcome.TOO_LARGE, f"{len(document)} bytes, at most {_MAX_BY_TYPE[signed.type]}")
        in_force = self._trust_list if signed.type is ListType.TRUST_LIST else self._revocation
        if in_force is not None and signed.version <= in_force.version:
            raise ListRefused(ListOutcome.ROLLBACK, f"v{signed.version}, v{in_force.version} is in force")
        if now > signed.expires_at:
            raise ListRefused(ListOutcome.EXPIRED, f"expired at {signed.expires_at}")
        if signed.type is ListType.TRUST_LIST:
            return self._accept_trust_list(read_trust_list(signed), document)
        return self._accept_revocation(read_revocation_list(signed, self._revocation), signed)

    def _accept_trust_list(self, trust_list: TrustList, document: bytes) -> Acceptance:
        detail = f"{len(trust_list.store)} keys"
        rotated = trust_list.signers != self._pinned
        retired = self._retired
        if rotated:
            dropped = self._pinned - trust_list.signers
            retired = SignerKeys(list((retired - trust_list.signers) | dropped)[-MAX_SIGNERS:])
            detail += f"; list keys now {trust_list.signers}, retired {dropped}"
        problem = self._persist(lambda: self._save_trust_list(trust_list, document, rotated, retired))
        # In force even if it could not be saved: a key removed from the list must stop passes now.
        self._trust_list, self._pinned, self._retired = trust_list, trust_list.signers, retired
        self.authority.update(store=trust_list.store, list_version=trust_list.version,
                              list_issued_at=trust_list.issued_at, list_expires_at=trust_list.expires_at)
        return Acceptance(ListOutcome.ACCEPTED, ListType.TRUST_LIST, trust_list.version, _join(detail, problem))

    def _save_trust_list(self, trust_list: TrustList, document: bytes, rotated: bool, retired: SignerKeys) -> None:
        if rotated:
            # The pins first: a power cut after this leaves the old list, which the old keys (now
            # retired, still accepted at start-up) signed; the retained message brings the new one again.
            self._write(SIGNERS_FILE, [_encode_signers(trust_list.signers, retired)])
        self._write(TRUST_LIST_FILE, [document], keep_previous_as=TRUST_LIST_LAST_GOOD)

    def _accept_revocation(self, revocation: RevocationList, signed: SignedList) -> Acceptance:
        problem = self._persist(lambda: self._write(REVOCATION_FILE, encode_state(revocation), keep_previous_as=REVOCATION_LAST_GOOD))
        self._revocation = revocation
        self.authority.update(revoked=revocation.index, revocation_version=revocation.version,
                              revocation_issued_at=revocation.issued_at)
        kind = signed.payload.get("kind")
        return Acceptance(ListOutcome.ACCEPTED, ListType.REVOCATION, revocation.version,
                          _join(f"{kind}, {len(revocation.index)} entries", problem))

    def _persist(self, save: Callable[[], None]) -> str | None:
        try:
            save()
        except OSError as exc:
            log.error("%s: cannot save the accepted list (%s); it is in force until the daemon restarts",
                      self._dir, exc.strerror or exc)
            return f"not saved: {exc.strerror or exc}"
        return None

    # --- the drop directory ------------------------------------------------------------------------------------

    def import_directory(self, directory: str | Path, now: float) -> list[tuple[Path, Acceptance]]:
        """Offer every file in ``directory``; delete the ones accepted or already in force, rename the
        refused ones to ``<name>.refused`` (kept for the technician, not offered again).

        Files are offered again while another one got accepted, so the order they were dropped in does
        not matter (a revocation list signed by a key that a trust list in the same drop pins, a delta
        and its snapshot). Names starting with "." are skipped: writers create them and rename when done.
        """
        directory = Path(directory)
        try:
            pending = sorted(p for p in directory.iterdir()
                             if p.is_file() and not p.name.startswith(".") and not p.name.endswith(REFUSED_SUFFIX))
        except OSError as exc:
            log.error("%s: cannot list the drop directory: %s", directory, exc.strerror or exc)
            return []
        results: dict[Path, Acceptance] = {}
        progress = True
        while pending and progress:
            progress = False
            for path in list(pending):
                acceptance = self._offer_file(path, now)
                results[path] = acceptance
                if acceptance.outcome in (ListOutcome.ACCEPTED, ListOutcome.UNCHANGED):
                    pending.remove(path)
                    progress |= acceptance.accepted
                    with suppress(OSError):
                        path.unlink()
        for path in pending:
            with suppress(OSError):
                path.rename(path.with_name(path.name + REFUSED_SUFFIX))
        return list(results.items())

    def _offer_file(self, path: Path, now: float) -> Acceptance:
        limit = max(_MAX_BY_TYPE.values())
        try:
            with path.open("rb") as f:
                document = f.read(limit + 1)
        except OSError as exc:
            return Acceptance(ListOutcome.MALFORMED, detail=f"unreadable: {exc.strerror or exc}")
        if len(document) > limit:
            return Acceptance(ListOutcome.TOO_LARGE, detail=f"larger than {limit} bytes")
        return self.offer(document, f"file:{path}", now)

    # --- the state directory -------------------------------------------------------------------------------------

    def _write(self, name: str, chunks: Iterable[bytes | memoryview], keep_previous_as: str | None = None) -> None:
        """Replace ``name`` atomically; with ``keep_previous_as`` the file it replaces is kept under that name."""
        target = self._dir / name
        fd, temporary = tempfile.mkstemp(dir=self._dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if keep_previous_as is not None and target.exists():
                # A power cut between the two renames leaves only the previous list, as last good: start-up uses it.
                os.replace(target, self._dir / keep_previous_as)
            os.replace(temporary, target)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
        directory_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory_fd)  # the renames themselves must survive a power cut
        finally:
            os.close(directory_fd)

    def _load_signers(self, provisioned: SignerKeys) -> tuple[SignerKeys, SignerKeys, bool]:
        """The pinned and retired list keys: from ``signers.cbor`` once a rotation wrote it, else as provisioned."""
        path = self._dir / SIGNERS_FILE
        try:
            data = _read_bounded(path, _MAX_SIGNERS_FILE_BYTES)
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

    def _load_trust_list(self, known_signers: SignerKeys) -> TrustList | None:
        """The current trust list file, else the last good one; each must verify against a key this device
        pinned (now or before a rotation) and read as a trust list. Expiry and version are not checked
        here: they decided whether to accept the list, and it is still the newest the gate has."""
        for name in (TRUST_LIST_FILE, TRUST_LIST_LAST_GOOD):
            path = self._dir / name
            try:
                document = _read_bounded(path, MAX_TRUST_LIST_BYTES)
                trust_list = read_trust_list(open_signed_list(document, known_signers, MAX_TRUST_LIST_BYTES))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                self._set_aside(path, str(exc))
                continue
            except ListRefused as refused:
                self._set_aside(path, f"{refused.outcome}: {refused.detail}")
                continue
            log.info("trust list v%d in force from %s (%d keys)", trust_list.version, path, len(trust_list.store))
            return trust_list
        return None

    def _load_revocation(self) -> RevocationList | None:
        for name in (REVOCATION_FILE, REVOCATION_LAST_GOOD):
            path = self._dir / name
            try:
                revocation = decode_state(_read_bounded(path, _MAX_REVOCATION_STATE_BYTES))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                self._set_aside(path, str(exc))
                continue
            log.info("revocation list v%d in force from %s (%d entries)", revocation.version, path, len(revocation.index))
            return revocation
        log.info("no revocation list in force")
        return None

    def _set_aside(self, path: Path, reason: str) -> None:
        """Log a damaged state file and move it aside, so the next accepted list does not make it "last good"."""
        damaged = path.with_name(path.name + ".damaged")
        log.error("%s is unusable (%s); moved to %s, trying the last good one", path, reason, damaged.name)
        with suppress(OSError):
            os.replace(path, damaged)


def _read_bounded(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def _encode_signers(pinned: SignerKeys, retired: SignerKeys) -> bytes:
    return cbor2.dumps({"pinned": pinned.spki_list(), "retired": retired.spki_list()})


def _join(detail: str, problem: str | None) -> str:
    return detail if problem is None else f"{detail}; {problem}"
