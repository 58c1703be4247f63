"""What the gate says about itself: the retained ``wire.DeviceStatus`` (with the availability string, on connecting
and on leaving, and again when the outbox's storage condition changed) and the periodic ``wire.Telemetry``.

Every ``telemetry_interval_s`` while connected, starting right after the birth (the backlog an outage left is
news), the publisher sends telemetry: QoS 1, not retained, never queued while offline (the next one supersedes
it). Each report adds what the gate's service supplies (``status_details``, ``telemetry_details``); a failing
supplier is logged and the report goes without its figures, so a bug there never silences the link.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Literal

from .. import wire
from ..outbox import Outbox, OutboxHealth
from .health import UplinkHealth
from .session import Session, Topics

log = logging.getLogger(__name__)

Details = Callable[[], Mapping[str, object]]


def storage_condition(health: OutboxHealth) -> tuple[bool, bool]:
    """(over its limit, a storage fault): a change of either is worth a new retained status."""
    return health.over_limit, health.storage_error is not None


class Reporter:
    """Builds and publishes one gate's status and telemetry on a session's client."""

    def __init__(self, outbox: Outbox, health: UplinkHealth, topics: Topics, *, device_id: str,
                 software_version: str | None, end_to_end: bool, telemetry_interval_s: float | None,
                 status_details: Details | None = None, telemetry_details: Details | None = None) -> None:
        self._outbox = outbox
        self._health = health
        self._topics = topics
        self._device_id = device_id
        self._software_version = software_version
        self._end_to_end = end_to_end
        self._telemetry_interval_s = telemetry_interval_s  # None: no telemetry
        self._status_details = status_details
        self._telemetry_details = telemetry_details
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

    def report_if_due(self, session: Session, now: float) -> None:
        """Telemetry when it is due; the retained status again when the storage condition changed."""
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
        )
        if self._telemetry_details is not None:
            try:
                fields.update(self._telemetry_details())
            except Exception:
                log.exception("telemetry details failed")
        return wire.Telemetry.model_validate(fields).to_json()
