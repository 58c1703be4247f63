"""The 06:00 daily report: what the provincial directives ask for every morning about the day before.

How many places are registered and must have a gate, how many have one, how many gates worked, how many scans
were made (accepted, rejected, identified; at ``in`` and ``out`` gates), per district and commune, and which
places do not comply and why. The day is a local day in ``report.timezone`` (Asia/Ho_Chi_Minh): midnight to
midnight there, as UTC bounds.

Definitions (docs/operators.md says the same):

- *scans* are check-ins whose decision time is in the day; a place's are those whose ``site_id`` is its id.
  The province's total counts every check-in, also those of site ids the registry does not know
  (``scans_unregistered``), so the districts add up to the total minus those;
- a *gate working* is a registered gate heard from during the day (a check-in, an online transition or a
  heartbeat: ``presence.heard_between``);
- only places that must have a gate are judged. A place does not comply when it has no gate (``no_gate``), its
  gates were all offline together longer than ``report.offline_hours_limit`` hours of its opening time that day
  (``gate_offline``: ``presence`` intervals against ``OpeningHours.windows``), it has a gate but no scans
  (``no_scans``), it has scans but none accepted or identified (``only_rejections``), or a check-in of the day was
  decided with the gate's clock unsynchronised (``clock_unsynchronised``: its times cannot be trusted).

``build_report`` counts in SQL (one aggregate over the day's check-ins, on the ``checkins_time`` index); what
Python loops over is places and gates, never events (report_figures).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ProvinceError

if TYPE_CHECKING:
    from .db import Database
    from .settings import ReportSettings

ReasonCode = Literal["no_gate", "gate_offline", "no_scans", "only_rejections", "clock_unsynchronised"]
REASONS: tuple[ReasonCode, ...] = get_args(ReasonCode)
Language = Literal["vi", "en"]

# Short names of the reasons, as a table column or a filter shows them.
REASON_LABELS: dict[Language, dict[ReasonCode, str]] = {
    "vi": {"no_gate": "Chưa có cổng", "gate_offline": "Cổng mất kết nối", "no_scans": "Không có lượt quét",
           "only_rejections": "Chỉ có lượt bị từ chối", "clock_unsynchronised": "Đồng hồ chưa đồng bộ"},
    "en": {"no_gate": "No gate", "gate_offline": "Gate offline", "no_scans": "No scans",
           "only_rejections": "Only rejections", "clock_unsynchronised": "Clock unsynchronised"},
}


class _Figures(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScanCounts(_Figures):
    """Scans by verdict, and by the direction of the gate that made them (any verdict)."""

    total: int = 0
    accepted: int = 0
    rejected: int = 0
    identified: int = 0
    inbound: int = Field(0, description="Scans at 'in' gates.")
    outbound: int = Field(0, description="Scans at 'out' gates.")

    @property
    def admitted(self) -> int:
        """Scans that let someone through: accepted or identified."""
        return self.accepted + self.identified


class PlaceFigures(_Figures):
    """One place's day, and why it does not comply (``reasons`` empty when it does)."""

    place_id: str
    name: str
    kind: str
    district: str
    commune: str
    gate_required: bool
    opening_hours: str = Field(description="As registered, e.g. 06:00-22:00.")
    open_hours: float = Field(description="Hours the place was open that day.")
    gates_registered: int
    gates_working: int
    scans: ScanCounts
    unsynced_checkins: int = Field(description="Check-ins decided with the gate's clock unsynchronised.")
    offline_hours: float | None = Field(
        description="Hours of its opening time with all its gates offline (None: not judged or no gate).")
    reasons: list[ReasonCode] = Field(default_factory=list)
    details: dict[ReasonCode, str] = Field(default_factory=dict, description="Each reason's detail, in English.")
    offline_limit_h: float = Field(description="The report's offline_hours_limit, which gate_offline exceeded.")

    def detail(self, code: ReasonCode, language: Language = "en") -> str:
        """What the reason means for this place, in Vietnamese or English."""
        return describe(self, code, language)


class AreaFigures(_Figures):
    """A district's figures (``commune`` None) or one commune's."""

    district: str
    commune: str | None = None
    places_registered: int = 0
    places_requiring_gate: int = 0
    places_with_gate: int = 0
    places_non_complying: int = 0
    gates_registered: int = 0
    gates_working: int = 0
    scans: ScanCounts = Field(default_factory=ScanCounts)


class DailyReport(_Figures):
    """The report of one local day; JSON as stored (daily_reports), published (retained) and served."""

    day: dt.date
    timezone: str
    start: dt.datetime = Field(description="The day's first instant, UTC.")
    end: dt.datetime = Field(description="The next day's first instant, UTC.")
    built_at: dt.datetime
    offline_hours_limit: float
    places_registered: int
    places_requiring_gate: int
    places_with_gate: int
    places_non_complying: int
    gates_registered: int
    gates_working: int
    unregistered_devices_heard: int = Field(description="Devices heard during the day that no place has.")
    scans: ScanCounts = Field(description="Every check-in of the day.")
    scans_unregistered: ScanCounts = Field(description="Check-ins at site ids the registry does not know.")
    districts: list[AreaFigures]
    communes: list[AreaFigures]
    non_complying: list[PlaceFigures]
    places: list[PlaceFigures] = Field(
        default_factory=list, description="Every place's figures (left out of the retained MQTT message).")

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> DailyReport:
        return cls.model_validate_json(payload)

    def without_places(self) -> DailyReport:
        """The report without the per-place rows (the non-complying ones stay): what is published."""
        return self.model_copy(update={"places": []})


def build_report(db: Database, day: dt.date, settings: ReportSettings) -> DailyReport:
    """The report of the local day ``day`` in ``settings.timezone``, from the database as it is now."""
    from .report_figures import gather

    zone = zone_of(settings.timezone)
    with db.connection() as conn:
        return gather(conn, day, zone, settings.offline_hours_limit)


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ProvinceError(f"report.timezone: unknown time zone {name!r} (e.g. Asia/Ho_Chi_Minh)") from exc


def describe(place: PlaceFigures, code: ReasonCode, language: Language) -> str:
    """One reason's detail for one place."""
    hours = _hours_vi if language == "vi" else _hours_en
    if code == "no_gate":
        return {"vi": "chưa đăng ký cổng nào", "en": "no gate registered"}[language]
    if code == "gate_offline":
        offline, opened = hours(place.offline_hours or 0.0), hours(place.open_hours)
        limit = hours(place.offline_limit_h)
        return {"vi": f"cổng mất kết nối {offline} giờ trong {opened} giờ mở cửa (giới hạn {limit} giờ)",
                "en": f"gates offline {offline} h of {opened} h open (limit {limit} h)"}[language]
    if code == "no_scans":
        gates = place.gates_registered
        return {"vi": f"có {gates} cổng nhưng không có lượt quét nào",
                "en": f"{gates} gate(s), no scans"}[language]
    if code == "only_rejections":
        scans = place.scans.total
        return {"vi": f"{scans} lượt quét, tất cả bị từ chối", "en": f"{scans} scan(s), all rejected"}[language]
    unsynced = place.unsynced_checkins
    return {"vi": f"{unsynced} lượt quét khi đồng hồ cổng chưa đồng bộ",
            "en": f"{unsynced} check-in(s) with the gate's clock unsynchronised"}[language]


def _hours_en(value: float) -> str:
    return f"{value:.1f}"


def _hours_vi(value: float) -> str:
    return f"{value:.1f}".replace(".", ",")  # Vietnamese writes a decimal comma
