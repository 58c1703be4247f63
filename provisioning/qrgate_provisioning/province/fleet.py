"""The live fleet: what every gate last said about itself, kept from the MQTT messages the fleet listener hands in.

The model is pure (no broker, no database, no clock of its own: every call says what time it is), so every rule
is tested with plain values. ``fleet_listener`` feeds it from the broker and writes what it hands out
(``take_transitions``, ``take_heard``) to PostgreSQL; the dashboard reads ``snapshot`` and waits on
``wait_changed``; ``alerts`` and ``metrics`` compute from the views.

Online or offline. A gate is online from its first live message (its birth on the availability topic, a status,
telemetry, a check-in) and offline when the broker publishes its last will (availability ``offline``), when it
says goodbye at a clean stop (status ``offline``), or when it has been silent longer than
``missed_heartbeats`` x ``heartbeat_s`` (``stale``: a power cut or a dead link that the broker has not noticed
yet, or whose will was lost), as ThingsBoard's inactivity timeout and zigbee2mqtt's availability do.

Retained messages (what the broker hands a new subscriber) are old news: the availability string says what the
broker last knew, but nothing in them proves the gate is there *now*, so they set the state without counting as
heard. A retained ``online`` that no live message confirms goes stale like a silent gate; the hello the listener
sends at connect makes every live gate confirm within seconds. A retained status never makes a gate online on its
own (it is the birth's copy and outlives a gate that died without a will reaching us).
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from qrgate import wire

from .fleet_record import KINDS, PENDING_HISTORY, GateRecord, GateView, Kind, State
from .presence import HEARD_EVERY_S, Transition
from .settings import FleetSettings

__all__ = ["KINDS", "PENDING_HISTORY", "FleetCounters", "FleetState", "GateView", "Kind", "State", "device_of"]


@dataclass(frozen=True, slots=True)
class FleetCounters:
    """Counts since the service started, for /metrics (Prometheus computes the rates)."""

    messages: Mapping[str, int]  # by kind: available, status, telemetry, checkin (malformed ones included)
    malformed: int  # not the payload its topic carries, or from another device than its topic names
    checkins: Mapping[tuple[str, str], int]  # (verdict, direction) -> valid check-in messages


def device_of(topic: str) -> tuple[str, Kind] | None:
    """``qrgate/v1/device/<id>/<kind>`` -> (id, kind), or None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != wire.TOPIC_ROOT or parts[2] != "device" or not parts[3]:
        return None
    kind = parts[4]
    for known in KINDS:
        if kind == known:
            return parts[3], known
    return None


