"""The per-frame path: frame -> decode -> decide -> verify -> record -> feedback.

Kept short on purpose. A frame without a code costs one decoder call and one branch. A frame with a
code costs a hash and a dictionary look-up while the same presentation is held; verification, the
durable write and the feedback happen once per presentation. The event is committed to the outbox
*before* the LED turns green, so a green light always means a stored check-in.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .clock import Clock
from .config import DeviceConfig
from .decision import Action, Decider, payload_key
from .decoding.base import DecodedCode, Decoder
from .errors import OutboxError
from .feedback import Outcome
from .frames.base import Frame
from .outbox import Outbox
from .passage import Direction, PassageDirections
from .passes.clock_policy import ClockPolicy, apply_clock_policy
from .passes.verdict import Reason, Verdict
from .passes.verifier import PassVerifier
from .wire import CheckinEvent, EventVerdict, iso_utc, new_event_id

log = logging.getLogger(__name__)

STORAGE_ERROR = "storage_error"  # shown (red) when a check-in cannot be stored: never green without a record

_OUTCOME_OF = {Reason.ACCEPTED: Outcome.ACCEPTED, Reason.IDENTIFIED: Outcome.IDENTIFIED}
_EVENT_VERDICT: dict[Reason, EventVerdict] = {Reason.ACCEPTED: "accepted", Reason.IDENTIFIED: "identified"}


@dataclass(slots=True)
class Presentation:
    """What the gate showed for one presentation; handed to observers (demo display, telemetry)."""

    verdict: Verdict
    action: Action
    outcome: Outcome  # what the LEDs and buzzer showed

    event: CheckinEvent | None  # None for a repeat within the window, or when storing failed
    frame: Frame
    reason: str


@dataclass(slots=True)
class GateStats:
    """Counters of the capture loop; ``latencies_s`` holds the newest capture-to-feedback times."""

    frames: int = 0
    frames_with_code: int = 0
    presentations: int = 0
    repeats: int = 0
    accepted: int = 0
    identified: int = 0
    rejected: int = 0
    storage_errors: int = 0
    # Capture timestamp -> feedback started, per presentation, for live sources only (a file or a
    # simulated scene has no capture time in the monotonic clock). Bounded: the newest 1024.
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=1024))

    def latency_percentiles_ms(self) -> dict[str, float] | None:
        """p50/p99 of the recorded latencies in milliseconds, or None before the first presentation."""
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0, 2)
        return {"p50": pick(0.50), "p99": pick(0.99), "count": len(ordered)}


class Gate:
    """Turns frames into decisions, stored events and feedback.

    Not thread-safe: ``process``/``handle`` are called for one frame at a time, by the capture loop or,
    with decode threads, by ParallelDecoder, which serialises its deliveries.
    """

    def __init__(
        self,
        *,
        decoder: Decoder,
        verifier: PassVerifier,
        decider: Decider,
        outbox: Outbox,
        show: Callable[[Outcome], None],
        device: DeviceConfig,
        clock: Clock,
        on_event_stored: Callable[[], None] = lambda: None,
        on_outcome: Callable[[Presentation], None] | None = None,
        measure_latency: bool = False,
        clock_policy: ClockPolicy = "accept_and_flag",
    ) -> None:
        self._decode = decoder.decode
        self._verify = verifier.verify
        self._observe = decider.observe
        self._outbox = outbox
        self._show = show
        self._device = device
        self._clock = clock
        self._on_event_stored = on_event_stored
        self._on_outcome = on_outcome
        self._measure_latency = measure_latency
        self._clock_policy = clock_policy
        self._last_seen_at = float("-inf")
        # A both-ways gate takes each person's direction from their last passage here (qrgate.passage).
        self._passages = (PassageDirections(memory_h=device.passage_memory_h) if device.direction == "both"
                          else None)
        self.stats = GateStats()

    def process(self, frame: Frame) -> None:
        """Decode ``frame`` on the calling thread, then act on what it shows."""
        self.handle(frame, self._decode(frame.grey))

    def handle(self, frame: Frame, codes: list[DecodedCode]) -> None:
        """Act on the codes decoded in ``frame``. Called for one frame at a time (by the capture
        loop, or by the parallel decoder's workers, whose results may arrive out of capture order
        by a frame or two: the decider's clock therefore never steps back)."""
        stats = self.stats
        stats.frames += 1
        if not codes:
            return
        stats.frames_with_code += 1
        seen_at = self._last_seen_at = max(frame.captured_at, self._last_seen_at)
        for code in codes:
            key = payload_key(code.text)
            action = self._observe(key, seen_at)
            if action is Action.HELD:
                continue
            self._present(code.text, action, frame)

    def _present(self, text: str, action: Action, frame: Frame) -> None:
        stats = self.stats
        now = self._clock.wall()
        synchronised = self._clock.synchronised()  # one reading for the policy and the event
        verdict = apply_clock_policy(self._verify(text, now), synchronised, self._clock_policy)
        outcome = _OUTCOME_OF.get(verdict.reason, Outcome.REJECTED)
        reason = str(verdict.reason)
        event = None
        if action is Action.NEW:
            stats.presentations += 1
            direction, passage_key = self._direction(verdict, now)
            try:
                event = self._outbox.append(lambda seq: self._event(verdict, seq, now, synchronised, direction))
            except OutboxError as exc:
                # The check-in cannot be recorded: showing green would hide a lost event.
                stats.storage_errors += 1
                log.error("check-in not stored, shown as rejected: %s", exc)
                outcome, reason = Outcome.REJECTED, STORAGE_ERROR
            else:
                if passage_key is not None and self._passages is not None:  # remembered only once stored
                    self._passages.record(passage_key, direction, now)
                self._on_event_stored()
        else:
            stats.repeats += 1
        self._show(outcome)
        if self._measure_latency:
            stats.latencies_s.append(self._clock.monotonic() - frame.captured_at)
        if outcome is Outcome.ACCEPTED:
            stats.accepted += 1
        elif outcome is Outcome.IDENTIFIED:
            stats.identified += 1
        else:
            stats.rejected += 1
        if self._on_outcome is not None:
            self._on_outcome(Presentation(verdict, action, outcome, event, frame, reason))

    def _direction(self, verdict: Verdict, now: float) -> tuple[Direction, str | None]:
        """This passage's direction, and the key to remember it under once stored (None: nothing to remember).

        The gate's own direction, or on a both-ways gate the person's next one; a refused pass there is an attempt
        to come in and moves nothing."""
        passages = self._passages
        if passages is None:
            return ("out" if self._device.direction == "out" else "in"), None
        if verdict.reason not in _EVENT_VERDICT:
            return "in", None
        key = verdict.subject_id or verdict.pass_id
        return passages.peek(key, now), key

    def _event(self, verdict: Verdict, seq: int, now: float, synchronised: bool, direction: Direction) -> CheckinEvent:
        device = self._device
        return CheckinEvent(
            event_id=new_event_id(now),
            seq=seq,
            device_id=device.id,
            site_id=device.site_id,
            gate=device.gate,
            direction=direction,
            time=iso_utc(now),
            clock_synced=synchronised,
            verdict=_EVENT_VERDICT.get(verdict.reason, "rejected"),
            reason=str(verdict.reason),
            format=str(verdict.format),
            issuer=verdict.issuer,
            pass_id=verdict.pass_id,
            subject_id=verdict.subject_id,  # the verifier sets it only for an accepted pass or an identified card
            trust_stale=verdict.trust_stale,
        )
