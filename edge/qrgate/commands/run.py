"""``qrgate run --config FILE``: the daemon, in the foreground (systemd Type=notify)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ..config_file import load_config
from ..errors import QrgateError
from . import Subcommands


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the gate daemon in the foreground",
        description="Run the gate: capture, decode, verify, feedback, store and publish check-ins. "
        "Refuses to start on an invalid configuration. Stops cleanly on SIGTERM/SIGINT.",
    )
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    parser.add_argument("--demo", action="store_true",
                        help="allow a demo gate's config: the built-in identity and the synthetic scene (as "
                        'device.mode = "demo"); never for a gate in the field')
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, demo=args.demo)
    except QrgateError as exc:
        print(exc, file=sys.stderr)
        return 1
    logging.basicConfig(
        level=config.service.log_level.upper(),
        format="%(levelname)s %(name)s: %(message)s",  # journald adds the time stamp
    )
    from ..service import GateService

    try:
        service = GateService(config)
    except QrgateError as exc:
        print(f"qrgate: cannot start: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        service.run()
    except QrgateError as exc:
        print(f"qrgate: stopped: {exc}", file=sys.stderr)
        return 1
    return service.exit_status  # EX_TEMPFAIL after an operator's restart: systemd starts it again
