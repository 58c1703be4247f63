"""A seeded day for the daily report's tests (test_province_report.py): places with and without gates, a gate
offline half the day, a place with only rejections, one with no scans, an unsynchronised clock, events just
outside the local day, in and out, passes seen twice; and the figures the report must give, computed here in
plain Python from the same lists (minute by minute for "offline", local dates for "in the day"), never by the
report's SQL."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from qrgate import wire
from qrgate_provisioning.consumer.postgres_store import PostgresStore
from qrgate_provisioning.province import presence
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.registry import Registry

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
DAY = dt.date(2025, 3, 5)
LIMIT_H = 2.0


def local(hour: int, minute: int = 0, second: int = 0, ms: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, ms * 1000, tzinfo=HCM)


BEFORE, AFTER = DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1)


@dataclass(frozen=True)
class SeedPlace:
    place_id: str
    name: str
    kind: str
    commune: str
    district: str
    required: bool
    hours: str
    is_open: Callable[[int], bool]  # local minute of the day -> open (written here independently of OpeningHours)
    gates: tuple[tuple[str, str], ...]  # (device, direction)


PLACES = [
    SeedPlace("CHO-TANDINH", "Chợ Tân Định", "market", "Phường Tân Định", "Quận 1", True, "06:00-18:00",
              lambda m: 360 <= m < 1080, (("G-CHO-IN", "in"), ("G-CHO-OUT", "out"))),
    SeedPlace("QA-PHO", "Quán ăn Phở Hòa", "restaurant", "Phường Tân Định", "Quận 1", False, "06:00-22:00",
              lambda m: 360 <= m < 1320, ()),
    SeedPlace("UBND-BENNGHE", "UBND Phường Bến Nghé", "office", "Phường Bến Nghé", "Quận 1", True,
              "07:00-11:30,13:00-17:00", lambda m: 420 <= m < 690 or 780 <= m < 1020, ()),
    SeedPlace("BV-SAIGON", "Bệnh viện Sài Gòn", "hospital", "Phường Bến Nghé", "Quận 1", True,
              "06:00-11:00,13:00-17:00", lambda m: 360 <= m < 660 or 780 <= m < 1020, (("G-BV", "in"),)),
    SeedPlace("BX-MIENDONG", "Bến xe Miền Đông", "bus_station", "Phường 26", "Quận Bình Thạnh", True, "24/7",
              lambda m: True, (("G-BX", "both"), ("G-BX-2", "out"))),
    SeedPlace("NM-DETMAY", "Nhà máy dệt may Thành Công", "factory", "Phường 25", "Quận Bình Thạnh", True,
              "06:00-22:00", lambda m: 360 <= m < 1320, (("G-NM", "in"),)),
    SeedPlace("QN-DEM", "Quán nhậu Đêm Khuya", "restaurant", "Phường 25", "Quận Bình Thạnh", True, "18:00-02:00",
              lambda m: m < 120 or m >= 1080, (("G-QN", "in"),)),
]

# Presence transitions (device, when, online), some before and after the day.
TRANSITIONS = [
    # the market's two gates each offline most of a half day, but never both at once: the place could scan
    ("G-CHO-IN", local(5, day=BEFORE), True), ("G-CHO-IN", local(12), False),
    ("G-CHO-OUT", local(11), True),
    ("G-BV", local(23, day=BEFORE), True), ("G-BV", local(7), False), ("G-BV", local(8, 30), True),
    ("G-BX", local(10, day=BEFORE), True), ("G-BX", local(12), False), ("G-BX", local(0, 30, day=AFTER), True),
    ("G-NM", local(6, day=BEFORE), True),
    ("G-QN", local(20, day=BEFORE), True), ("G-QN", local(1), False), ("G-QN", local(21), True),
]
HEARD = [("G-NM", local(10)), ("G-BX-2", local(9, day=BEFORE))]  # G-BX-2 heard only the day before


@dataclass(frozen=True)
class SeedEvent:
    device: str
    site: str
    direction: str
    at: dt.datetime
    verdict: str = "accepted"
    person: str | None = None  # the subject id (accepted passes only)
    pass_id: str | None = None
    clock_synced: bool = True


def _cho(device: str, direction: str, at: dt.datetime, person: str | None, verdict: str = "accepted",
         pass_id: str | None = None) -> SeedEvent:
    return SeedEvent(device, "CHO-TANDINH", direction, at, verdict, person, pass_id or f"pass-{person}")


EVENTS = [
    _cho("G-CHO-IN", "in", local(8), "S1"), _cho("G-CHO-OUT", "out", local(9), "S1"),
    _cho("G-CHO-IN", "in", local(10), "S1"),
    _cho("G-CHO-IN", "in", local(8, 30), "S2"), _cho("G-CHO-IN", "in", local(8, 45), "S2"),  # passback
    _cho("G-CHO-IN", "in", local(9, 15), "S3"), _cho("G-CHO-OUT", "out", local(11, 30), "S3"),
    _cho("G-CHO-IN", "in", local(10, 30), None, "identified", "CCCD-0791"),  # chip ID card: a pass id only
    _cho("G-CHO-IN", "in", local(10, 40), None, "rejected", "pass-forged"),
    _cho("G-CHO-OUT", "out", local(11), "S4"),  # came in the day before
    _cho("G-CHO-IN", "in", local(23, day=BEFORE), "S5"), _cho("G-CHO-OUT", "out", local(7), "S5"),
    SeedEvent("G-BV", "BV-SAIGON", "in", local(9), "rejected", pass_id="p-1"),
    SeedEvent("G-BV", "BV-SAIGON", "in", local(9, 30), "rejected"),
    SeedEvent("G-BV", "BV-SAIGON", "in", local(14), "rejected", pass_id="p-2"),
    # just outside and just inside the local day's bounds
    SeedEvent("G-BX", "BX-MIENDONG", "in", local(23, 59, 59, 999, day=BEFORE), person="S10", pass_id="b-10"),
    SeedEvent("G-BX", "BX-MIENDONG", "in", local(0), person="S11", pass_id="b-11"),
    SeedEvent("G-BX", "BX-MIENDONG", "out", local(23, 59, 59, 999), person="S11", pass_id="b-11"),
    SeedEvent("G-BX", "BX-MIENDONG", "in", local(0, day=AFTER), person="S12", pass_id="b-12"),
    SeedEvent("G-BX", "BX-MIENDONG", "in", local(6), person="S13", pass_id="b-13"),
    SeedEvent("G-BX", "BX-MIENDONG", "out", local(6, 10), person="S13", pass_id="b-13", clock_synced=False),
    SeedEvent("G-BX", "BX-MIENDONG", "in", local(7), "rejected", pass_id="b-x"),
    SeedEvent("G-PHO-X", "QA-PHO", "in", local(12), person="S20", pass_id="q-20"),  # a device no place has
    SeedEvent("G-PHO-X", "QA-PHO", "out", local(12, 30), person="S20", pass_id="q-20"),
    SeedEvent("G-QN", "QN-DEM", "in", local(0, 30), person="S31", pass_id="n-31"),
    SeedEvent("G-QN", "QN-DEM", "in", local(22), person="S30", pass_id="n-30"),
    SeedEvent("G-LA", "SITE-LA", "in", local(10), person="S40", pass_id="l-40"),  # a site the registry lacks
    SeedEvent("G-LA", "SITE-LA", "in", local(10, 5), "rejected"),
]


def places_csv(places: list[SeedPlace]) -> str:
    lines = ["place_id,name,type,commune,district,address,gate_required,opening_hours,gates"]
    for p in places:
        gates = ";".join(f"{device}:{direction}" for device, direction in p.gates)
        lines.append(f'{p.place_id},{p.name},{p.kind},{p.commune},{p.district},,{"có" if p.required else "không"},'
                     f'"{p.hours}","{gates}"')
    return "\n".join(lines) + "\n"


def seed(db: Database, dsn: str) -> None:
    """The registry, the presence rows and the check-ins above, in the database."""
    Registry(db).import_csv(places_csv(PLACES))
    with db.connection() as conn:
        presence.record_transitions(conn, [presence.Transition(device, at.astimezone(dt.UTC), online, "status")
                                           for device, at, online in TRANSITIONS])
        presence.record_heard(conn, [(device, at.astimezone(dt.UTC)) for device, at in HEARD])
    store_events(dsn, EVENTS)


def store_events(dsn: str, events: list[SeedEvent]) -> None:
    seqs: dict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
    checkins = []
    for event in events:
        epoch = event.at.timestamp()
        checkin = wire.CheckinEvent(
            event_id=wire.new_event_id(epoch), seq=next(seqs[event.device]), device_id=event.device,
            site_id=event.site, gate=event.device.lower(), direction=event.direction,  # type: ignore[arg-type]
            time=wire.iso_utc(epoch), clock_synced=event.clock_synced, verdict=event.verdict,  # type: ignore[arg-type]
            reason="accepted" if event.verdict != "rejected" else "bad_signature", format="qrgate",
            pass_id=event.pass_id, subject_id=event.person)
        checkins.append((checkin, checkin.to_json()))
    store = PostgresStore(dsn)
    try:
        assert store.store(checkins, dt.datetime.now(dt.UTC).timestamp()) == len(checkins)
    finally:
        store.close()


# --- the expected figures, in plain Python -------------------------------------------------------------------


def in_day(at: dt.datetime, day: dt.date = DAY) -> bool:
    return at.astimezone(HCM).date() == day


def admitted(event: SeedEvent) -> bool:
    return event.verdict in ("accepted", "identified")


def scan_counts(events: list[SeedEvent]) -> dict[str, int]:
    return {"total": len(events), "accepted": sum(e.verdict == "accepted" for e in events),
            "rejected": sum(e.verdict == "rejected" for e in events),
            "identified": sum(e.verdict == "identified" for e in events),
            "inbound": sum(e.direction == "in" for e in events), "outbound": sum(e.direction == "out" for e in events)}


def heard_devices() -> set[str]:
    return ({e.device for e in EVENTS if in_day(e.at)} | {device for device, at in HEARD if in_day(at)}
            | {device for device, at, online in TRANSITIONS if online and in_day(at)})


def online_at(device: str, instant: dt.datetime) -> bool:
    before = [(at, online) for d, at, online in TRANSITIONS if d == device and at <= instant]
    return max(before)[1] if before else False


def offline_minutes(place: SeedPlace) -> int:
    """Minutes of the day the place was open with none of its gates online, sampled minute by minute."""
    midnight = local(0)
    return sum(1 for minute in range(24 * 60) if place.is_open(minute)
               and not any(online_at(device, midnight + dt.timedelta(minutes=minute)) for device, _ in place.gates))


def expected_place(place: SeedPlace) -> dict[str, object]:
    events = [e for e in EVENTS if e.site == place.place_id and in_day(e.at)]
    scans = scan_counts(events)
    unsynced = sum(not e.clock_synced for e in events)
    offline = offline_minutes(place) if place.required and place.gates else None
    reasons = []
    if place.required:
        if not place.gates:
            reasons.append("no_gate")
        else:
            if offline is not None and offline > LIMIT_H * 60:
                reasons.append("gate_offline")
            if not events:
                reasons.append("no_scans")
        if events and not any(admitted(e) for e in events):
            reasons.append("only_rejections")
        if unsynced:
            reasons.append("clock_unsynchronised")
    heard = heard_devices()
    return {"place_id": place.place_id, "district": place.district, "commune": place.commune,
            "gate_required": place.required, "open_hours": sum(map(place.is_open, range(1440))) / 60,
            "gates_registered": len(place.gates), "gates_working": sum(device in heard for device, _ in place.gates),
            "scans": scans, "unsynced_checkins": unsynced,
            "offline_hours": None if offline is None else offline / 60, "reasons": reasons}
