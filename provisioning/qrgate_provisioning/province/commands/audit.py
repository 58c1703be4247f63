"""``qrgate-province audit``: the audit log, newest first (who did what, when, from where), as text or JSON lines."""

from __future__ import annotations

import argparse
import json

from ..accounts import Accounts
from ..report import zone_of
from . import EXIT_OK, Subcommands
from .common import add_config_argument, config_of, open_database


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "audit", help="the audit log (who did what, when)",
        description="Print the audit log, newest first: log-ins (and refused ones), log-outs, changes to people, "
        "trace queries and commands to gates.",
    )
    add_config_argument(parser)
    parser.add_argument("--limit", type=int, default=200, help="at most this many lines (default 200)")
    parser.add_argument("--actor", default=None, help="only this person's lines (a user name, or cli:<unix user>)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    zone = zone_of(config.report.timezone)
    with open_database(config) as database:
        # the hasher's parameters do not matter here: nobody logs in
        entries = Accounts(database).audit_entries(limit=args.limit, actor=args.actor)
    for entry in entries:
        if args.json:
            print(json.dumps({"id": entry.id, "at": entry.at.isoformat(), "actor": entry.actor,
                              "action": entry.action, "detail": entry.detail, "remote": entry.remote},
                             ensure_ascii=False, sort_keys=True))
        else:
            detail = " ".join(f"{key}={value}" for key, value in sorted(entry.detail.items()))
            when = entry.at.astimezone(zone)
            print(f"{when:%Y-%m-%d %H:%M:%S%z}  {entry.actor:<16}  {entry.action:<14}  {entry.remote or '-':<15}  "
                  f"{detail}".rstrip())
    return EXIT_OK
