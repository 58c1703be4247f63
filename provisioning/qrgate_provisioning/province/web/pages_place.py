"""A place's page (/places/{id}): what the registry says of it, its gates as the fleet sees them now, and the day's
check-ins: per hour and direction as a table and a bar chart (inline SVG, no script), entries, exits, the people
inside now and the anti-passback flags (``queries`` defines each).

``?day=YYYY-MM-DD`` shows another local day; "inside now" is shown for today only (for a past day it would count
people against passages made since).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from ..accounts import Session
from ..queries import HourCounts, day_bounds, passback_flags, people_inside, place_hours
from . import format as fmt
from .auth import any_session, context_of
from .fleet_rows import fleet_row, unheard_row

if TYPE_CHECKING:
    from .render import Renderer

CHART_WIDTH, CHART_HEIGHT = 760, 220
CHART_LEFT, CHART_BOTTOM, CHART_TOP = 44, 24, 12
SLOT = (CHART_WIDTH - CHART_LEFT - 8) / 24


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """An hour-by-hour bar chart of entries and exits, as SVG coordinates."""

    width: int
    height: int
    bars: list[Bar]
    hour_labels: list[tuple[float, str]]  # (x, text) under the axis, every third hour
    grid: list[tuple[float, str]]  # (y, value) horizontal lines with their value
    baseline: float
    left: int


def nice_ceiling(value: int) -> int:
    """The axis' top: 1, 2 or 5 times a power of ten, at least ``value``."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= value:
                return top * step
        top *= 10


def hours_chart(hours: Sequence[HourCounts], t: Mapping[str, str]) -> Chart:
    top = nice_ceiling(max([1, *(h.entries for h in hours), *(h.exits for h in hours)]))
    baseline = CHART_HEIGHT - CHART_BOTTOM
    scale = (baseline - CHART_TOP) / top
    bars = []
    for h in hours:
        x = CHART_LEFT + h.hour * SLOT
        width = SLOT * 0.38
        for offset, count, css, label in ((SLOT * 0.1, h.entries, "bar-in", t["col_entries"]),
                                          (SLOT * 0.52, h.exits, "bar-out", t["col_exits"])):
            height = count * scale
            bars.append(Bar(round(x + offset, 1), round(baseline - height, 1), round(width, 1), round(height, 1), css,
                            f"{h.hour:02d}:00 · {label}: {count}"))
    labels = [(round(CHART_LEFT + hour * SLOT + SLOT / 2, 1), f"{hour:02d}h") for hour in range(0, 24, 3)]
    grid = [(round(baseline - value * scale, 1), str(value)) for value in sorted({0, top // 2, top})]
    return Chart(CHART_WIDTH, CHART_HEIGHT, bars, labels, grid, baseline, CHART_LEFT)


def place_router(renderer: Renderer) -> APIRouter:
    router = APIRouter()

    @router.get("/places/{place_id}")
    def place_page(request: Request, place_id: str, session: Annotated[Session, Depends(any_session)],
                   day: Annotated[str, Query(max_length=10)] = "") -> Response:
        context = context_of(request)
        language = renderer.language(request)
        t = renderer.labels(request)
        place = context.registry.place(place_id)
        if place is None:
            return renderer.page(request, "error.html", {"message": t["place_not_found"]}, status=404)
        zone = context.zone
        now = time.time()
        today = dt.datetime.fromtimestamp(now, zone).date()
        try:
            shown = dt.date.fromisoformat(day) if day else today
        except ValueError:
            shown = today
        start, end = day_bounds(shown, zone)
        with context.database.connection() as connection:
            hours = place_hours(connection, place_id, shown, zone)
            inside = people_inside(connection, place_id, start) if shown == today else None
            flags = passback_flags(connection, place_id, start, end)
        gates = context.registry.gates_of(place_id)
        rows = []
        for gate in gates:
            view = context.fleet.view(gate.device_id)
            rows.append(unheard_row(gate, place, t) if view is None
                        else fleet_row(view, place, gate, t, language, zone, context.config.alerts, now))
        totals = HourCounts(-1, *(sum(getattr(h, name) for h in hours)
                                  for name in ("entries", "exits", "accepted", "rejected", "identified")))
        return renderer.page(request, "place.html", {
            "place": place, "kind": t.get(f"kind_{place.kind}", place.kind), "rows": rows, "hours": hours,
            "totals": totals,
            "chart": hours_chart(hours, t), "day": shown.isoformat(), "is_today": shown == today,
            "day_label": shown.strftime("%d/%m/%Y"), "inside": inside, "flags": flags,
            "entries": fmt.number(totals.entries, language), "exits": fmt.number(totals.exits, language),
        })

    return router
