"""The daily report's figures from the database: a handful of queries, each one pass over a table.

- the day's check-ins: one aggregate grouped by site over the ``checkins_time`` index (at two million
  check-ins a day this is the one heavy query, and it is a single scan);
- the gates heard during the day: ``presence.heard_between``;
- when the judged places' gates were online: their last presence transition before the day and their
  transitions within it, fetched for every gate at once (an index probe per gate) and turned into intervals by
  ``presence.intervals_from``; what ``presence.online_intervals`` does for one gate, without a query per gate;
- the registry's places and gates.

Python then loops over places and gates (tens of thousands), never over events.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from . import presence
from .queries import as_int, day_bounds
from .registry import Place, place_of_row
from .report import AreaFigures, DailyReport, PlaceFigures, ReasonCode, ScanCounts, describe

if TYPE_CHECKING:
    import psycopg

Interval = tuple[dt.datetime, dt.datetime]

_SCANS_BY_SITE = (
    "SELECT site_id, count(*), count(*) FILTER (WHERE verdict = 'accepted'), "
    "count(*) FILTER (WHERE verdict = 'rejected'), count(*) FILTER (WHERE verdict = 'identified'), "
    "count(*) FILTER (WHERE direction = 'in'), count(*) FILTER (WHERE direction = 'out'), "
    "count(*) FILTER (WHERE NOT clock_synced) "
    "FROM checkins WHERE time >= %s AND time < %s GROUP BY site_id"
)
# The state of each judged gate when the day starts: its last transition before (none: offline, never heard).
_STATE_AT_START = (
    "SELECT g.device_id, last.online FROM gates g JOIN places p ON p.place_id = g.place_id "
    "LEFT JOIN LATERAL (SELECT online FROM gate_presence gp WHERE gp.device_id = g.device_id AND gp.at <= %(s)s "
    "                   ORDER BY gp.at DESC LIMIT 1) AS last ON true "
    "WHERE p.gate_required"
)
_CHANGES_IN_DAY = (
    "SELECT gp.device_id, gp.at, gp.online FROM gates g JOIN places p ON p.place_id = g.place_id "
    "JOIN gate_presence gp ON gp.device_id = g.device_id AND gp.at > %(s)s AND gp.at < %(e)s "
    "WHERE p.gate_required ORDER BY gp.device_id, gp.at"
)


def gather(conn: psycopg.Connection[tuple[object, ...]], day: dt.date, zone: ZoneInfo,
           offline_limit_h: float) -> DailyReport:
    """The report of the local day ``day`` in ``zone``."""
    start, end = day_bounds(day, zone)
    places = [place_of_row(row) for row in conn.execute(
        "SELECT place_id, name, kind, commune, district, address, gate_required, opening_hours FROM places "
        "ORDER BY district, commune, name, place_id").fetchall()]
    gates_of: dict[str, list[str]] = defaultdict(list)
    for device_id, place_id in conn.execute("SELECT device_id, place_id FROM gates").fetchall():
        gates_of[str(place_id)].append(str(device_id))
    scans, unsynced = _scans_by_site(conn, start, end)
    heard = presence.heard_between(conn, start, end)
    online = _online_intervals(conn, start, end)
    rows = [_place_figures(place, gates_of.get(place.place_id, []), scans.get(place.place_id, ScanCounts()),
                           unsynced.get(place.place_id, 0), heard, online, day, zone, offline_limit_h)
            for place in places]
    registered_ids = {place.place_id for place in places}
    registered_devices = {device for devices in gates_of.values() for device in devices}
    non_complying = [row for row in rows if row.reasons]
    return DailyReport(
        day=day, timezone=zone.key, start=start, end=end, built_at=dt.datetime.now(dt.UTC),
        offline_hours_limit=offline_limit_h,
        places_registered=len(places),
        places_requiring_gate=sum(place.gate_required for place in places),
        places_with_gate=sum(1 for row in rows if row.gates_registered),
        places_non_complying=len(non_complying),
        gates_registered=len(registered_devices),
        gates_working=len(heard & registered_devices),
        unregistered_devices_heard=len(heard - registered_devices),
        scans=_total(scans.values()),
        scans_unregistered=_total(counts for site, counts in scans.items() if site not in registered_ids),
        districts=_areas(rows, by_commune=False),
        communes=_areas(rows, by_commune=True),
        non_complying=non_complying,
        places=rows,
    )


def _scans_by_site(conn: psycopg.Connection[tuple[object, ...]], start: dt.datetime,
                   end: dt.datetime) -> tuple[dict[str, ScanCounts], dict[str, int]]:
    scans: dict[str, ScanCounts] = {}
    unsynced: dict[str, int] = {}
    for site_id, *counts in conn.execute(_SCANS_BY_SITE, (start, end)).fetchall():
        total, accepted, rejected, identified, inbound, outbound, not_synced = (as_int(value) for value in counts)
        scans[str(site_id)] = ScanCounts(total=total, accepted=accepted, rejected=rejected, identified=identified,
                                         inbound=inbound, outbound=outbound)
        unsynced[str(site_id)] = not_synced
    return scans, unsynced


def _online_intervals(conn: psycopg.Connection[tuple[object, ...]], start: dt.datetime,
                      end: dt.datetime) -> dict[str, list[Interval]]:
    """Per gate of a place that must have one: when in ``[start, end)`` it was online."""
    bounds = {"s": start, "e": end}
    at_start = {str(device): bool(online) for device, online in conn.execute(_STATE_AT_START, bounds).fetchall()}
    changes: dict[str, list[tuple[dt.datetime, bool]]] = defaultdict(list)
    for device, at, online in conn.execute(_CHANGES_IN_DAY, bounds).fetchall():
        assert isinstance(at, dt.datetime)
        changes[str(device)].append((at, bool(online)))
    return {device: presence.intervals_from(online_then, start, end, changes.get(device, []))
            for device, online_then in at_start.items()}


def _place_figures(place: Place, devices: list[str], scans: ScanCounts, unsynced: int, heard: set[str],
                   online: dict[str, list[Interval]], day: dt.date, zone: ZoneInfo,
                   offline_limit_h: float) -> PlaceFigures:
    windows = place.opening_hours.windows(day, zone)
    open_s = sum((window_end - window_start).total_seconds() for window_start, window_end in windows)
    offline_s: float | None = None
    reasons: list[ReasonCode] = []
    if place.gate_required:
        if not devices:
            reasons.append("no_gate")
        else:
            # The place can scan while any one of its gates is online: the union of their intervals.
            any_online = union(interval for device in devices for interval in online.get(device, []))
            offline_s = open_s - presence.overlap_s(any_online, windows)
            if offline_s > offline_limit_h * 3600:
                reasons.append("gate_offline")
            if scans.total == 0:
                reasons.append("no_scans")
        if scans.total and not scans.admitted:
            reasons.append("only_rejections")
        if unsynced:
            reasons.append("clock_unsynchronised")
    figures = PlaceFigures(
        place_id=place.place_id, name=place.name, kind=place.kind, district=place.district, commune=place.commune,
        gate_required=place.gate_required, opening_hours=str(place.opening_hours), open_hours=round(open_s / 3600, 3),
        gates_registered=len(devices), gates_working=sum(1 for device in devices if device in heard), scans=scans,
        unsynced_checkins=unsynced, offline_hours=None if offline_s is None else round(offline_s / 3600, 3),
        reasons=reasons, offline_limit_h=offline_limit_h,
    )
    if not reasons:
        return figures
    return figures.model_copy(update={"details": {code: describe(figures, code, "en") for code in reasons}})


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """The intervals merged into disjoint ones, in order."""
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _total(counts: Iterable[ScanCounts]) -> ScanCounts:
    sums = dict.fromkeys(ScanCounts.model_fields, 0)
    for scans in counts:  # field by field: one model at the end, not one per addition
        for name in sums:
            sums[name] += getattr(scans, name)
    return ScanCounts.model_validate(sums)


def _areas(rows: list[PlaceFigures], *, by_commune: bool) -> list[AreaFigures]:
    groups: dict[tuple[str, str | None], list[PlaceFigures]] = defaultdict(list)
    for row in rows:
        groups[(row.district, row.commune if by_commune else None)].append(row)
    return [
        AreaFigures(
            district=district, commune=commune, places_registered=len(members),
            places_requiring_gate=sum(row.gate_required for row in members),
            places_with_gate=sum(1 for row in members if row.gates_registered),
            places_non_complying=sum(1 for row in members if row.reasons),
            gates_registered=sum(row.gates_registered for row in members),
            gates_working=sum(row.gates_working for row in members),
            scans=_total(row.scans for row in members),
        )
        for (district, commune), members in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    ]
