"""Alerts over the live fleet: pure rules from the gates' views and the ``[alerts]`` limits (settings.AlertLimits).

    offline                 offline for ``offline_s`` or longer (whatever the cause: will, clean stop, silence)
    trust_list_old          the trust list in force is older than ``trust_list_max_age_h``, or the gate says stale
    clock_unsynchronised    the gate says its clock is not synchronised (its events carry clock_synced=false)
    backlog_growing         ``backlog_events`` or more undelivered, or it grew over ``backlog_growing_reports``
                            telemetry reports in a row
    rejections_in_row       ``rejections_in_row`` or more rejected check-ins in a row (a camera, an issuer or a
                            trust-list problem, or someone trying forged passes)
    disk_nearly_full        less than ``disk_free_min_bytes`` free where the gate keeps its outbox

An offline gate raises only the offline alert: the rest of what it said is last known, not current, and is shown
in its row. ``detail`` is English and carries figures, never personal data; the dashboard translates the kind.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .fleet_record import PENDING_HISTORY, GateView
from .settings import AlertLimits

AlertKind = Literal["offline", "trust_list_old", "clock_unsynchronised", "backlog_growing", "rejections_in_row",
                    "disk_nearly_full"]
# Most severe first: no check-ins at all; soon no check-ins stored; valid passes refused or revoked ones
# accepted; the province not getting the data; doubtful times; a pattern worth a look.
SEVERITY: tuple[AlertKind, ...] = ("offline", "disk_nearly_full", "trust_list_old", "backlog_growing",
                                   "clock_unsynchronised", "rejections_in_row")
_CAUSES = {"will": "connection lost", "status": "stopped cleanly", "stale": "fell silent"}


@dataclass(frozen=True, slots=True)
class Alert:
    """One condition at one gate; ``since`` (epoch seconds) when it began, where that is known."""

    kind: AlertKind
    device_id: str
    site_id: str | None
    since: float | None
    detail: str


def evaluate(views: Iterable[GateView], limits: AlertLimits, now: float) -> list[Alert]:
    """Every alert of the fleet at ``now``, most severe first (then the oldest, then by gate)."""
    alerts: list[Alert] = []
    for view in views:
        if view.state == "offline":
            alerts += _offline(view, limits, now)
            continue
        for rule in (_disk, _trust_list, _backlog, _clock, _rejections):
            alerts += rule(view, limits, now)
    return sorted(alerts, key=lambda a: (SEVERITY.index(a.kind), a.since is None, a.since or 0.0, a.device_id))


def human_duration(seconds: float) -> str:
    """3 s, 12 min, 2 h 5 min, 3 d 4 h: for details and tables."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _alert(kind: AlertKind, view: GateView, since: float | None, detail: str) -> list[Alert]:
    return [Alert(kind, view.device_id, view.site_id, since, detail)]


def _offline(view: GateView, limits: AlertLimits, now: float) -> list[Alert]:
    if view.offline_since is None or now - view.offline_since < limits.offline_s:
        return []
    cause = _CAUSES.get(view.offline_cause or "", "offline")
    seen = view.silent_s(now)
    last_seen = "never seen live" if seen is None else f"last seen {human_duration(seen)} ago"
    return _alert("offline", view, view.offline_since,
                  f"offline for {human_duration(now - view.offline_since)} ({cause}); {last_seen}")


def _disk(view: GateView, limits: AlertLimits, now: float) -> list[Alert]:
    free = view.disk_free_bytes
    if free is None or free >= limits.disk_free_min_bytes:
        return []
    return _alert("disk_nearly_full", view, None,
                  f"{_mb(free)} free for the outbox (limit {_mb(limits.disk_free_min_bytes)})")


def _trust_list(view: GateView, limits: AlertLimits, now: float) -> list[Alert]:
    age = view.trust_list_age_at(now)
    limit_s = limits.trust_list_max_age_h * 3600
    version = "" if view.trust_list_version is None else f" v{view.trust_list_version}"
    if age is not None and age > limit_s:
        return _alert("trust_list_old", view, now - (age - limit_s),
                      f"trust list{version} is {human_duration(age)} old (limit {limits.trust_list_max_age_h:g} h)")
    if view.trust_stale:
        return _alert("trust_list_old", view, None, f"the gate reports its trust list{version} stale")
    return []


def _backlog(view: GateView, limits: AlertLimits, now: float) -> list[Alert]:
    if view.pending is not None and view.pending >= limits.backlog_events:
        return _alert("backlog_growing", view, None,
                      f"{view.pending} check-ins not yet delivered (limit {limits.backlog_events})")
    # N growths in a row take N + 1 reports; the fleet keeps PENDING_HISTORY of them.
    reports = min(limits.backlog_growing_reports + 1, PENDING_HISTORY)
    run = view.pending_history[-reports:]
    if len(run) == reports and all(before < after for before, after in itertools.pairwise(run)):
        return _alert("backlog_growing", view, None,
                      f"backlog grew over {reports - 1} reports in a row: {run[0]} to {run[-1]} check-ins")
    return []


def _clock(view: GateView, limits: AlertLimits, now: float) -> list[Alert]:
    if view.clock_synced is not False:
        return []
    since = view.clock_unsynced_since
    detail = "clock not synchronised" + ("" if since is None else f" for {human_duration(now - since)}")
    return _alert("clock_unsynchronised", view, since, detail)


def _rejections(view: GateView, limits: AlertLimits, now: float) -> list[Alert]:
    if view.rejections_in_row < limits.rejections_in_row:
        return []
    return _alert("rejections_in_row", view, view.rejections_since,
                  f"{view.rejections_in_row} rejected check-ins in a row (limit {limits.rejections_in_row})")


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB"
