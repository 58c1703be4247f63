"""The fleet table (/), its live updates (/events, server-sent events), and the open alerts (/alerts).

/events sends, whenever the fleet changed, the rows that look different from what this browser was last sent,
and the table's order; ``static/fleet.js`` swaps those rows in place, so a gate that goes offline turns red in
every open dashboard within a second or two, without a reload. The stream polls ``FleetState.version`` from the
event loop instead of blocking in ``wait_changed``: a blocked wait would hold one of the server's worker threads
per open dashboard for as long as it stays open. It also re-renders every ``RERENDER_S`` (the "5 min ago" of the
"last seen" cells grows without any message), ends when the session does (the page then reloads to the log-in),
and ends when the service stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..accounts import Session
from . import format as fmt
from .auth import any_session, context_of, session_cookie_name
from .fleet_rows import STATES, FleetFilters, FleetTable, fleet_table
from .i18n import LABELS_BY_LANGUAGE, Language

if TYPE_CHECKING:
    from ..registry import Gate, Place
    from .context import ProvinceContext
    from .render import Renderer

POLL_S = 0.5  # how often a stream looks at the fleet's version
RERENDER_S = 30.0  # rows are re-rendered this often even without a change (ages in "last seen")
REGISTRY_CACHE_S = 10.0  # a stream re-reads places and gates this often (the registry changes rarely)
SESSION_CHECK_S = 30.0
PING_S = 15.0  # a comment line keeps proxies from closing a quiet stream


@dataclass(frozen=True, slots=True)
class RegistryMaps:
    """Places and gates by id, as read at one moment."""

    places: dict[str, Place]
    gates: dict[str, Gate]
    read_at: float

    @classmethod
    def read(cls, context: ProvinceContext) -> RegistryMaps:
        places = {place.place_id: place for place in context.registry.places()}
        gates = {gate.device_id: gate for gate in context.registry.gates()}
        return cls(places, gates, time.monotonic())


def table_of(context: ProvinceContext, maps: RegistryMaps, filters: FleetFilters, language: Language) -> FleetTable:
    return fleet_table(context.fleet.snapshot(), maps.places, maps.gates, filters, LABELS_BY_LANGUAGE[language],
                       language, context.zone, context.config.alerts, time.time())


def summary_of(table: FleetTable, t: Mapping[str, str]) -> tuple[str, str]:
    """The line above the table, and the note when it is cut short."""
    summary = t["fleet_summary"].format(total=table.total, **table.by_state)
    truncated = t["fleet_truncated"].format(shown=len(table.rows), total=table.total) if table.truncated else ""
    return summary, truncated


@dataclass
class StreamState:
    """What one browser was last sent: each row's HTML, and their order."""

    sent: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


def update_of(renderer: Renderer, table: FleetTable, state: StreamState, t: Mapping[str, str],
              commands: bool = False) -> str | None:
    """The event that brings the browser from ``state`` to ``table`` (None if nothing changed); updates state.
    ``commands``: rows with their command link, as an operator's page has them."""
    rendered = {row.device_id: str(renderer.macro("_fleet_row.html", "row", row, t, commands)) for row in table.rows}
    order = [row.device_id for row in table.rows]
    changed = [{"id": device_id, "html": html} for device_id, html in rendered.items()
               if state.sent.get(device_id) != html]
    if not changed and order == state.order:
        return None
    state.sent, state.order = rendered, order
    summary, truncated = summary_of(table, t)
    return json.dumps({"rows": changed, "order": order, "summary": summary, "truncated": truncated},
                      ensure_ascii=False, separators=(",", ":"))


