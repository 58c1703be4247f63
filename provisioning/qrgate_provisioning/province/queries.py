"""What a place's page asks of the check-ins: the day's counts per hour and direction, the people inside now, and
the anti-passback flags. Each is one SQL query over the ``checkins_site_time`` index (registry.SCHEMA).

Definitions (docs/operators.md says the same):

- an *entry* is an admitted check-in (verdict ``accepted`` or ``identified``) at an ``in`` gate; an *exit* the
  same at an ``out`` gate. A rejected scan lets nobody through, so it is neither;
- a *person* is the pass's pseudonymous subject id, or its pass id when the event has none (a chip ID card
  admitted by policy): someone holding two passes is still one person;
- *inside now* is a person whose last entry or exit at the place since a moment (the start of the day) was an
  entry;
- an *anti-passback flag* is an entry by a person whose previous passage at the place in the same period was
  also an entry (in again without an exit between). It is flagged, never refused: the gate let the person in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    import psycopg

ADMITTED = "verdict IN ('accepted', 'identified')"
PERSON = "coalesce(subject_id, pass_id)"


@dataclass(frozen=True, slots=True)
class HourCounts:
    """One local hour of a place's day (``hour`` 0-23): entries, exits, and every scan by verdict."""

    hour: int
    entries: int
    exits: int
    accepted: int
    rejected: int
    identified: int


def day_bounds(day: dt.date, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The local day ``day`` in ``zone`` as aware UTC ``[start, end)``."""
    start = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def place_hours(conn: psycopg.Connection[tuple[object, ...]], place_id: str, day: dt.date,
                zone: ZoneInfo) -> list[HourCounts]:
    """The 24 local hours of the place's day, in order (an hour without check-ins has zeros)."""
    start, end = day_bounds(day, zone)
    rows = conn.execute(
        "SELECT extract(hour FROM time AT TIME ZONE %(zone)s)::int, "
        f"count(*) FILTER (WHERE direction = 'in' AND {ADMITTED}), "
        f"count(*) FILTER (WHERE direction = 'out' AND {ADMITTED}), "
        "count(*) FILTER (WHERE verdict = 'accepted'), count(*) FILTER (WHERE verdict = 'rejected'), "
        "count(*) FILTER (WHERE verdict = 'identified') "
        "FROM checkins WHERE site_id = %(place)s AND time >= %(start)s AND time < %(end)s GROUP BY 1",
        {"zone": zone.key, "place": place_id, "start": start, "end": end},
    ).fetchall()
    by_hour = {as_int(row[0]): [as_int(value) for value in row[1:]] for row in rows}
    return [HourCounts(hour, *by_hour.get(hour, [0] * 5)) for hour in range(24)]


def people_inside(conn: psycopg.Connection[tuple[object, ...]], place_id: str, since: dt.datetime) -> int:
    """People whose last entry or exit at the place since ``since`` was an entry."""
    row = conn.execute(
        "SELECT count(*) FROM ("
        f"  SELECT DISTINCT ON ({PERSON}) direction FROM checkins "
        f"  WHERE site_id = %s AND time >= %s AND {ADMITTED} AND {PERSON} IS NOT NULL "
        f"  ORDER BY {PERSON}, time DESC, event_id DESC"
        ") AS last_passage WHERE direction = 'in'",
        (place_id, since),
    ).fetchone()
    return as_int(row[0]) if row else 0


def passback_flags(conn: psycopg.Connection[tuple[object, ...]], place_id: str, start: dt.datetime,
                   end: dt.datetime) -> int:
    """Entries in ``[start, end)`` by a person whose previous passage there in that period was an entry too."""
    row = conn.execute(
        "SELECT count(*) FROM ("
        f"  SELECT direction, lag(direction) OVER (PARTITION BY {PERSON} ORDER BY time, event_id) AS previous "
        f"  FROM checkins WHERE site_id = %s AND time >= %s AND time < %s AND {ADMITTED} AND {PERSON} IS NOT NULL"
        ") AS passages WHERE direction = 'in' AND previous = 'in'",
        (place_id, start, end),
    ).fetchone()
    return as_int(row[0]) if row else 0


def as_int(value: object) -> int:
    """A count from a row (psycopg types rows as objects)."""
    if not isinstance(value, int):
        raise TypeError(f"expected a count from PostgreSQL, got {value!r}")
    return value
