"""The fleet table's rows as an operator reads them: every gate with its place and district from the registry,
its state in words (never colour alone), "last seen" beside every gate not online, and its figures formatted.

The page and its live updates build rows here, so a row that arrives by server-sent event is the same as one the
page was served with. Offline gates sort first (they are what the operator is looking for), then unknown ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from . import format as fmt
from .i18n import Language

if TYPE_CHECKING:
    from ..fleet import GateView
    from ..registry import Gate, Place
    from ..settings import AlertLimits

STATES = ("online", "offline", "unknown")
_STATE_ORDER = {"offline": 0, "unknown": 1, "online": 2}
MAX_ROWS = 1000  # one page of a province's 18 000 gates would be unreadable and slow: filter instead
HOT_C = 75.0  # a Pi 4 throttles at 80 °C; warn before


@dataclass(frozen=True, slots=True)
class FleetFilters:
    """The table's filters, from the query string (empty: no filter)."""

    district: str = ""
    place: str = ""
    state: str = ""

    @classmethod
    def of(cls, query: Mapping[str, str]) -> FleetFilters:
        state = query.get("state", "")
        return cls(query.get("district", "").strip(), query.get("place", "").strip(),
                   state if state in STATES else "")

    def query(self) -> dict[str, str]:
        return {key: value for key, value in (("district", self.district), ("place", self.place),
                                               ("state", self.state)) if value}


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One gate, every cell as text, with the flags that pick a cell's warning style."""

    device_id: str
    place_id: str
    place_name: str
    registered: bool
    district: str
    gate: str
    direction: str
    state: str
    state_label: str
    stale: bool
    last_seen: str
    software: str
    config_hash: str
    config_hash_short: str
    trust_list: str
    trust_list_old: bool
    clock: str
    clock_ok: bool
    backlog: str
    backlog_high: bool
    frames: str
    disk: str
    disk_low: bool
    temperature: str
    hot: bool
    error: str


@dataclass(frozen=True, slots=True)
class FleetTable:
    """The rows shown, and the counts of the whole filtered fleet."""

    rows: list[FleetRow]
    total: int
    by_state: dict[str, int]

    @property
    def truncated(self) -> bool:
        return len(self.rows) < self.total


def fleet_table(views: Iterable[GateView], places: Mapping[str, Place], gates: Mapping[str, Gate],
                filters: FleetFilters, t: Mapping[str, str], language: Language, zone: ZoneInfo,
                limits: AlertLimits, now: float) -> FleetTable:
    """The filtered, sorted table of the fleet: every gate heard from, and every registered gate not heard from
    since the service started (unknown, "never seen": a gate installed but never connected is what an operator
    must find)."""
    rows = []
    by_device = {view.device_id: view for view in views}
    for device_id in sorted(by_device.keys() | gates.keys()):
        view, gate = by_device.get(device_id), gates.get(device_id)
        place_id = gate.place_id if gate is not None else (view.site_id or "") if view is not None else ""
        place = places.get(place_id)
        district = place.district if place is not None else ""
        state = view.state if view is not None else "unknown"
        if filters.district and district != filters.district:
            continue
        if filters.place and place_id != filters.place:
            continue
        if filters.state and state != filters.state:
            continue
        if view is None:
            assert gate is not None
            rows.append(unheard_row(gate, place, t))
        else:
            rows.append(fleet_row(view, place, gate, t, language, zone, limits, now))
    rows.sort(key=lambda row: (_STATE_ORDER.get(row.state, 3), row.district, row.place_name, row.device_id))
    by_state = {state: sum(1 for row in rows if row.state == state) for state in STATES}
    return FleetTable(rows[:MAX_ROWS], len(rows), by_state)


def fleet_row(view: GateView, place: Place | None, gate: Gate | None, t: Mapping[str, str], language: Language,
              zone: ZoneInfo, limits: AlertLimits, now: float) -> FleetRow:
    none = t["not_reported"]
    direction: str | None = gate.direction if gate is not None else view.direction
    last_seen = ""
    if view.state != "online":
        last_seen = (f"{t['last_seen']} {fmt.local_time(view.last_seen, zone, now)} · "
                     f"{fmt.age(now - view.last_seen, t)}") if view.last_seen else t["never_seen"]
    trust_list, trust_old = none, False
    if view.trust_list_version is not None:
        trust_age = view.trust_list_age_at(now)
        trust_list = t["version_age"].format(version=view.trust_list_version,
                                             age=fmt.age(trust_age, t) if trust_age is not None else none)
        trust_old = bool(view.trust_stale) or (trust_age is not None
                                               and trust_age > limits.trust_list_max_age_h * 3600)
    elif view.status_at is not None:  # it said its status without a list: it trusts its installed keys only
        trust_list = t["static_anchors"]
    clock = none if view.clock_synced is None else t["clock_synced" if view.clock_synced else "clock_unsynced"]
    config_hash = view.config_hash or ""
    return FleetRow(
        device_id=view.device_id,
        place_id=place.place_id if place is not None else (view.site_id or ""),
        place_name=place.name if place is not None else f"{view.site_id or none} {t['unregistered_place']}",
        registered=place is not None,
        district=place.district if place is not None else "",
        gate=gate.gate_name if gate is not None else (view.gate or ""),
        direction=t.get(f"direction_{direction}", direction) if direction else none,
        state=view.state,
        state_label=t[f"state_{view.state}"] if view.state in STATES else view.state,
        stale=view.stale,
        last_seen=last_seen,
        software=view.software or none,
        config_hash=config_hash,
        config_hash_short=config_hash[:8] or none,
        trust_list=trust_list,
        trust_list_old=trust_old,
        clock=clock,
        clock_ok=view.clock_synced is not False,
        backlog=none if view.pending is None else fmt.number(view.pending, language),
        backlog_high=view.pending is not None and view.pending >= limits.backlog_events,
        frames=none if view.frames_per_s is None else fmt.number(view.frames_per_s, language, 1),
        disk=none if view.disk_free_bytes is None else fmt.size(view.disk_free_bytes, language),
        disk_low=view.disk_free_bytes is not None and view.disk_free_bytes < limits.disk_free_min_bytes,
        temperature=none if view.cpu_temp_c is None else f"{fmt.number(view.cpu_temp_c, language, 1)} °C",
        hot=view.cpu_temp_c is not None and view.cpu_temp_c >= HOT_C,
        error=view.last_error or "",
    )


def unheard_row(gate: Gate, place: Place | None, t: Mapping[str, str]) -> FleetRow:
    """A registered gate the fleet has heard nothing from."""
    none = t["not_reported"]
    return FleetRow(
        device_id=gate.device_id, place_id=gate.place_id, place_name=place.name if place is not None else gate.place_id,
        registered=place is not None, district=place.district if place is not None else "", gate=gate.gate_name,
        direction=t.get(f"direction_{gate.direction}", gate.direction), state="unknown", state_label=t["state_unknown"],
        stale=False, last_seen=t["never_seen"], software=none, config_hash="", config_hash_short=none,
        trust_list=none, trust_list_old=False, clock=none, clock_ok=True, backlog=none, backlog_high=False,
        frames=none, disk=none, disk_low=False, temperature=none, hot=False, error="",
    )
