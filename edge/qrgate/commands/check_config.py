"""``qrgate check-config FILE``: validate a configuration without starting anything."""

from __future__ import annotations

import argparse
import sys

from ..config_file import load_config, render_defaults
from ..errors import ConfigError
from . import Subcommands


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a configuration file and print every problem with its line",
        description="Validate FILE; print every problem as FILE:LINE: key: message and exit 1 if there is any.",
    )
    parser.add_argument("file", nargs="?", help="the TOML configuration file")
    parser.add_argument("--print-defaults", action="store_true", help="print the default configuration, every key "
                                                                      "described")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.print_defaults:
        print(render_defaults())
        return 0
    if not args.file:
        print("qrgate check-config: give a FILE (or --print-defaults)", file=sys.stderr)
        return 2
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.file}: OK (device {config.device.id}, site {config.device.site_id}, camera {config.camera.source})")
    return 0
