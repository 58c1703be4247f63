"""What the verifier trusts right now: one immutable ``TrustState``, swapped whole when a list is accepted.

Besides keys and revocations, the state holds the validation rules in force (``qrgate.rules.policy``):
the signed rule set the province delivered, else the one the configuration names (by default the
built-in set), or None when rules are off. They travel in the same state so that one verification
judges a pass by keys, revocations and rules of one moment.

The capture loop reads ``TrustAuthority.state`` once per verification: a single attribute read, no
lock. A list arriving on another thread builds a complete new state first and then replaces the
reference, so a verification sees the old state or the new one, never a mixture (CPython makes an
attribute assignment atomic). Writers serialise among themselves with a lock, so a trust list and a
revocation list accepted at the same moment cannot undo each other.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .revocation import EMPTY_INDEX, RevocationIndex
from .trust import TrustStore

if TYPE_CHECKING:  # qrgate.rules imports the passes package: a run-time import here would be circular
    from ..rules.policy import RuleSet


class StalePolicy(enum.StrEnum):
    FLAG = "flag"  # keep verifying; every verdict carries trust_stale=True
    REFUSE = "refuse"  # a pass that would be accepted is rejected with reason trust_stale


@dataclass(frozen=True, slots=True)
class TrustState:
    """The keys, revocations and validation rules in force, and which signed lists they came from (None: none yet)."""

    store: TrustStore
    revoked: RevocationIndex = EMPTY_INDEX
    list_version: int | None = None  # None: the static anchors of the configuration are in force
    list_issued_at: int | None = None
    list_expires_at: int | None = None
    revocation_version: int | None = None
    revocation_issued_at: int | None = None
    rules: RuleSet | None = None  # the validation rules every genuine DCC must pass; None: no rules

    def list_age_s(self, now: float) -> float | None:
        """Seconds since the trust list in force was issued (0 while the clock is behind it); None without one."""
        if self.list_issued_at is None:
            return None
        return max(0.0, now - self.list_issued_at)

    def is_stale(self, now: float, max_age_s: float | None) -> bool:
        """Whether the signed trust list in force is older than ``max_age_s`` or past its expiry.

        Static anchors from the configuration are never stale: they have no issue date to age from,
        and a gate that was never configured for signed lists must not start refusing passes.
        """
        if self.list_issued_at is None:
            return False
        if self.list_expires_at is not None and now > self.list_expires_at:
            return True
        return max_age_s is not None and now - self.list_issued_at > max_age_s


class TrustAuthority:
    """Holds the current ``TrustState``; ``state`` is what the verifier reads, ``update`` what list stores call."""

    __slots__ = ("_write_lock", "state")

    def __init__(self, state: TrustState) -> None:
        self.state = state
        self._write_lock = threading.Lock()

    @classmethod
    def of_store(cls, store: TrustStore, rules: RuleSet | None = None) -> TrustAuthority:
        """A fixed authority over static anchors and ``rules`` (None: no validation rules), with no signed
        lists (``qrgate verify``, a gate without list keys, tests, bench)."""
        return cls(TrustState(store, rules=rules))

    def update(self, **changes: Any) -> TrustState:
        """Replace some fields of the state in one swap; returns the new state."""
        with self._write_lock:
            self.state = dataclasses.replace(self.state, **changes)
            return self.state
