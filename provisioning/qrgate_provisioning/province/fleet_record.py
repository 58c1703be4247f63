"""One gate as the fleet knows it: the mutable record ``fleet.FleetState`` keeps under its lock, and the frozen
``GateView`` it hands out. The rules of online, offline and stale are in ``fleet``'s text; this is their code."""

from __future__ import annotations

import collections
import datetime as dt
from dataclasses import dataclass
from typing import Literal

from qrgate import wire

from .presence import Cause, Transition

Kind = Literal["available", "status", "telemetry", "checkin"]
KINDS: tuple[Kind, ...] = ("available", "status", "telemetry", "checkin")
State = Literal["online", "offline", "unknown"]
Direction = Literal["in", "out", "both"]
PENDING_HISTORY = 16  # telemetry backlogs kept per gate: "backlog growing over N reports" looks at these
# A gate's clean stop publishes availability "offline" and then its status "offline": a status this soon after
# the will-like availability turns the cause into a clean stop.
CLEAN_STOP_WINDOW_S = 10.0


@dataclass(frozen=True, slots=True)
class GateView:
    """What the fleet knows about one gate at one moment. Times are epoch seconds (the service's clock)."""

    device_id: str
    site_id: str | None
    gate: str | None
    direction: Direction | None
    state: State
    stale: bool  # offline because it fell silent for missed_heartbeats x heartbeat_s, with no will or goodbye seen
    last_seen: float | None  # the last message of any kind from it (a retained status: the time it says)
    online_since: float | None  # when the current online period began (None while offline or unknown)
    offline_since: float | None  # when the current offline period began (None while online or unknown)
    offline_cause: Cause | None  # will (link lost), status (clean stop), stale (silence)
    software: str | None
    config_hash: str | None
    trust_list_version: int | None
    trust_list_age_s: float | None  # as of trust_list_age_as_of (the last time we heard from the gate)
    trust_list_age_as_of: float | None
    trust_stale: bool | None  # the gate's own verdict (its trust.max_age_h or the list's expiry)
    clock_synced: bool | None
    clock_unsynced_since: float | None  # since when it has said its clock is not synchronised
    pending: int | None  # check-ins in its outbox not yet delivered
    pending_history: tuple[int, ...]  # the backlogs of its latest telemetry reports, oldest first
    oldest_pending_s: int | None
    frames_per_s: float | None
    disk_free_bytes: int | None
    disk_total_bytes: int | None
    cpu_temp_c: float | None
    uptime_s: int | None
    last_error: str | None
    storage_error: str | None
    outbox_over_limit: bool | None
    status_at: float | None  # when its latest status was measured
    telemetry_at: float | None  # when its latest telemetry arrived
    last_checkin_at: float | None  # the time of its newest check-in (the gate's clock)
    last_verdict: str | None
    rejections_in_row: int  # rejected check-ins since the last accepted or identified one, in arrival order
    rejections_since: float | None  # the first rejection of that run

    def trust_list_age_at(self, now: float) -> float | None:
        """The trust list's age at ``now``: it kept ageing since the gate last said it."""
        if self.trust_list_age_s is None or self.trust_list_age_as_of is None:
            return None
        return self.trust_list_age_s + max(0.0, now - self.trust_list_age_as_of)

    def silent_s(self, now: float) -> float | None:
        """Seconds since anything was heard from it."""
        return None if self.last_seen is None else max(0.0, now - self.last_seen)


def epoch_of(iso: str) -> float | None:
    """An ISO 8601 time from a payload as epoch seconds (None if it does not parse)."""
    try:
        moment = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


