"""``qrgate-province serve``: the dashboard, the live fleet from MQTT and /metrics, as a systemd service.

It opens the database (creating missing tables), announces itself to the gates (the fleet listener's hello makes
every live gate re-publish its state, so a restarted dashboard is never blank), files a gate that reports a
registered place but is not in the registry yet, and serves the dashboard until SIGTERM; READY=1 goes to systemd
(``Type=notify``) once the pages are served. A broker that is down does not stop it starting: the listener keeps
reconnecting, and the fleet table says what it knows.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import EXIT_OK, Subcommands
from .common import add_config_argument, config_of, open_database

if TYPE_CHECKING:
    from ..fleet import GateView
    from ..registry import Registry

log = logging.getLogger(__name__)


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "serve", help="the dashboard, the live fleet and /metrics (a systemd service)",
        description="Serve the dashboard (web.bind:web.port; put a TLS proxy in front), keep the live fleet from "
        "the broker, and file new gates of registered places. Stops cleanly on SIGTERM; tells systemd READY when "
        "started under Type=notify.",
    )
    add_config_argument(parser)
    parser.add_argument("--bind", default=None, metavar="ADDRESS", help="listen on this address (default web.bind)")
    parser.add_argument("--port", type=int, default=None, help="listen on this port (default web.port)")
    parser.set_defaults(run=run)


def gate_filer(registry: Registry) -> Callable[[GateView], None]:
    """What the fleet listener calls for a gate whose place became known: file it in the registry, if it is not
    there already and its place is registered (an unknown place is the registry's to add first, not ours)."""
    from ..registry import Gate

    def file_gate(view: GateView) -> None:
        if view.site_id is None or registry.gate(view.device_id) is not None:
            return
        if registry.place(view.site_id) is None:
            log.info("gate %s reports place %s, which is not registered: not filed", view.device_id, view.site_id)
            return
        registry.assign_gate(Gate(view.device_id, view.site_id, view.gate or view.device_id, view.direction or "in"))
        log.info("filed gate %s at place %s", view.device_id, view.site_id)

    return file_gate


def run(args: argparse.Namespace) -> int:
    from qrgate.notify import SystemdNotifier

    from ..accounts import Accounts
    from ..fleet import FleetState
    from ..fleet_listener import FleetListener
    from ..registry import Registry
    from ..web.context import ProvinceContext
    from ..web.server import DashboardServer

    config = config_of(args)
    web = config.web.model_copy(update={key: value for key, value in (("bind", args.bind), ("port", args.port))
                                        if value is not None})
    config = config.model_copy(update={"web": web})
    notifier = SystemdNotifier()
    database = open_database(config)
    try:
        registry = Registry(database)
        fleet = FleetState(config.fleet)
        accounts = Accounts(database, session_max_age_s=web.session_max_age_s)
        context = ProvinceContext(config, database, registry, fleet, accounts)
        server = DashboardServer(context, bind=web.bind, port=web.port,
                                 log_level="info" if getattr(args, "verbose", False) else "warning")
        listener = FleetListener(config.broker, fleet, database=database, on_new_gate=gate_filer(registry))
        context.listener = listener.start()
        try:
            def ready() -> None:
                log.info("dashboard on http://%s:%d, fleet from %s:%d", web.bind, server.port, config.broker.host,
                         config.broker.port)
                notifier.ready()

            server.run(on_ready=ready)
        finally:
            notifier.stopping()
            listener.stop()
    finally:
        database.close()
        notifier.close()
    return EXIT_OK
