"""What the gate says about itself: the retained ``wire.DeviceStatus`` (with the availability string, on connecting
and on leaving, and again when the outbox's storage condition changed) and the periodic ``wire.Telemetry``.

Every ``telemetry_interval_s`` while connected, starting right after the birth (the backlog an outage left is
news), the publisher sends telemetry: QoS 1, not retained, never queued while offline (the next one supersedes
it). Each report adds what the gate's service supplies (``status_details``, ``telemetry_details``); a failing
supplier is logged and the report goes without its figures, so a bug there never silences the link. The board's
own figures (the file system's size, the SoC temperature) are read here, at report time only.

The province's hello (``wire.PROVINCE_HELLO_TOPIC``: its operations service restarted and knows nothing) is
answered with the availability, the retained status and a telemetry report, after a random delay of up to
``hello_jitter_s``: every gate of the province receives the same hello at the same instant, and their answers
must not arrive together. At most one answer per ``HELLO_ANSWER_EVERY_S``, whoever says hello how often.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from .. import wire
from ..outbox import Outbox, OutboxHealth
from .health import UplinkHealth
from .session import Session, Topics

log = logging.getLogger(__name__)

Details = Callable[[], Mapping[str, object]]

# The SoC's temperature in millidegrees Celsius (Raspberry Pi OS, most ARM boards); absent on many PCs.
CPU_THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
HELLO_ANSWER_EVERY_S = 30.0  # a hello within this long of the previous answer is not answered again


def read_cpu_temp_c(path: Path = CPU_THERMAL_ZONE) -> float | None:
    """The SoC's temperature in degrees Celsius, or None where the board has no such sensor (or it cannot be read)."""
    try:
        millidegrees = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return round(millidegrees / 1000.0, 1)


