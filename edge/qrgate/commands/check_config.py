"""``qrgate check-config FILE``: validate a configuration without starting anything."""

from __future__ import annotations

import argparse
import sys

from ..config_file import load_config, render_defaults
from ..errors import ConfigError
from ..preflight import preflight
from . import Subcommands


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate a configuration file and print every problem with its line",
        description="Validate FILE as `qrgate run` would (the file, then everything it names: trust anchors, TLS "
        "files, board profile, rules, CCCD key); print every problem and exit 1 if there is any.",
    )
    parser.add_argument("file", nargs="?", help="the TOML configuration file")
    parser.add_argument("--demo", action="store_true", help="check it as `qrgate run --demo` would read it")
    parser.add_argument("--syntax-only", action="store_true",
                        help="only the file itself: skip checking the files and profiles it names (trust anchors, "
                        "TLS certificates and keys, board profile, rules)")
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
        config = load_config(args.file, demo=args.demo)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not args.syntax_only:
        problems = preflight(config)
        if problems:
            print(f"{args.file}: {len(problems)} problem(s) `qrgate run` would stop at:", file=sys.stderr)
            for problem in problems:
                print(f"{args.file}: {problem}", file=sys.stderr)
            return 1
    print(f"{args.file}: OK (device {config.device.id}, site {config.device.site_id}, camera {config.camera.source})")
    return 0
