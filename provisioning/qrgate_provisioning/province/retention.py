"""Retention: check-ins older than the configured number of days (default 28, by the time of the check-in) are
purged from the store, and each purge is reported and recorded in ``retention_runs``.

The rows go in batches of ``batch_size``, each its own short transaction, oldest first: one giant DELETE would hold
its locks (and its WAL) for as long as it takes, while the consumer is storing new check-ins into the same table.

**Not yet exported.** Retention is the law: a check-in past the limit is purged whether or not the national system
has acknowledged it, and the report says how many of the purged rows were never exported (after the last
acknowledged batch in the export's order), so that a dead export shows up instead of the store keeping people's
movements for ever. The count is taken against the acknowledgement at the start of the run, so an export running
at the same time can only make it too high, never too low.

**Derived copies.** A trace keeps nothing (its result is shown or downloaded, never stored); the one copy of
check-ins outside ``checkins`` is the bytes of an export batch waiting for its acknowledgement: a pending batch
whose check-ins are all past the limit is expired (its bytes dropped; the export moves on after it). The audit log
keeps the ids a tracer asked for: it is the record of who looked at whom, and is not purged here.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ..errors import ProvinceError
from .export import expire_batches, exported_position

if TYPE_CHECKING:
    import psycopg

    from .db import Database

    _Connection = psycopg.Connection[tuple[object, ...]]

SCHEMA = """
CREATE TABLE IF NOT EXISTS retention_runs (
    id              bigserial PRIMARY KEY,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    days            integer NOT NULL,
    cutoff          timestamptz NOT NULL,
    dry_run         boolean NOT NULL,
    deleted         bigint NOT NULL,
    never_exported  bigint NOT NULL,
    expired_batches integer NOT NULL,
    per_day         jsonb NOT NULL
);
"""

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"  # the days of the report are the authorities' local days


@dataclass(frozen=True, slots=True)
class DayCount:
    """The check-ins of one local day that a purge removed (or, in a dry run, would remove)."""

    day: dt.date
    deleted: int
    never_exported: int


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """One purge: what went, per local day of the check-ins, and what of it had never reached the national
    system."""

    run_id: int
    days: int
    cutoff: dt.datetime
    dry_run: bool
    per_day: tuple[DayCount, ...]
    expired_batches: int

    @property
    def deleted(self) -> int:
        return sum(day.deleted for day in self.per_day)

    @property
    def never_exported(self) -> int:
        return sum(day.never_exported for day in self.per_day)

    def text(self) -> str:
        """The report as the command prints it."""
        verb = "would purge" if self.dry_run else "purged"
        lines = [f"{verb} {self.deleted} check-in(s) older than {self.days} day(s) (before "
                 f"{self.cutoff.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC); never exported: {self.never_exported}"]
        lines += [f"  {day.day.isoformat()}  {day.deleted:>9}  never exported {day.never_exported}"
                  for day in self.per_day]
        if self.expired_batches:
            lines.append(f"{'would expire' if self.dry_run else 'expired'} {self.expired_batches} unacknowledged "
                         "export batch(es) holding only such check-ins")
        return "\n".join(lines)


def purge(database: Database, days: int, *, now: dt.datetime | None = None, dry_run: bool = False,
          batch_size: int = 5000, timezone: str = DEFAULT_TIMEZONE) -> PurgeReport:
    """Delete the check-ins decided more than ``days`` days before ``now`` (default: the current time), in batches;
    a dry run only counts them. Either way the run is recorded in ``retention_runs``."""
    import psycopg

    try:
        return _purge(database, days, now, dry_run, batch_size, timezone)
    except psycopg.Error as exc:
        raise ProvinceError(f"purge: PostgreSQL: {exc}") from exc


def _purge(database: Database, days: int, now: dt.datetime | None, dry_run: bool, batch_size: int,
           timezone: str) -> PurgeReport:
    if days < 1:
        raise ProvinceError(f"retention keeps at least 1 day, not {days}")
    if batch_size < 1:
        raise ProvinceError(f"a purge deletes at least 1 row per batch, not {batch_size}")
    started = dt.datetime.now(dt.UTC)
    now = now if now is not None else started
    if now.tzinfo is None:
        raise ProvinceError("the purge's 'now' must carry its time zone")
    cutoff = now - dt.timedelta(days=days)
    with database.connection() as connection:
        position = exported_position(connection)
    unexported, values = _unexported(position)
    values |= {"cutoff": cutoff, "tz": timezone, "limit": batch_size}
    counts: dict[dt.date, list[int]] = {}
    if dry_run:
        with database.connection() as connection:
            _add(counts, connection.execute(
                f"SELECT (time AT TIME ZONE %(tz)s)::date, count(*), count(*) FILTER (WHERE {unexported}) "
                "FROM checkins WHERE time < %(cutoff)s GROUP BY 1", values).fetchall())
            expired = _count_expiring(connection, cutoff)
    else:
        while True:
            with database.connection() as connection:  # one short transaction per batch
                rows = connection.execute(
                    "WITH doomed AS (SELECT event_id FROM checkins WHERE time < %(cutoff)s ORDER BY time "
                    "LIMIT %(limit)s), gone AS (DELETE FROM checkins USING doomed "
                    f"WHERE checkins.event_id = doomed.event_id RETURNING checkins.time, {unexported} AS unexported) "
                    "SELECT (time AT TIME ZONE %(tz)s)::date, count(*), count(*) FILTER (WHERE unexported) "
                    "FROM gone GROUP BY 1", values).fetchall()
            _add(counts, rows)
            if sum(int(cast(int, row[1])) for row in rows) < batch_size:
                break
        with database.connection() as connection:
            expired = expire_batches(connection, cutoff)
    per_day = tuple(DayCount(day, deleted, never) for day, (deleted, never) in sorted(counts.items()))
    with database.connection() as connection:
        run_id = _record(connection, started, days, cutoff, dry_run, per_day, expired)
    return PurgeReport(run_id, days, cutoff, dry_run, per_day, expired)


def _unexported(position: tuple[str, str] | None) -> tuple[str, dict[str, object]]:
    """SQL that is true of a ``checkins`` row the national system has not acknowledged, and its parameters."""
    if position is None:
        return "true", {}
    return ("(checkins.ingest_xid, checkins.event_id) > (%(xid)s::text::xid8, %(event)s)",
            {"xid": position[0], "event": position[1]})


def _add(counts: dict[dt.date, list[int]], rows: list[tuple[object, ...]]) -> None:
    for day, deleted, never in rows:
        totals = counts.setdefault(cast(dt.date, day), [0, 0])
        totals[0] += int(cast(int, deleted))
        totals[1] += int(cast(int, never))


def _count_expiring(connection: _Connection, cutoff: dt.datetime) -> int:
    if connection.execute("SELECT to_regclass('export_batches')").fetchone() == (None,):
        return 0
    row = connection.execute("SELECT count(*) FROM export_batches WHERE state = 'pending' AND newest_time < %s",
                             (cutoff,)).fetchone()
    return int(cast(int, row[0])) if row else 0


def _record(connection: _Connection, started: dt.datetime, days: int, cutoff: dt.datetime, dry_run: bool,
            per_day: tuple[DayCount, ...], expired: int) -> int:
    detail = {day.day.isoformat(): {"deleted": day.deleted, "never_exported": day.never_exported} for day in per_day}
    row = connection.execute(
        "INSERT INTO retention_runs (started_at, finished_at, days, cutoff, dry_run, deleted, never_exported, "
        "expired_batches, per_day) VALUES (%s, now(), %s, %s, %s, %s, %s, %s, %s::jsonb) RETURNING id",
        (started, days, cutoff, dry_run, sum(d.deleted for d in per_day), sum(d.never_exported for d in per_day),
         expired, json.dumps(detail))).fetchone()
    return int(cast(int, row[0])) if row else 0
