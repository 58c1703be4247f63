"""Telemetry, and the outbox's limit and storage faults reported in status and telemetry; never a
dropped event. Real Mosquitto, real SQLite, a real full file system."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_helpers import (
    DEVICE_ID,
    Subscriber,
    make_event,
    retained,
    uplink_for,
    wait_until,
)
from qrgate import wire
from qrgate.errors import OutboxFull
from qrgate.outbox import Outbox
from qrgate.uplink import Uplink
from qrgate_tools.broker import MosquittoBroker

CHECKINS = wire.checkin_topic(DEVICE_ID)
STATUS = wire.status_topic(DEVICE_ID)
TELEMETRY = wire.telemetry_topic(DEVICE_ID)


def telemetry_uplink(outbox: Outbox, broker: MosquittoBroker, **overrides: object) -> Uplink:
    """An uplink that reports every 0.2 s, so a test sees several reports within a second."""
    return uplink_for(outbox, broker, **{"telemetry_interval_s": 0.2, **overrides})


def reports(subscriber: Subscriber) -> list[wire.Telemetry]:
    return [wire.Telemetry.from_json(m.payload) for m in subscriber.on(TELEMETRY)]


def test_telemetry_is_sent_periodically_with_outbox_link_and_gate_figures(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=50 * 1024 * 1024) as outbox:
        for _ in range(5):
            outbox.append(make_event)
        with (
            Subscriber(broker.host, broker.port, [TELEMETRY]) as subscriber,
            telemetry_uplink(outbox, broker, telemetry_details=lambda: {"accepted": 4, "rejected": 1}) as uplink,
        ):
            wait_until(lambda: len(reports(subscriber)) >= 3, 5, "three telemetry reports")
            wait_until(lambda: uplink.stats.delivered == 5, 5, "delivery")
            wait_until(lambda: reports(subscriber)[-1].delivered == 5, 5, "a report after delivery")
        first, last = reports(subscriber)[0], reports(subscriber)[-1]
        assert not any(m.retain for m in subscriber.on(TELEMETRY))
    assert first.device_id == DEVICE_ID and first.pending == 5 and first.oldest_pending_s is not None
    assert last.pending == 0 and last.oldest_pending_s is None and last.sent == 5 and last.refused == 0
    assert last.outbox_max_bytes == 50 * 1024 * 1024 and last.outbox_over_limit is False and last.outbox_bytes > 0
    assert last.disk_free_bytes > 0 and last.storage_error is None
    assert (last.accepted, last.rejected) == (4, 1)
    assert last.awaiting_ack is None  # end-to-end acks are off


def test_an_outbox_over_its_limit_is_reported_and_still_delivers_everything(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    with Outbox(tmp_path / "outbox.sqlite", max_bytes=16 * 1024) as outbox:
        ids = [outbox.append(make_event).event_id for _ in range(100)]
        assert outbox.over_limit
        with Subscriber(broker.host, broker.port, [CHECKINS, TELEMETRY]) as subscriber:
            with telemetry_uplink(outbox, broker):
                wait_until(lambda: outbox.pending_count() == 0, 10, "delivery of all 100")
                wait_until(lambda: reports(subscriber), 5, "a telemetry report")
                status = wire.DeviceStatus.from_json(retained(broker.host, broker.port, STATUS).payload)
            wait_until(lambda: len(subscriber.checkins()) == 100, 5, "100 check-ins")
    assert status.outbox_over_limit is True
    assert reports(subscriber)[0].outbox_over_limit is True
    assert [e.event_id for e in subscriber.checkins()] == ids  # the limit drops nothing


def test_a_full_disk_is_reported_in_status_and_telemetry_and_cleared_when_space_returns(
    broker: MosquittoBroker, small_filesystem: Path
) -> None:
    ballast = small_filesystem / "ballast"
    with Outbox(small_filesystem / "outbox.sqlite") as outbox:
        stored = [outbox.append(make_event).event_id for _ in range(3)]
        with Subscriber(broker.host, broker.port, [CHECKINS, STATUS, TELEMETRY]) as subscriber:
            with telemetry_uplink(outbox, broker) as uplink:
                wait_until(lambda: uplink.stats.delivered == 3, 5, "the stored events delivered")
                with pytest.raises(OSError, match="No space left"), open(ballast, "ab") as grow:
                    while True:
                        grow.write(b"\0" * 4096)
                        grow.flush()
                with pytest.raises(OutboxFull):  # the visitor sees red: storage_error
                    for _ in range(50):
                        outbox.append(make_event)

                def statuses() -> list[wire.DeviceStatus]:
                    return [wire.DeviceStatus.from_json(m.payload) for m in subscriber.on(STATUS)]

                wait_until(lambda: any(s.storage_error for s in statuses()), 5, "a status naming the fault")
                wait_until(lambda: any(r.storage_error for r in reports(subscriber)), 5, "telemetry naming it")
                assert "disk is full" in next(s for s in statuses() if s.storage_error).storage_error
                assert next(r for r in reports(subscriber) if r.storage_error).disk_free_bytes < 8192

                ballast.unlink()
                stored.append(outbox.append(make_event).event_id)
                uplink.wake()
                wait_until(lambda: statuses()[-1].storage_error is None, 5, "a status without the fault")
                wait_until(lambda: outbox.pending_count() == 0, 5, "delivery after the fault")
            wait_until(lambda: len(subscriber.checkins()) == 4, 5, "4 check-ins")
    assert [e.event_id for e in subscriber.checkins()] == stored
    assert all(m.retain is False for m in subscriber.on(TELEMETRY))