class FleetState:
    """Every gate's latest state, safe to share between the listener's threads and the web's (one lock)."""

    def __init__(self, settings: FleetSettings, *, history: int = PENDING_HISTORY) -> None:
        self.settings = settings
        self._history = history
        self._silence_limit_s = settings.missed_heartbeats * settings.heartbeat_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._gates: dict[str, GateRecord] = {}
        self._version = 0
        self._transitions: list[Transition] = []
        self._transition_at: dict[tuple[str, dt.datetime], int] = {}  # (gate, at) -> its index in _transitions
        self._heard: list[tuple[str, dt.datetime]] = []
        self._new_gates: list[str] = []
        self._announced: set[str] = set()
        self._messages: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._malformed = 0
        self._checkins: collections.Counter[tuple[str, str]] = collections.Counter()

    # --- fed by the listener -----------------------------------------------------------------------------------

    def apply(self, topic: str, payload: bytes, now: float, *, retained: bool = False) -> str | None:
        """One message from the broker, at epoch ``now``; ``retained`` when the broker handed over its stored copy
        at subscription. Returns the id of the gate whose view changed; None for a message that was ignored (not a
        device topic, malformed, from another device than its topic names, an emptied retained topic). Never
        raises on bad input: it is counted in ``malformed``."""
        where = device_of(topic)
        if where is None:
            with self._lock:
                self._malformed += 1
            return None
        device_id, kind = where
        parsed = _parse(kind, payload)
        with self._lock:
            self._messages[kind] += 1
            if isinstance(parsed, _Empty):
                return None  # a retained topic being cleared: nothing said
            if parsed is None or (not isinstance(parsed, str) and parsed.device_id != device_id):
                self._malformed += 1
                return None
            record = self._gates.get(device_id)
            if record is None:
                record = self._gates[device_id] = GateRecord(device_id, self._history)
            if isinstance(parsed, wire.CheckinEvent):
                self._checkins[(parsed.verdict, parsed.direction)] += 1
            if not retained:
                self._heard_now(record, now)
            for transition in record.apply(parsed, now, retained=retained):
                self._add_transition(transition)
            if record.site_id is not None and device_id not in self._announced:
                self._announced.add(device_id)
                self._new_gates.append(device_id)
            self._bump()
            return device_id

    def sweep(self, now: float) -> list[str]:
        """Gates silent longer than the limit become offline (``stale``); their ids."""
        with self._lock:
            changed = []
            for record in self._gates.values():
                transition = record.stale_check(now, self._silence_limit_s, self.settings.heartbeat_s)
                if transition is not None:
                    self._add_transition(transition)
                    changed.append(record.device_id)
            if changed:
                self._bump()
            return changed

    def take_transitions(self) -> list[Transition]:
        """The presence changes since the last call, oldest first (the listener stores them)."""
        with self._lock:
            taken, self._transitions = self._transitions, []
            self._transition_at.clear()
            return taken

    def take_heard(self) -> list[tuple[str, dt.datetime]]:
        """(gate, when) it was heard from, at most once per gate every ``presence.HEARD_EVERY_S``."""
        with self._lock:
            taken, self._heard = self._heard, []
            return taken

    def take_new_gates(self) -> list[GateView]:
        """Gates whose place (site id) became known since the last call: the registry files them."""
        with self._lock:
            ids, self._new_gates = self._new_gates, []
            return [self._gates[device_id].view() for device_id in ids]

    # --- read by the dashboard, the alerts and /metrics --------------------------------------------------------

    def snapshot(self) -> list[GateView]:
        """Every gate, by device id."""
        with self._lock:
            return [self._gates[device_id].view() for device_id in sorted(self._gates)]

    def view(self, device_id: str) -> GateView | None:
        with self._lock:
            record = self._gates.get(device_id)
            return record.view() if record is not None else None

    @property
    def version(self) -> int:
        """Grows with every change: the dashboard's server-sent events say "changed since version N"."""
        with self._lock:
            return self._version

    def wait_changed(self, after: int, timeout: float) -> int:
        """Block until the version is past ``after`` or ``timeout`` seconds passed; the version then."""
        with self._changed:
            self._changed.wait_for(lambda: self._version > after, timeout)
            return self._version

    @property
    def malformed(self) -> int:
        with self._lock:
            return self._malformed

    def counters(self) -> FleetCounters:
        with self._lock:
            return FleetCounters(dict(self._messages), self._malformed, dict(self._checkins))

    def states(self) -> dict[State, int]:
        """How many gates are online, offline, unknown."""
        counts: dict[State, int] = {"online": 0, "offline": 0, "unknown": 0}
        with self._lock:
            for record in self._gates.values():
                counts[record.state] += 1
        return counts

    # --- inside the lock ---------------------------------------------------------------------------------------

    def _heard_now(self, record: GateRecord, now: float) -> None:
        if record.heard_recorded_at is None or now - record.heard_recorded_at >= HEARD_EVERY_S:
            record.heard_recorded_at = now
            self._heard.append((record.device_id, dt.datetime.fromtimestamp(now, dt.UTC)))

    def _add_transition(self, transition: Transition) -> None:
        """Append; a transition of the same gate and instant replaces the one not yet taken (a clean stop's cause
        learnt from the status after the availability; once stored, the database keeps the first)."""
        key = (transition.device_id, transition.at)
        index = self._transition_at.get(key)
        if index is None:
            self._transition_at[key] = len(self._transitions)
            self._transitions.append(transition)
        else:
            self._transitions[index] = transition

    def _bump(self) -> None:
        self._version += 1
        self._changed.notify_all()


class _Empty:
    """An empty payload: how a retained topic is cleared."""


_EMPTY = _Empty()
Parsed = str | wire.DeviceStatus | wire.Telemetry | wire.CheckinEvent


def _parse(kind: Kind, payload: bytes) -> Parsed | _Empty | None:
    """The payload as its topic's schema, _EMPTY when empty, None when malformed (outside the lock: pydantic)."""
    if not payload:
        return _EMPTY if kind in ("available", "status") else None
    try:
        if kind == "available":
            text = payload.decode("ascii")
            return text if text in (wire.ONLINE, wire.OFFLINE) else None
        if kind == "status":
            return wire.DeviceStatus.from_json(payload)
        if kind == "telemetry":
            return wire.Telemetry.from_json(payload)
        return wire.CheckinEvent.from_json(payload)
    except (ValidationError, UnicodeDecodeError, ValueError):
        return None
