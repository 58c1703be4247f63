"""The ``qrgate`` command.

argparse (the standard library's, well kept and dependency-free on the device) with one module per
subcommand under ``qrgate.commands``; each exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
Subcommands are imported lazily so ``qrgate verify`` does not pay for OpenCV or paho at start-up.
Exit codes: 0 success, 1 a negative result (rejected pass, invalid config), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import build_command_line

# subcommand name -> module under qrgate.commands
SUBCOMMANDS = {
    "run": "run",
    "check-config": "check_config",
    "verify": "verify",
    "demo": "demo",
    "bench": "bench",
    "scan": "scan",
    "self-test": "self_test",
    "identity": "identity",
}


def build_parser() -> argparse.ArgumentParser:
    return build_command_line(
        "qrgate", __version__,
        "QR check-in gate: decode, verify offline, answer green/red, publish check-ins over MQTT.",
        "qrgate.commands", SUBCOMMANDS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
