"""What an unsynchronised clock does to a verdict: the gate's ``clock.policy`` (docs/clock.md).

``qrgate.clock`` says whether the wall clock can be trusted; this rule, beside the verdicts it
rewrites, says what a verdict reached without a trusted clock is worth.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final, Literal

from .verdict import Reason, Verdict

ClockPolicy = Literal["accept_and_flag", "refuse"]
CLOCK_POLICIES: Final = ("accept_and_flag", "refuse")

CLOCK_UNSYNCHRONISED: Final = Reason.CLOCK_UNSYNCHRONISED

# Verdicts that compared the pass's validity window with the wall clock: with a wrong clock an expired
# pass can look valid and a valid one expired, so under "refuse" none of them is believed. A validation
# rule's verdict joins them when it read the clock (``Verdict.rules_read_clock``: a test's age, the days
# since a dose, a recovery window, or merely which rule versions are in force): "test too old" is as
# much a claim about the time as "expired" is.
_WALL_CLOCK_REASONS: Final = frozenset((Reason.ACCEPTED, Reason.EXPIRED, Reason.NOT_YET_VALID))


def apply_clock_policy(verdict: Verdict, synchronised: bool, policy: ClockPolicy) -> Verdict:
    """The verdict to act on, given whether the clock was synchronised when it was reached.

    "accept_and_flag" keeps every verdict (the event's ``clock_synced`` flag tells the backend);
    "refuse" turns a verdict that depended on the wall clock into a rejection, reason
    ``clock_unsynchronised``, keeping the pass's issuer, kid and ids for the record. Verdicts that
    never read the clock (malformed, bad signature, not a pass, a rule that compared no date) are kept.
    """
    if policy not in CLOCK_POLICIES:
        raise ValueError(f"clock policy must be one of {', '.join(CLOCK_POLICIES)}, not {policy!r}")
    read_clock = verdict.reason in _WALL_CLOCK_REASONS or verdict.rules_read_clock
    if synchronised or policy == "accept_and_flag" or not read_clock:
        return verdict
    return replace(
        verdict, reason=CLOCK_UNSYNCHRONISED, subject_id=None, initials=None, detail="clock"
    )
