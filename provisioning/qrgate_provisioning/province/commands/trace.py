"""``qrgate-province trace (--pass ID | --subject ID) --from T --to T``: a case's visits and who was co-present,
as CSV or JSON; written to the audit log (who asked, the OS user, what) before it runs."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ...errors import ProvinceError
from ..trace import MAX_WINDOW_MIN, audited_trace
from . import EXIT_OK, Subcommands
from .common import add_config_argument, config_of, open_database


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "trace", help="a case's visits and the people co-present (audited)",
        description="Every visit (place, gate, direction, time) of one pass or one pseudonymous subject between "
        "--from and --to, and every other pass seen at the same place within ±WINDOW minutes of a visit; only "
        "accepted and identified check-ins count as presence. The query is written to the audit log first.",
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--pass", dest="pass_id", metavar="ID", help="the pass id traced")
    who.add_argument("--subject", dest="subject_id", metavar="ID", help="the pseudonymous subject id traced")
    parser.add_argument("--from", dest="start", required=True, metavar="TIME",
                        help="start (ISO 8601: 2024-05-01 or 2024-05-01T08:00; without a zone, the report's time "
                        "zone, Asia/Ho_Chi_Minh by default)")
    parser.add_argument("--to", dest="end", required=True, metavar="TIME", help="end (excluded), as --from")
    parser.add_argument("--window", type=int, default=15, metavar="MIN",
                        help=f"co-presence window either side of a visit, minutes (default 15, at most "
                        f"{MAX_WINDOW_MIN})")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    parser.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                        help="write the result to FILE (mode 0600) instead of standard output")
    parser.add_argument("--actor", required=True, metavar="NAME",
                        help="your name, as the audit log records it (with your OS user)")
    add_config_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..accounts import Accounts

    config = config_of(args)
    actor = args.actor.strip()
    if not actor or len(actor) > 64:
        raise ProvinceError("--actor: give your name (1 to 64 characters) for the audit log")
    zone = _zone(config.report.timezone)
    start, end = parse_time(args.start, zone, "--from"), parse_time(args.end, zone, "--to")
    with open_database(config) as database:
        result = audited_trace(database, Accounts(database), actor, pass_id=args.pass_id,
                               subject_id=args.subject_id, start=start, end=end, window_min=args.window,
                               detail={"via": "cli", "os_user": _os_user(), "format": args.format})
    data = result.to_csv().encode() if args.format == "csv" else result.to_json() + b"\n"
    if args.output is not None:
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # people's movements
        with os.fdopen(descriptor, "wb") as output:
            output.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    print(f"{len(result.visits)} visit(s), {len(result.contacts)} contact check-in(s) of "
          f"{len(result.contact_people())} other person(s)", file=sys.stderr)
    return EXIT_OK


def parse_time(text: str, zone: dt.tzinfo, option: str) -> dt.datetime:
    """An ISO 8601 date or time; one without a zone is in ``zone``."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ProvinceError(f"{option}: {text!r} is not an ISO 8601 date or time (e.g. 2024-05-01T08:00)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ProvinceError(f"report.timezone: unknown time zone {name!r}") from None


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
