"""Signed trust lists, revocation lists and rule sets on the device: accept or refuse each one, keep it, swap it in.

Both delivery paths call ``TrustUpdates.offer``: the retained MQTT messages on the province topics
(``wire.TRUST_LIST_TOPIC``, ``wire.REVOCATION_TOPIC``, ``wire.RULE_SET_TOPIC``; the uplink hands each payload
to a worker thread) and
files dropped into a directory (``import_directory``, for provisioning and for sites without network).
A refused document changes nothing: the lists in force stay, and the answer names the reason.

The state directory (``/var/lib/qrgate/trust`` on a gate, ``state_files.py``) holds, each file replaced
atomically (temporary file in the same directory, fsync, rename, fsync of the directory):

- ``trust-list.cose``: the trust list in force, exactly as received, re-verified at start-up;
  ``trust-list.last-good.cose``: the one before it, used when the current file is damaged;
- ``revocation.state`` and ``revocation.last-good.state``: the revocation index in force and the one
  before (``revocation.py``, "the device's state file");
- ``rule-set.cose`` and ``rule-set.last-good.cose``: the signed validation rule set in force and the one
  before, as received, re-verified at start-up (docs/rules.md); without one, the configured baseline
  (by default the built-in rule set) is in force;
- ``signers.cbor``: the list-signing keys pinned now and the ones rotated out (docs/trust.md).

When a signed trust list is in force it is the only source of issuer keys; the static anchors of the
configuration (``trust.paths``) are used only until the first list is accepted. Merging both would
make removing a key from the list useless: the kill switch must be able to remove any key.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from .passes.authority import TrustAuthority, TrustState
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
from .rules.policy import RuleSet
from .rules.rule_set import MAX_RULE_SET_DOCUMENT_BYTES, read_rule_set
from .state_files import SIGNERS_FILE, StateDirectory, encode_signers, load_signers

log = logging.getLogger(__name__)

# Province-wide topics: QoS 1, trust lists and revocation snapshots retained, written only by the province's issuer.

TRUST_LIST_FILE = "trust-list.cose"
TRUST_LIST_LAST_GOOD = "trust-list.last-good.cose"
REVOCATION_FILE = "revocation.state"
REVOCATION_LAST_GOOD = "revocation.last-good.state"
RULE_SET_FILE = "rule-set.cose"
RULE_SET_LAST_GOOD = "rule-set.last-good.cose"
REFUSED_SUFFIX = ".refused"
_MAX_REVOCATION_STATE_BYTES = MAX_REVOCATION_BYTES + 8 * 1024
_MAX_BY_TYPE = {ListType.TRUST_LIST: MAX_TRUST_LIST_BYTES, ListType.REVOCATION: MAX_REVOCATION_BYTES,
                ListType.RULE_SET: MAX_RULE_SET_DOCUMENT_BYTES}


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

    def __init__(self, state_dir: str | Path, *, provisioned_signers: SignerKeys, static_store: TrustStore,
                 baseline_rules: RuleSet | None = None) -> None:
        """Load what the state directory holds, falling back file by file and saying so in the log.

        ``provisioned_signers`` are the list keys pinned at provisioning (``SignerKeys.from_pem_dir``);
        ``static_store`` the configuration's anchors, in force until a trust list is; ``baseline_rules``
        the validation rules of the configuration (None: none), in force until a signed rule set is.
        Raises TrustStoreError only if the state directory cannot be created or listed.
        """
        self._dir = Path(state_dir)
        self._state = StateDirectory(self._dir)
        self._lock = threading.Lock()
        self._pinned, self._retired, pins_saved = load_signers(self._state, provisioned_signers)
        self._trust_list = self._load_trust_list(self._pinned | self._retired)
        if self._trust_list is not None and not pins_saved:
            self._pinned = self._trust_list.signers  # the list verified against the provisioned keys: follow it
        self._revocation = self._load_revocation()
        self._rule_set = self._load_rule_set(self._pinned | self._retired)
        list_, revocation = self._trust_list, self._revocation
        if list_ is None:
            log.warning("no signed trust list in force: verifying with the %d static trust anchors of trust.paths "
                        "until one is accepted", len(static_store))
        if self._rule_set is None:
            log.info("no signed rule set in force: validation rules %s", baseline_rules or "off")
        self.authority = TrustAuthority(TrustState(
            store=static_store if list_ is None else list_.store,
            revoked=EMPTY_INDEX if revocation is None else revocation.index,
            list_version=None if list_ is None else list_.version,
            list_issued_at=None if list_ is None else list_.issued_at,
            list_expires_at=None if list_ is None else list_.expires_at,
            revocation_version=None if revocation is None else revocation.version,
            revocation_issued_at=None if revocation is None else revocation.issued_at,
            rules=baseline_rules if self._rule_set is None else self._rule_set,
        ))

    @classmethod
    def open(cls, state_dir: str | Path, signers_dir: str | Path, static_paths: Iterable[str | Path],
             baseline_rules: RuleSet | None = None) -> TrustUpdates:
        """From configuration values: the state directory, the directory of pinned PEM keys, ``trust.paths``,
        and the validation rules the configuration names."""
        return cls(state_dir, provisioned_signers=SignerKeys.from_pem_dir(signers_dir),
                   static_store=TrustStore.from_paths(static_paths), baseline_rules=baseline_rules)

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

    @property
    def rules(self) -> RuleSet | None:
        """The validation rules in force: the signed rule set, else the configured baseline (None: off)."""
        return self.authority.state.rules

    def age_s(self, now: float) -> float | None:
        return self.authority.state.list_age_s(now)

    def is_stale(self, now: float, max_age_s: float | None) -> bool:
        return self.authority.state.is_stale(now, max_age_s)

    def report(self, now: float, max_age_s: float | None) -> dict[str, int | float | bool | None]:
        """What the device says about its lists on its status topic (None: no signed list of that kind yet;
        rule set version 0: the built-in or configured file's rules, None: rules off)."""
        state = self.authority.state
        age = state.list_age_s(now)
        rules_age = None if state.rules is None else state.rules.age_s(now)
        return {
            "trust_list_version": state.list_version,
            "trust_list_age_s": None if age is None else round(age),
            "trust_stale": state.is_stale(now, max_age_s),
            "revocation_version": state.revocation_version,
            "rule_set_version": None if state.rules is None else state.rules.version,
            "rule_set_age_s": None if rules_age is None else round(rules_age),
        }

    # --- offers ------------------------------------------------------------------------------------------------

    def offer(self, document: bytes, source: str, now: float, expect: ListType | None = None) -> Acceptance:
        """Accept ``document`` (a signed trust list, revocation list or rule set) or refuse it, with a reason.

        Never raises.

        ``source`` names the delivery for the log ("mqtt:<topic>", "file:<path>"); ``expect`` is the
        list type the delivery path carries (None: either, as in a drop directory).
        """
        with self._lock:
            try:
                acceptance = self._offer(bytes(document), now, expect)
            except ListRefused as refused:
                acceptance = Acceptance(refused.outcome, expect, detail=refused.detail)
            except Exception as exc:
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
            log.warning("%s from %s refused: %s (%s); the lists in force stay", what, source, acceptance.outcome,
                        acceptance.detail)
        return acceptance

    def _offer(self, document: bytes, now: float, expect: ListType | None) -> Acceptance:
        digest = hashlib.sha256(document).digest()
        for list_type, in_force in self._in_force().items():
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
        in_force = self._in_force()[signed.type]
        if in_force is not None and signed.version <= in_force.version:
            raise ListRefused(ListOutcome.ROLLBACK, f"v{signed.version}, v{in_force.version} is in force")
        if now > signed.expires_at:
            raise ListRefused(ListOutcome.EXPIRED, f"expired at {signed.expires_at}")
        if signed.type is ListType.TRUST_LIST:
            return self._accept_trust_list(read_trust_list(signed), document)
        if signed.type is ListType.RULE_SET:
            return self._accept_rule_set(RuleSet(read_rule_set(signed), f"signed v{signed.version}"), document)
        return self._accept_revocation(read_revocation_list(signed, self._revocation), signed)

    def _in_force(self) -> dict[ListType, TrustList | RevocationList | RuleSet | None]:
        """The signed list of each type in force (a rule set from the configuration is not a signed one)."""
        return {ListType.TRUST_LIST: self._trust_list, ListType.REVOCATION: self._revocation,
                ListType.RULE_SET: self._rule_set}

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
            self._state.write(SIGNERS_FILE, [encode_signers(trust_list.signers, retired)])
        self._state.write(TRUST_LIST_FILE, [document], keep_previous_as=TRUST_LIST_LAST_GOOD)

    def _accept_revocation(self, revocation: RevocationList, signed: SignedList) -> Acceptance:
        problem = self._persist(lambda: self._state.write(REVOCATION_FILE, encode_state(revocation),
                                                          keep_previous_as=REVOCATION_LAST_GOOD))
        self._revocation = revocation
        self.authority.update(revoked=revocation.index, revocation_version=revocation.version,
                              revocation_issued_at=revocation.issued_at)
        kind = signed.payload.get("kind")
        return Acceptance(ListOutcome.ACCEPTED, ListType.REVOCATION, revocation.version,
                          _join(f"{kind}, {len(revocation.index)} entries", problem))

    def _accept_rule_set(self, rule_set: RuleSet, document: bytes) -> Acceptance:
        problem = self._persist(lambda: self._state.write(RULE_SET_FILE, [document],
                                                          keep_previous_as=RULE_SET_LAST_GOOD))
        # In force even if it could not be saved, as a trust list: the province's new policy applies now.
        self._rule_set = rule_set
        self.authority.update(rules=rule_set)
        return Acceptance(ListOutcome.ACCEPTED, ListType.RULE_SET, rule_set.version,
                          _join(f"{len(rule_set)} rules of {rule_set.country}", problem))

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

    def _load_trust_list(self, known_signers: SignerKeys) -> TrustList | None:
        """The current trust list file, else the last good one; each must verify against a key this device
        pinned (now or before a rotation) and read as a trust list. Expiry and version are not checked
        here: they decided whether to accept the list, and it is still the newest the gate has."""
        loaded = self._state.load((TRUST_LIST_FILE, TRUST_LIST_LAST_GOOD), MAX_TRUST_LIST_BYTES, lambda document:
                                  read_trust_list(open_signed_list(document, known_signers, MAX_TRUST_LIST_BYTES)))
        if loaded is None:
            return None
        path, trust_list = loaded
        log.info("trust list v%d in force from %s (%d keys)", trust_list.version, path, len(trust_list.store))
        return trust_list

    def _load_revocation(self) -> RevocationList | None:
        loaded = self._state.load((REVOCATION_FILE, REVOCATION_LAST_GOOD), _MAX_REVOCATION_STATE_BYTES, decode_state)
        if loaded is None:
            log.info("no revocation list in force")
            return None
        path, revocation = loaded
        log.info("revocation list v%d in force from %s (%d entries)", revocation.version, path, len(revocation.index))
        return revocation

    def _load_rule_set(self, known_signers: SignerKeys) -> RuleSet | None:
        """The signed rule set in force, re-verified and re-read (every Logic validated again) as a trust list is."""
        limit = MAX_RULE_SET_DOCUMENT_BYTES
        loaded = self._state.load((RULE_SET_FILE, RULE_SET_LAST_GOOD), limit, lambda document: read_rule_set(
            open_signed_list(document, known_signers, limit)))
        if loaded is None:
            return None
        path, content = loaded
        rule_set = RuleSet(content, f"signed v{content.version}")
        log.info("rule set v%d in force from %s (%d rules of %s)", rule_set.version, path, len(rule_set),
                 rule_set.country)
        return rule_set


def _join(detail: str, problem: str | None) -> str:
    return detail if problem is None else f"{detail}; {problem}"
