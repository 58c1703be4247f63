"""The daily reports kept in PostgreSQL: one row per day, its JSON as built (the dashboard's report pages read
them from here; building a day again replaces its row, as ``qrgate-province report --day D`` does)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from .report import DailyReport

if TYPE_CHECKING:
    import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS daily_reports (
    day      date PRIMARY KEY,
    built_at timestamptz NOT NULL,
    body     jsonb NOT NULL
);
"""


def save_report(conn: psycopg.Connection[tuple[object, ...]], report: DailyReport) -> None:
    """Store the report of its day, replacing an earlier build of the same day."""
    conn.execute(
        "INSERT INTO daily_reports (day, built_at, body) VALUES (%s, %s, %s::jsonb) "
        "ON CONFLICT (day) DO UPDATE SET built_at = EXCLUDED.built_at, body = EXCLUDED.body",
        (report.day, report.built_at, report.to_json().decode()),
    )


def load_report(conn: psycopg.Connection[tuple[object, ...]], day: dt.date) -> DailyReport | None:
    """The stored report of ``day``, or None if none was built."""
    row = conn.execute("SELECT body::text FROM daily_reports WHERE day = %s", (day,)).fetchone()
    return DailyReport.from_json(str(row[0])) if row else None


def list_reports(conn: psycopg.Connection[tuple[object, ...]], limit: int = 60) -> list[tuple[dt.date, dt.datetime]]:
    """The days with a report and when each was built, the latest day first."""
    rows = conn.execute("SELECT day, built_at FROM daily_reports ORDER BY day DESC LIMIT %s", (limit,)).fetchall()
    result = []
    for day, built_at in rows:
        assert isinstance(day, dt.date) and isinstance(built_at, dt.datetime)
        result.append((day, built_at))
    return result