def disk_total_bytes(directory: Path) -> int | None:
    """Size of the file system holding ``directory`` (None when it cannot be read)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return stat.f_blocks * stat.f_frsize


class CounterRate:
    """How fast a counter grew between two readings, per second: e.g. decoded frames, read at telemetry time only,
    so the per-frame path keeps just its ``+= 1``."""

    def __init__(self, count: int = 0, at: float | None = None) -> None:
        self._count = count
        self._at = time.monotonic() if at is None else at

    def per_second(self, count: int, now: float) -> float | None:
        """The rate since the previous reading (None when no time has passed, or the counter went back)."""
        elapsed, grown = now - self._at, count - self._count
        if elapsed <= 0:
            return None
        self._count, self._at = count, now
        return round(grown / elapsed, 2) if grown >= 0 else None


def storage_condition(health: OutboxHealth) -> tuple[bool, bool]:
    """(over its limit, a storage fault): a change of either is worth a new retained status."""
    return health.over_limit, health.storage_error is not None


class Reporter:
    """Builds and publishes one gate's status and telemetry on a session's client."""

    def __init__(self, outbox: Outbox, health: UplinkHealth, topics: Topics, *, device_id: str,
                 software_version: str | None, end_to_end: bool, telemetry_interval_s: float | None,
                 status_details: Details | None = None, telemetry_details: Details | None = None,
                 hello_jitter_s: float = 0.0, rng: random.Random | None = None,
                 cpu_thermal_zone: Path = CPU_THERMAL_ZONE) -> None:
        self._outbox = outbox
        self._health = health
        self._topics = topics
        self._device_id = device_id
        self._software_version = software_version
        self._end_to_end = end_to_end
        self._telemetry_interval_s = telemetry_interval_s  # None: no telemetry
        self._status_details = status_details
        self._telemetry_details = telemetry_details
        self._hello_jitter_s = hello_jitter_s
        self._rng = rng or random.Random()
        self._cpu_thermal_zone = cpu_thermal_zone
        self._hello_answered_at = -math.inf  # monotonic; across connections: the rate limit is the gate's
        self.started_at = time.monotonic()  # telemetry's uptime counts from here; Uplink.start() resets it

    def presence(self, session: Session, state: Literal["online", "offline"]) -> list[int]:
        """Retained availability string and status JSON; returns their message ids."""
        status = self._status(session, state, self._outbox.health())
        mids = []
        for topic, payload in ((self._topics.availability, state.encode()), (self._topics.status, status)):
            mids.append(session.client.publish(topic, payload, qos=wire.QOS, retain=True).mid)
        return mids

    def first_telemetry(self, session: Session, now: float) -> None:
        if self._telemetry_interval_s is not None:
            session.next_telemetry = now

    def hello(self, session: Session, payload: bytes, now: float) -> None:
        """The province said hello: schedule this session's answer (see the module's text), or count why not."""
        try:
            wire.ProvinceHello.from_json(payload)
        except ValidationError:
            self._health.count_hello("malformed")
            log.debug("ignored a malformed message on %s", wire.PROVINCE_HELLO_TOPIC)
            return
        if session.hello_answer_at != math.inf or now - self._hello_answered_at < HELLO_ANSWER_EVERY_S:
            self._health.count_hello("ignored")
            return
        session.hello_answer_at = now + self._rng.uniform(0.0, self._hello_jitter_s)

    def answer_hello_if_due(self, session: Session, now: float) -> None:
        if now < session.hello_answer_at:
            return
        session.hello_answer_at = math.inf
        self._hello_answered_at = now
        session.control_mids.update(self.presence(session, wire.ONLINE))
        if self._telemetry_interval_s is not None:  # a gate configured without telemetry sends none on a hello either
            telemetry = self._telemetry(self._outbox.health())
            session.control_mids.add(session.client.publish(self._topics.telemetry, telemetry, qos=wire.QOS).mid)
        self._health.count_hello("answered")

    def report_if_due(self, session: Session, now: float) -> None:
        """The hello's answer when it is due; telemetry when it is due; the retained status again when the storage
        condition changed."""
        self.answer_hello_if_due(session, now)
        if now < session.next_telemetry or self._telemetry_interval_s is None:
            return
        session.next_telemetry = now + self._telemetry_interval_s
        health = self._outbox.health()
        client = session.client
        if storage_condition(health) != session.reported_storage:
            status = self._status(session, wire.ONLINE, health)
            session.control_mids.add(client.publish(self._topics.status, status, qos=wire.QOS, retain=True).mid)
        telemetry = self._telemetry(health)
        session.control_mids.add(client.publish(self._topics.telemetry, telemetry, qos=wire.QOS).mid)

    def _status(self, session: Session, state: Literal["online", "offline"], outbox: OutboxHealth) -> bytes:
        fields: dict[str, object] = dict(
            device_id=self._device_id, state=state, time=wire.iso_utc(time.time()), software=self._software_version,
            pending=outbox.pending, outbox_over_limit=outbox.over_limit, storage_error=outbox.storage_error,
        )
        if self._status_details is not None:
            try:
                fields.update(self._status_details())
            except Exception:
                log.exception("status details failed")
        session.reported_storage = storage_condition(outbox)
        return wire.DeviceStatus.model_validate(fields).to_json()

    def _telemetry(self, outbox: OutboxHealth) -> bytes:
        fields = self._health.counters()
        oldest = outbox.oldest_pending_wall
        fields.update(
            device_id=self._device_id, time=wire.iso_utc(time.time()), uptime_s=int(time.monotonic() - self.started_at),
            pending=outbox.pending, awaiting_ack=outbox.awaiting_ack if self._end_to_end else None,
            oldest_pending_s=None if oldest is None else max(0, int(time.time() - oldest)),
            outbox_bytes=outbox.size_bytes, outbox_max_bytes=outbox.max_bytes, outbox_over_limit=outbox.over_limit,
            disk_free_bytes=outbox.disk_free_bytes, storage_error=outbox.storage_error,
            disk_total_bytes=disk_total_bytes(self._outbox.path.parent),
            cpu_temp_c=read_cpu_temp_c(self._cpu_thermal_zone),
        )
        if self._telemetry_details is not None:
            try:
                fields.update(self._telemetry_details())
            except Exception:
                log.exception("telemetry details failed")
        return wire.Telemetry.model_validate(fields).to_json()
