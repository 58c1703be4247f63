"""Which check-in events to publish next, and what the broker's and the consumer's acknowledgements make of them.

Delivery. Without end-to-end acknowledgements an event is delivered when the broker's PUBACK carries a success
reason code (mosquitto answers 0x10 "No matching subscribers" when nobody listens: the broker has accepted it, so
that counts). With them (``end_to_end``) that PUBACK only makes it *published*: it stays in the outbox until the
province's consumer acknowledges its event id on ``wire.ack_topic`` (a ``wire.CheckinAck``; the persistent session
keeps the subscription, so acknowledgements sent while the gate is away wait at the broker), and it is published
again when no acknowledgement has come ``ack_timeout_s`` after its PUBACK. That wait doubles, up to 16 times, while
no acknowledgement at all arrives (a consumer that is down is not hammered), and at most ``ack_window`` events wait
for acknowledgement at a time, so the broker queues a bounded number for an absent consumer and the rest wait on
the gate. A refused PUBACK leaves the event pending in both modes, and it is published again from the oldest
refused event on.

Order and rate. At each connection the outbox's newest seq becomes the *backlog mark*. Events stored up to it (an
outage's backlog) and events whose acknowledgement is overdue are drained oldest first, at most
``max_backlog_rate`` per second (a token bucket holding 100 ms worth) and in at most ``max_inflight -
max_inflight // 4`` slots of the in-flight window. Events stored after the mark are *live*: published at once,
ahead of the backlog, in the whole window. So a check-in made after an outage does not wait behind ten thousand
old ones, and a site's gates coming back together do not flood the broker. Consumers order by seq (or time), never
by arrival.

The schedule publishes through a ``send`` callable, so it is exercised against a real outbox without a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..config import MqttConfig
from ..errors import OutboxError
from ..outbox import Outbox, PendingEvent
from .health import UplinkHealth
from .pacing import TokenBucket
from .session import InFlight, Progress

log = logging.getLogger(__name__)

_RESEND_BACKOFF_STEPS = 4  # the wait for a consumer's acknowledgement grows to ack_timeout_s x 2**4
_BUCKET_BURST_S = 0.1  # the backlog's token bucket holds this many seconds' worth of events

# Publishes one event's payload on the check-in topic: paho's message id, or None when the connection just dropped.
Send = Callable[[PendingEvent], int | None]


@dataclass(slots=True)
class Acknowledged:
    """What one pass over the facts found, recorded in the outbox together."""

    pubacked: list[int] = field(default_factory=list)  # seqs of check-ins the broker accepted
    consumer_acked: list[str] = field(default_factory=list)  # event ids the consumer committed


class Schedule:
    """The publishing order and windows of one Uplink, across its connections (see the module's text).

    State that outlives a connection lives here: the token bucket, how far the wait for the consumer has backed
    off, and acknowledgements the outbox could not record yet. A connection's own state is its ``Progress``.
    """

    def __init__(self, outbox: Outbox, health: UplinkHealth, *, max_inflight: int, max_backlog_rate: float | None,
                 end_to_end: bool, ack_timeout_s: float, ack_window: int) -> None:
        self._outbox = outbox
        self._health = health
        self.max_inflight = max_inflight
        self._backlog_share = max_inflight - max_inflight // 4  # the rest is kept for live events
        self.end_to_end = end_to_end
        self._ack_timeout_s = ack_timeout_s
        self._ack_window = ack_window
        self.bucket = TokenBucket(max_backlog_rate, (max_backlog_rate or 0) * _BUCKET_BURST_S)
        # Acknowledged but not yet recorded (the outbox failed): never republished, retried to record.
        self._pubacked_unrecorded: set[int] = set()
        self._consumer_acked_unrecorded: set[str] = set()
        self._published_reset = end_to_end  # see _reset_published
        # How far the wait for the consumer's acknowledgement has backed off.
        self._resend_steps = 0
        self._next_resend_step = 0.0

    @classmethod
    def of(cls, outbox: Outbox, health: UplinkHealth, config: MqttConfig) -> Schedule:
        """The schedule an ``[mqtt]`` section describes; its ``max_backlog_rate`` 0 is no limit."""
        return cls(outbox, health, max_inflight=config.max_inflight, max_backlog_rate=config.max_backlog_rate or None,
                   end_to_end=config.end_to_end_ack, ack_timeout_s=config.ack_timeout_s, ack_window=config.ack_window)

    # --- a connection's start ----------------------------------------------------------------------------------

    def begin(self, progress: Progress) -> None:
        """At CONNACK: everything stored so far is the backlog; live events are those stored from now on."""
        self._reset_published()
        try:
            progress.backlog_mark = self._outbox.last_seq
            if self.end_to_end:
                self._health.set_awaiting_ack(self._outbox.awaiting_ack_count())
        except OutboxError as exc:
            self._health.note_error(str(exc))
        progress.live_cursor = progress.backlog_mark

    def _reset_published(self) -> None:
        """Without end-to-end acks, events published under them are sent again and delivered by
        their PUBACK; otherwise nothing would ever publish them (the consumer's ack is not awaited)."""
        if self._published_reset:
            return
        try:
            reset = self._outbox.forget_published()
        except OutboxError as exc:
            self._health.note_error(str(exc))
            return
        self._published_reset = True
        if reset:
            log.info("end-to-end acks are off: %d published events will be sent again", reset)

    # --- publishing --------------------------------------------------------------------------------------------

    def publish(self, progress: Progress, send: Send, now: float) -> bool:
        """Publish what the window, the acknowledgement window and the token bucket allow. True
        while events wait for room or tokens.

        With a backlog rate, live events go first and the backlog gets the tokens and its share of
        the window; without one nothing holds the backlog back, and everything goes oldest first.
        """
        progress.throttled = False
        room = self.max_inflight - len(progress.inflight)
        if room <= 0:
            return True
        busy = {flight.seq for flight in progress.inflight.values()} | self._pubacked_unrecorded
        try:
            if self.bucket.rate is None:
                sent, more = self._publish_backlog(progress, send, room, busy, now)
                return more or self._publish_live(progress, send, room - sent, busy)[1]
            sent, more = self._publish_live(progress, send, room, busy)
            if more:
                return True
            backlog_in_flight = sum(1 for flight in progress.inflight.values() if flight.backlog)
            budget = min(room - sent, self._backlog_share - backlog_in_flight)
            if budget <= 0:
                return True
            return self._publish_backlog(progress, send, budget, busy, now)[1]
        except OutboxError as exc:
            self._health.note_error(str(exc))
            return False

    def _publish_live(self, progress: Progress, send: Send, room: int, busy: set[int]) -> tuple[int, bool]:
        """Events stored since the connection began, oldest first: (how many sent, whether more wait)."""
        if room <= 0:
            return 0, True
        rows = [row for row in self._outbox.unpublished(limit=room + len(busy) + 1, after_seq=progress.live_cursor)
                if row.seq not in busy]
        chosen = rows[:room]
        sent = self._send(progress, send, ((row, False) for row in chosen), backlog=False)
        progress.live_cursor = max([progress.live_cursor] + [row.seq for row in chosen[:sent]])
        return sent, len(rows) > sent

    def _publish_backlog(self, progress: Progress, send: Send, budget: int, busy: set[int],
                         now: float) -> tuple[int, bool]:
        """The backlog and overdue resends, oldest first, as the tokens allow: (sent, whether more wait)."""
        tokens = self.bucket.available(now)
        if tokens <= 0:
            progress.throttled = True
            return 0, True
        candidates = self._backlog_candidates(progress, budget + 1, busy)
        chosen = candidates[:min(budget, tokens)]
        sent = self._send(progress, send, chosen, backlog=True)
        self.bucket.take(sent)
        progress.backlog_cursor = max(
            [progress.backlog_cursor] + [row.seq for row, resend in chosen[:sent] if not resend]
        )
        if any(resend for _, resend in chosen[:sent]) and now >= self._next_resend_step:
            # The wait grows at most once per wait: it measures the consumer's silence, not our rounds.
            self._next_resend_step = now + self.resend_wait_s
            self._resend_steps = min(self._resend_steps + 1, _RESEND_BACKOFF_STEPS)
        progress.throttled = len(candidates) > len(chosen) and tokens < budget
        return sent, len(candidates) > sent

    def _backlog_candidates(self, progress: Progress, budget: int,
                            busy: set[int]) -> list[tuple[PendingEvent, bool]]:
        """Up to ``budget`` backlog events, oldest first, each with whether it is a resend."""
        candidates: list[tuple[PendingEvent, bool]] = []
        new_allowed = budget
        if self.end_to_end:
            overdue = self._outbox.ack_overdue(limit=budget + len(busy), waited_s=self.resend_wait_s)
            candidates += [(row, True) for row in overdue if row.seq not in busy]
            awaiting_soon = self._health.awaiting_ack + sum(1 for f in progress.inflight.values() if not f.resend)
            new_allowed = min(budget, self._ack_window - awaiting_soon)
        if new_allowed > 0:
            backlog = self._outbox.unpublished(
                limit=new_allowed + len(busy), after_seq=progress.backlog_cursor, through_seq=progress.backlog_mark
            )
            candidates += [(row, False) for row in backlog if row.seq not in busy][:new_allowed]
        candidates.sort(key=lambda candidate: candidate[0].seq)
        return candidates[:budget]

    @property
    def resend_wait_s(self) -> float:
        """How long after its PUBACK an event waits for the consumer's acknowledgement before it is sent again."""
        return float(self._ack_timeout_s * 2**self._resend_steps)

    def _send(self, progress: Progress, send: Send, rows: Iterable[tuple[PendingEvent, bool]], *,
              backlog: bool) -> int:
        sent = resent = 0
        for row, resend in rows:
            mid = send(row)
            if mid is None:
                break  # the connection just dropped; its disconnect fact ends this session
            progress.inflight[mid] = InFlight(row.seq, backlog, resend)
            sent += 1
            resent += resend
        if sent:
            self._health.count_sent(sent, resent)
        return sent

    # --- acknowledgements --------------------------------------------------------------------------------------

    def accepted(self, flight: InFlight, found: Acknowledged) -> None:
        """The broker's PUBACK accepted ``flight`` (taken out of the in-flight window); recorded with the round."""
        found.pubacked.append(flight.seq)

    def refused(self, progress: Progress, flight: InFlight) -> None:
        """The broker refused ``flight``: it stays pending and is published again, from the oldest refused event on
        (a refused resend needs nothing: it stays overdue by itself)."""
        if not flight.backlog:
            progress.live_cursor = min(progress.live_cursor, flight.seq - 1)
        elif not flight.resend:
            progress.backlog_cursor = min(progress.backlog_cursor, flight.seq - 1)

    def consumer_acked(self, event_ids: Iterable[str], found: Acknowledged) -> None:
        found.consumer_acked.extend(event_ids)
        self._resend_steps = 0  # the consumer is there: overdue events are single losses, resent soon

    def record(self, found: Acknowledged) -> None:
        """Write what the broker and the consumer acknowledged to the outbox; what cannot be written
        is kept (never republished meanwhile) and retried in the next round."""
        seqs = list(self._pubacked_unrecorded) + found.pubacked
        ids = list(self._consumer_acked_unrecorded) + found.consumer_acked
        if seqs:
            try:
                if self.end_to_end:
                    self._outbox.mark_published(seqs)
                else:
                    self._delivered(self._outbox.mark_delivered(seqs))
            except OutboxError as exc:
                self._pubacked_unrecorded.update(seqs)
                self._health.note_error(str(exc))
            else:
                self._pubacked_unrecorded.clear()
        if ids:
            try:
                self._delivered(self._outbox.mark_acknowledged(ids))
            except OutboxError as exc:
                self._consumer_acked_unrecorded.update(ids)
                self._health.note_error(str(exc))
            else:
                self._consumer_acked_unrecorded.clear()
        if self.end_to_end and (seqs or ids):
            try:
                awaiting = self._outbox.awaiting_ack_count()
            except OutboxError as exc:
                self._health.note_error(str(exc))
            else:
                self._health.set_awaiting_ack(awaiting)

    def _delivered(self, count: int) -> None:
        # Marked changed before the counter moves: a reader that sees the new count also sees the pending count
        # out of date, and counts it (health.py).
        self._health.pending.changed()
        self._health.count_delivered(count)
