"""What the uplink reports about itself: the link state, counters since the Uplink was created, the latest problem,
and the outbox's pending count.

The pending count is cached. Reading stats happens on the capture loop (the status line) and must neither run
SQL nor wait for the outbox's lock behind a publisher's fsync'd commit, so the publisher thread counts after every
change it knows of: deliveries it records, an append announced by ``wake()``, and at least every second for what
another process writes. A reader that comes after such a change and before the publisher has counted again counts
itself, so a reading never misses an append or delivery the uplink has been told of.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import OutboxError
from ..outbox import Outbox

log = logging.getLogger(__name__)

_RECOUNT_EVERY_S = 1.0  # another process may write the outbox (a successor after a restart): counted this often


@dataclass(frozen=True, slots=True)
class UplinkStats:
    """A snapshot for status lines and telemetry. Counters are since this Uplink was created."""

    connected: bool
    sent: int  # check-in PUBLISHes written, resends included
    delivered: int  # events that became delivered: PUBACK, or with end-to-end acks the consumer's acknowledgement
    refused: int  # acknowledged with a failure reason code (the event stays pending)
    pending: int | None  # events in the outbox not yet delivered; None when the outbox cannot be read
    last_error: str | None  # the latest connection or storage problem (kept after recovery: see `connected`)
    last_refusal: str | None  # the broker's reason for the latest refusal, e.g. "Not authorized"
    resent: int = 0  # of `sent`, resends after the consumer's acknowledgement was overdue
    awaiting_ack: int | None = None  # published, waiting for the consumer; None without end-to-end acks
    hellos_answered: int = 0  # the province's hellos answered with status and telemetry (reports.py)
    hellos_ignored: int = 0  # valid hellos not answered: within the rate limit of the previous answer
    hellos_malformed: int = 0  # messages on the hello topic that were not a ProvinceHello
    commands_received: int = 0  # messages on the command topic queued for the command runner (commands.py)
    commands_answered: int = 0  # answers published (refusals included: every command is answered)
    commands_dropped: int = 0  # commands or answers dropped: the runner's queue full, or no connection to answer on


class PendingCount:
    """The outbox's pending count as last counted, and whether a change has come since (see the module's text)."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._lock = threading.Lock()
        self._changes = 0  # known changes to the outbox so far
        self._counted_changes = -1  # the value of _changes when _value was counted: never yet
        self._counted_at = -float("inf")  # monotonic time of that count
        self._value: int | None = None

    def changed(self) -> None:
        """The outbox's pending count may have changed (an append announced, deliveries recorded)."""
        with self._lock:
            self._changes += 1

    def count(self) -> int | None:
        """Count now (SQL); None when the outbox cannot be read."""
        with self._lock:
            changes = self._changes
        try:
            value: int | None = self._outbox.pending_count()
        except OutboxError:
            value = None
        with self._lock:
            if changes >= self._counted_changes:  # a count that began later may have finished first
                self._value, self._counted_changes, self._counted_at = value, changes, time.monotonic()
            return self._value

    def count_if_due(self) -> None:
        """The publisher thread's refresh: after a change, or when the last count is a second old."""
        with self._lock:
            due = self._counted_changes != self._changes or time.monotonic() - self._counted_at >= _RECOUNT_EVERY_S
        if due:
            self.count()

    def read(self) -> int | None:
        with self._lock:
            if self._counted_changes == self._changes:
                return self._value
        return self.count()


class UplinkHealth:
    """Counters, link state and the latest problems, shared by the publisher thread and readers of ``stats``."""

    def __init__(self, outbox: Outbox, *, end_to_end: bool,
                 on_state: Callable[[UplinkStats], None] | None = None) -> None:
        self.pending = PendingCount(outbox)
        self._end_to_end = end_to_end
        self._on_state = on_state
        self._lock = threading.Lock()
        self._connected = False
        self._sent = self._resent = self._delivered = self._refused = 0
        self._awaiting_ack = 0  # published events waiting for the consumer, as last counted
        self._last_error: str | None = None
        self._last_refusal: str | None = None
        self._hellos = {"answered": 0, "ignored": 0, "malformed": 0}
        self._commands = {"received": 0, "answered": 0, "dropped": 0}

    @property
    def awaiting_ack(self) -> int:
        return self._awaiting_ack

    @property
    def connected(self) -> bool:
        """The link state alone (no pending count, so no SQL)."""
        with self._lock:
            return self._connected

    def set_awaiting_ack(self, count: int) -> None:
        with self._lock:
            self._awaiting_ack = count

    def count_sent(self, sent: int, resent: int) -> None:
        with self._lock:
            self._sent += sent
            self._resent += resent

    def count_delivered(self, count: int) -> None:
        with self._lock:
            self._delivered += count

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            changed = self._connected != connected
            self._connected = connected
        if changed and self._on_state is not None:
            try:
                self._on_state(self.snapshot())
            except Exception:
                log.exception("uplink on_state callback failed")

    def note_error(self, message: str) -> None:
        with self._lock:
            repeated = self._last_error == message
            self._last_error = message
        if not repeated:
            log.warning("MQTT uplink: %s", message)

    def note_refusal(self, reason: str) -> None:
        with self._lock:
            first = self._last_refusal != reason
            self._refused += 1
            self._last_refusal = reason
        if first:
            log.warning("broker refused a check-in event (%s); it stays in the outbox and is retried", reason)

    def count_hello(self, outcome: Literal["answered", "ignored", "malformed"]) -> None:
        with self._lock:
            self._hellos[outcome] += 1

    def count_command(self, what: Literal["received", "answered", "dropped"]) -> None:
        with self._lock:
            self._commands[what] += 1

    def counters(self) -> dict[str, object]:
        """The counters and latest problems, for telemetry."""
        with self._lock:
            return dict(sent=self._sent, resent=self._resent, delivered=self._delivered, refused=self._refused,
                        last_error=self._last_error, last_refusal=self._last_refusal)

    def snapshot(self) -> UplinkStats:
        with self._lock:
            stats = UplinkStats(
                connected=self._connected,
                sent=self._sent,
                delivered=self._delivered,
                refused=self._refused,
                pending=None,
                last_error=self._last_error,
                last_refusal=self._last_refusal,
                resent=self._resent,
                awaiting_ack=self._awaiting_ack if self._end_to_end else None,
                hellos_answered=self._hellos["answered"],
                hellos_ignored=self._hellos["ignored"],
                hellos_malformed=self._hellos["malformed"],
                commands_received=self._commands["received"],
                commands_answered=self._commands["answered"],
                commands_dropped=self._commands["dropped"],
            )
        # Read after the counters: a delivery they include has already marked the count changed.
        return dataclasses.replace(stats, pending=self.pending.read())
