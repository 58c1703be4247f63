"""What the consumer asks of a store, and the one table every store keeps.

A store is idempotent by event id and durable when ``store`` returns: the consumer acknowledges
(to the broker and to the device) only after that, so a store that returned early could lose an
event every side believes delivered. Both stores (``sqlite_store``, ``postgres_store``) keep the
columns below; the payload column holds the JSON as received, so fields of later schema versions
are kept even where no column names them yet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from qrgate import wire

from .summary import SiteDay

# Column order of every INSERT; ``checkin_row`` yields the values in this order.
CHECKIN_COLUMNS = ("event_id, device_id, seq, site_id, gate, direction, time, clock_synced, verdict, reason, "
                   "format, issuer, pass_id, subject_id, received_at, payload")
CHECKIN_COLUMN_COUNT = 16


class EventStore(Protocol):
    """Where the consumer keeps check-ins: idempotent by event id, durable when ``store`` returns."""

    def store(self, events: Sequence[tuple[wire.CheckinEvent, bytes]], received_at: float) -> int:
        """Insert the events not stored yet, in one transaction; returns how many were new."""
        ...

    def daily_summary(self, start_utc: dt.datetime, end_utc: dt.datetime) -> list[SiteDay]:
        """Per site, the check-ins decided in ``[start_utc, end_utc)``."""
        ...

    def close(self) -> None: ...


def checkin_row(event: wire.CheckinEvent, raw: bytes, received_at: str) -> tuple[object, ...]:
    """One event's values in ``CHECKIN_COLUMNS`` order; ``raw`` is the payload as it arrived."""
    return (
        event.event_id, event.device_id, event.seq, event.site_id, event.gate, event.direction, event.time,
        event.clock_synced, event.verdict, event.reason, event.format, event.issuer, event.pass_id,
        event.subject_id, received_at, raw.decode("utf-8"),
    )