class GateRecord:
    """One gate's mutable state; only ``FleetState`` touches it, under its lock."""

    def __init__(self, device_id: str, history: int) -> None:
        self.device_id = device_id
        self.site_id: str | None = None
        self.gate: str | None = None
        self.direction: Direction | None = None
        self.state: State = "unknown"
        self.stale = False
        self.last_seen: float | None = None
        self.fresh_at: float | None = None  # the silence clock: the last live message, or when we began watching
        self.online_since: float | None = None
        self.offline_since: float | None = None
        self.offline_cause: Cause | None = None
        self.recorded_online: bool | None = None  # what the last transition handed out said (None: none yet)
        self.heard_recorded_at: float | None = None
        self.software: str | None = None
        self.config_hash: str | None = None
        self.trust_list_version: int | None = None
        self.trust_list_age_s: float | None = None
        self.trust_measured_at: float | None = None
        self.trust_stale: bool | None = None
        self.clock_synced: bool | None = None
        self.clock_unsynced_since: float | None = None
        self.pending: int | None = None
        self.pending_history: collections.deque[int] = collections.deque(maxlen=history)
        self.oldest_pending_s: int | None = None
        self.frames_per_s: float | None = None
        self.disk_free_bytes: int | None = None
        self.disk_total_bytes: int | None = None
        self.cpu_temp_c: float | None = None
        self.uptime_s: int | None = None
        self.last_error: str | None = None
        self.storage_error: str | None = None
        self.outbox_over_limit: bool | None = None
        self.status_at: float | None = None
        self.telemetry_at: float | None = None
        self.last_checkin_at: float | None = None
        self.last_verdict: str | None = None
        self.rejections_in_row = 0
        self.rejections_since: float | None = None

    # --- messages ----------------------------------------------------------------------------------------------

    def apply(self, message: str | wire.DeviceStatus | wire.Telemetry | wire.CheckinEvent, now: float, *,
              retained: bool) -> list[Transition]:
        """One valid message about this gate; the presence transitions it causes."""
        if self.fresh_at is None:
            self.fresh_at = now  # a gate first known from retained messages gets the full silence limit to speak
        if isinstance(message, str):
            return self._availability(message, now, retained)
        if isinstance(message, wire.DeviceStatus):
            return self._status(message, now, retained)
        if isinstance(message, wire.Telemetry):
            self._telemetry(message, now)
        else:
            self._checkin(message, now)
        return [] if retained else self._live(now)

    def _availability(self, value: str, now: float, retained: bool) -> list[Transition]:
        if value == wire.OFFLINE:
            if not retained:
                self.last_seen = now
            return self._offline(now, "will")
        if not retained:
            return self._live(now)
        if self.state != "online":
            # What the broker last knew; unconfirmed until a live message (the hello's answer) or the silence limit.
            self.state, self.stale = "online", False
            self.online_since = self.offline_since = self.offline_cause = None
            self.fresh_at = now
        return []

    def _status(self, status: wire.DeviceStatus, now: float, retained: bool) -> list[Transition]:
        said_at = epoch_of(status.time)
        measured_at = now if retained is False or said_at is None else min(now, said_at)
        self._details_of_status(status, measured_at)
        if retained:
            self.last_seen = max(self.last_seen or measured_at, measured_at)
        if status.state == wire.OFFLINE:
            if not retained:
                self.last_seen = now
            if (self.state == "offline" and self.offline_cause == "will" and self.offline_since is not None
                    and measured_at - self.offline_since <= CLEAN_STOP_WINDOW_S):
                # The goodbye's second half: the same transition, now known to be a clean stop.
                self.offline_cause = "status"
                return [Transition(self.device_id, _utc(self.offline_since), False, "status")]
            return self._offline(measured_at, "status")
        return [] if retained else self._live(now)

    def _details_of_status(self, status: wire.DeviceStatus, measured_at: float) -> None:
        self.site_id = status.site_id or self.site_id
        self.gate = status.gate or self.gate
        self.direction = status.direction or self.direction
        self.software = status.software
        self.config_hash = status.config_hash
        self.trust_list_version = status.trust_list_version
        self.trust_list_age_s = None if status.trust_list_age_s is None else float(status.trust_list_age_s)
        self.trust_measured_at = measured_at
        self.trust_stale = status.trust_stale
        self._clock(status.clock_synced, measured_at)
        if self.telemetry_at is None or measured_at >= self.telemetry_at:  # not an old retained copy's figures
            if status.pending is not None:
                self.pending = status.pending
            self.storage_error = status.storage_error
            self.outbox_over_limit = status.outbox_over_limit
        self.status_at = measured_at

    def _telemetry(self, report: wire.Telemetry, now: float) -> None:
        if report.pending is not None:
            self.pending = report.pending
            self.pending_history.append(report.pending)
        self.oldest_pending_s = report.oldest_pending_s
        self.frames_per_s = report.frames_per_s
        self.disk_free_bytes = report.disk_free_bytes
        self.disk_total_bytes = report.disk_total_bytes
        self.cpu_temp_c = report.cpu_temp_c
        self.uptime_s = report.uptime_s
        self.last_error = report.last_error
        self.storage_error = report.storage_error
        self.outbox_over_limit = report.outbox_over_limit
        if report.clock_synced is not None:  # a gate older than the field leaves the status's word standing
            self._clock(report.clock_synced, now)
        self.telemetry_at = now

    def _checkin(self, event: wire.CheckinEvent, now: float) -> None:
        # A gate older than the status's place fields still names its place on every check-in.
        self.site_id = self.site_id or event.site_id
        self.gate = self.gate or event.gate
        self.direction = self.direction or event.direction
        at = epoch_of(event.time) or now
        if self.last_checkin_at is None or at >= self.last_checkin_at:
            self.last_checkin_at, self.last_verdict = at, event.verdict
        if event.verdict == "rejected":
            if self.rejections_in_row == 0:
                self.rejections_since = at
            self.rejections_in_row += 1
        else:
            self.rejections_in_row, self.rejections_since = 0, None

    def _clock(self, synced: bool | None, at: float) -> None:
        self.clock_synced = synced
        if synced is False:
            self.clock_unsynced_since = self.clock_unsynced_since or at
        else:
            self.clock_unsynced_since = None

    # --- presence ----------------------------------------------------------------------------------------------

    def _live(self, now: float) -> list[Transition]:
        """A live message: the gate is there now."""
        self.last_seen = self.fresh_at = now
        if self.state != "online" or self.online_since is None:  # (None: online only by a retained message)
            self.online_since = now
        self.state, self.stale = "online", False
        self.offline_since = self.offline_cause = None
        return self._transition(True, now, "message")

    def _offline(self, at: float, cause: Cause) -> list[Transition]:
        if self.state == "offline":
            if self.stale and cause != "stale":
                self.stale, self.offline_cause = False, cause  # the will (or goodbye) came after our own verdict
            return []
        self.state, self.stale = "offline", cause == "stale"
        self.offline_since, self.offline_cause, self.online_since = at, cause, None
        return self._transition(False, at, cause)

    def stale_check(self, now: float, limit_s: float, heartbeat_s: float) -> Transition | None:
        """Offline when silent longer than ``limit_s``: as of the first report that did not come."""
        if self.state == "offline" or self.fresh_at is None or now - self.fresh_at <= limit_s:
            return None
        transitions = self._offline(min(now, self.fresh_at + heartbeat_s), "stale")
        return transitions[0] if transitions else None

    def _transition(self, online: bool, at: float, cause: Cause) -> list[Transition]:
        if self.recorded_online is online:
            return []
        self.recorded_online = online
        return [Transition(self.device_id, _utc(at), online, cause)]

    def view(self) -> GateView:
        age_as_of = self.trust_measured_at
        age = self.trust_list_age_s
        if age is not None and age_as_of is not None and self.last_seen is not None and self.last_seen > age_as_of:
            age, age_as_of = age + (self.last_seen - age_as_of), self.last_seen
        return GateView(
            device_id=self.device_id, site_id=self.site_id, gate=self.gate, direction=self.direction,
            state=self.state, stale=self.stale, last_seen=self.last_seen, online_since=self.online_since,
            offline_since=self.offline_since, offline_cause=self.offline_cause, software=self.software,
            config_hash=self.config_hash, trust_list_version=self.trust_list_version, trust_list_age_s=age,
            trust_list_age_as_of=age_as_of if age is not None else None, trust_stale=self.trust_stale,
            clock_synced=self.clock_synced, clock_unsynced_since=self.clock_unsynced_since, pending=self.pending,
            pending_history=tuple(self.pending_history), oldest_pending_s=self.oldest_pending_s,
            frames_per_s=self.frames_per_s, disk_free_bytes=self.disk_free_bytes,
            disk_total_bytes=self.disk_total_bytes, cpu_temp_c=self.cpu_temp_c, uptime_s=self.uptime_s,
            last_error=self.last_error, storage_error=self.storage_error, outbox_over_limit=self.outbox_over_limit,
            status_at=self.status_at, telemetry_at=self.telemetry_at, last_checkin_at=self.last_checkin_at,
            last_verdict=self.last_verdict, rejections_in_row=self.rejections_in_row,
            rejections_since=self.rejections_since,
        )