def fleet_router(renderer: Renderer) -> APIRouter:
    router = APIRouter()

    @router.get("/")
    def fleet_page(request: Request, session: Annotated[Session, Depends(any_session)]) -> Response:
        context = context_of(request)
        language = renderer.language(request)
        t = LABELS_BY_LANGUAGE[language]
        filters = FleetFilters.of(request.query_params)
        table = table_of(context, RegistryMaps.read(context), filters, language)
        summary, truncated = summary_of(table, t)
        events_url = "/events?" + urlencode({**filters.query(), "lang": language})
        return renderer.page(request, "fleet.html", {
            "rows": table.rows, "filters": filters, "states": STATES, "summary": summary,
            "truncated": table.truncated, "truncated_note": truncated, "events_url": events_url,
            "districts": context.registry.districts(),
            "places": context.registry.places(district=filters.district or None),
        })

    @router.get("/events")
    async def fleet_events(request: Request, session: Annotated[Session, Depends(any_session)]) -> Response:
        context = context_of(request)
        language = renderer.language(request)
        filters = FleetFilters.of(request.query_params)
        token = request.cookies.get(session_cookie_name(context.config.web), "")
        commands = session.user.role == "operator"  # the rows as the page has them, command links included
        return StreamingResponse(_stream(context, renderer, filters, language, token, commands),
                                 media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})  # nginx: pass each event on at once

    @router.get("/alerts")
    def alerts_page(request: Request, session: Annotated[Session, Depends(any_session)]) -> Response:
        from ..alerts import evaluate

        context = context_of(request)
        t = renderer.labels(request)
        now = time.time()
        maps = RegistryMaps.read(context)
        rows = []
        for alert in evaluate(context.fleet.snapshot(), context.config.alerts, now):
            place = maps.places.get(alert.site_id or "")
            rows.append({
                "kind": alert.kind, "label": t.get(f"alert_{alert.kind}", alert.kind),
                "device_id": alert.device_id, "place_id": place.place_id if place is not None else "",
                "place": place.name if place is not None else (alert.site_id or t["not_reported"]),
                "district": place.district if place is not None else "",
                "since": (f"{fmt.local_time(alert.since, context.zone, now)} · {fmt.age(now - alert.since, t)}"
                          if alert.since is not None else t["not_reported"]),
                "detail": alert.detail,
            })
        return renderer.page(request, "alerts.html", {"rows": rows})

    return router


async def _stream(context: ProvinceContext, renderer: Renderer, filters: FleetFilters, language: Language,
                  token: str, commands: bool = False) -> AsyncIterator[str]:
    state = StreamState()
    yield "retry: 2000\n\n"  # EventSource reconnects after 2 s when the stream breaks (a restart of the service)
    maps = await run_in_threadpool(RegistryMaps.read, context)
    version, rendered_at, session_checked_at, sent_at = -1, 0.0, time.monotonic(), time.monotonic()
    while not context.stopping.is_set():
        now = time.monotonic()
        if now - session_checked_at >= SESSION_CHECK_S:
            session_checked_at = now
            if await run_in_threadpool(context.accounts.session, token) is None:
                yield "event: logout\ndata: {}\n\n"
                return
        current = context.fleet.version
        if current != version or now - rendered_at >= RERENDER_S:
            if now - maps.read_at >= REGISTRY_CACHE_S:
                maps = await run_in_threadpool(RegistryMaps.read, context)
            version, rendered_at = current, now
            update = await run_in_threadpool(_next_update, context, renderer, maps, filters, language, state,
                                             commands)
            if update is not None:
                yield f"event: fleet\ndata: {update}\n\n"
                sent_at = now
        if now - sent_at >= PING_S:
            yield ": ping\n\n"
            sent_at = now
        await asyncio.sleep(POLL_S)


def _next_update(context: ProvinceContext, renderer: Renderer, maps: RegistryMaps, filters: FleetFilters,
                 language: Language, state: StreamState, commands: bool = False) -> str | None:
    """In a worker thread: rendering a thousand rows would stall every other stream on the event loop."""
    return update_of(renderer, table_of(context, maps, filters, language), state, LABELS_BY_LANGUAGE[language],
                     commands)
