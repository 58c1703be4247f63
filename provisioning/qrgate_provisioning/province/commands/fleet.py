"""``qrgate-province fleet``: the fleet as the dashboard sees it, printed once.

Connects with the config's ``[broker]`` section, says hello (every gate answers with its state within its
``mqtt.hello_jitter_s``), waits ``--wait`` seconds, and prints one row per gate with its alerts, or JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from ...errors import ProvinceError
from ..alerts import Alert, evaluate, human_duration
from ..fleet import FleetState, GateView
from ..fleet_listener import FleetListener
from . import EXIT_OK, Subcommands
from .common import add_config_argument, config_of

CONNECT_TIMEOUT_S = 10.0


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "fleet", help="print every gate's state once, as the dashboard sees it",
        description="Connect to the broker of the [broker] section, say hello (the gates answer with their status "
        "and telemetry), wait, and print one row per gate: place, state, when last seen, software, backlog, "
        "trust-list age and alerts. Where the broker names clients by their certificate (the provincial broker "
        "does), use a certificate of its own here: one shared with the running service would take over its "
        "connection.",
    )
    add_config_argument(parser)
    parser.add_argument("--wait", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the gates' answers (default 5; above the gates' "
                        "mqtt.hello_jitter_s to hear every one)")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per gate) instead of a table")
    parser.add_argument("--client-id", default=None,
                        help="MQTT client id (default: the config's broker.client_id with -fleet-<pid>)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    if args.wait < 0:
        raise ProvinceError("--wait must be 0 seconds or more")
    fleet = FleetState(config.fleet)
    client_id = args.client_id or f"{config.broker.client_id}-fleet-{os.getpid()}"[:64]
    listener = FleetListener(config.broker, fleet, client_id=client_id)
    with listener:
        if not listener.wait_connected(CONNECT_TIMEOUT_S):
            raise ProvinceError(f"cannot reach the broker at {config.broker.host}:{config.broker.port} within "
                                f"{CONNECT_TIMEOUT_S:.0f} s: {listener.last_error or 'no answer'}")
        time.sleep(args.wait)
    now = time.time()
    views = fleet.snapshot()
    alerts = evaluate(views, config.alerts, now)
    if listener.hello_refused:
        print(f"note: the broker refused the hello ({listener.hello_refused}): only retained state is shown")
    print(render_json(views, alerts, now) if args.json else render_table(views, alerts, now))
    return EXIT_OK


def alerts_by_gate(alerts: list[Alert]) -> dict[str, list[Alert]]:
    grouped: dict[str, list[Alert]] = {}
    for alert in alerts:
        grouped.setdefault(alert.device_id, []).append(alert)
    return grouped


def ago(epoch: float | None, now: float) -> str:
    return "never" if epoch is None else f"{human_duration(now - epoch)} ago"


def render_table(views: list[GateView], alerts: list[Alert], now: float) -> str:
    if not views:
        return "no gates known (none answered and the broker retained nothing)"
    grouped = alerts_by_gate(alerts)
    header = ("DEVICE", "PLACE", "STATE", "LAST SEEN", "SOFTWARE", "BACKLOG", "TRUST LIST", "ALERTS")
    rows = [header]
    for view in views:
        place = "/".join(part for part in (view.site_id, view.gate) if part) or "-"
        state = view.state + (" (silent)" if view.stale else "")
        age = view.trust_list_age_at(now)
        rows.append((
            view.device_id, place, state, ago(view.last_seen, now), view.software or "-",
            "-" if view.pending is None else str(view.pending),
            "-" if age is None else human_duration(age),
            ", ".join(alert.kind for alert in grouped.get(view.device_id, [])) or "-",
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in rows]
    states = {state: sum(1 for view in views if view.state == state) for state in ("online", "offline", "unknown")}
    lines.append(f"\n{len(views)} gate(s): {states['online']} online, {states['offline']} offline, "
                 f"{states['unknown']} unknown; {len(alerts)} alert(s)")
    return "\n".join(lines)


def render_json(views: list[GateView], alerts: list[Alert], now: float) -> str:
    grouped = alerts_by_gate(alerts)
    gates = []
    for view in views:
        entry = dataclasses.asdict(view)
        entry["trust_list_age_now_s"] = view.trust_list_age_at(now)
        entry["alerts"] = [dataclasses.asdict(alert) for alert in grouped.get(view.device_id, [])]
        gates.append(entry)
    return json.dumps({"time": now, "gates": gates}, indent=2, ensure_ascii=False)
