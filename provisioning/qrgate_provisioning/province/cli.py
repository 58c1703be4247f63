"""The ``qrgate-province`` command: the province's operations service.

    registry import|list|assign     places and gates (CSV import; a gate belongs to a place)
    serve                           the dashboard, the live fleet from MQTT, /metrics (a systemd service)
    fleet                           the fleet as the dashboard sees it, printed once
    report --day D                  the daily report of a day (CSV, PDF, page, retained MQTT message)
    user add|list|passwd            people who log in to the dashboard, and their roles
    audit                           the audit log (who did what, when)
    trace (--pass|--subject) ID     every visit of a pass and who else was there within ±N minutes (tracer; audited)
    export [--once]                 push check-ins to the national system over HTTPS, resumable, never twice as new
    purge [--days N]                delete check-ins older than the retention period, and say what was deleted
    command DEVICE NAME             a signed command to one gate, answered with its outcome (operator; audited)
    command-key new FILE --kid ID   an operator signing key, made here; prints the entry gates install
    simulate --gates N              a load generator: N simulated gates on a real broker (docs/scale.md)

argparse with one module per subcommand under ``qrgate_provisioning.province.commands``, imported lazily, as the
other qrgate commands. Exit codes: 0 done; 1 failed with the reason on stderr; 2 usage error.
docs/operators.md explains the dashboard, the report's definitions and the roles.
"""

from __future__ import annotations

import argparse
import logging
import sys

from qrgate import __version__
from qrgate.commands import build_command_line, run_command_line

from .commands import PROG

# subcommand name -> module under qrgate_provisioning.province.commands, in the order --help lists them
SUBCOMMANDS = {"registry": "registry", "serve": "serve", "fleet": "fleet", "report": "report", "user": "user",
               "audit": "audit", "trace": "trace", "export": "export", "purge": "purge", "command": "command",
               "command-key": "command_key", "simulate": "simulate"}


def build_parser() -> argparse.ArgumentParser:
    return build_command_line(
        PROG, __version__,
        "The province's qrgate operations service: the registry of places and gates, the live fleet, the dashboard "
        "and the 06:00 daily report, tracing, the national export, commands to gates, on the consumer's PostgreSQL "
        "store.", "qrgate_provisioning.province.commands", SUBCOMMANDS, verbose="log more (never personal data)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_command_line(args, PROG)


if __name__ == "__main__":
    sys.exit(main())
