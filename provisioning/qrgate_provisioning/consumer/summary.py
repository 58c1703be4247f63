"""The morning's summary: per site, the check-ins of one local day, as the authorities read it.

A check-in belongs to the day of the time the gate decided, not of the time it reached the
province: a gate that was offline overnight delivers yesterday's check-ins into yesterday.
Days are local to the authorities' time zone, so their bounds are computed in that zone and the
stores are asked for the UTC instants in between (``qrgate-issuer consumer summary``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store module imports SiteDay from here
    from .store import EventStore


@dataclass(frozen=True, slots=True)
class SiteDay:
    """One site's line in the daily summary."""

    site_id: str
    checkins: int
    accepted: int
    rejected: int
    devices_seen: tuple[str, ...]


def local_day_bounds(day: dt.date, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants where the local ``day`` in ``zone`` starts and the next one starts."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def daily_summary(store: EventStore, day: dt.date, zone: dt.tzinfo = dt.UTC) -> list[SiteDay]:
    """Per site: the check-ins the gates decided on the local ``day``, accepted, rejected, devices seen."""
    return store.daily_summary(*local_day_bounds(day, zone))
