"""``qrgate-province purge [--days N] [--dry-run]``: delete the check-ins older than the retention limit, and
report what went per day (and how much of it had never reached the national system)."""

from __future__ import annotations

import argparse

from ..retention import purge
from . import EXIT_OK, Subcommands
from .common import add_config_argument, config_of, open_database


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "purge", help="delete check-ins older than the retention limit (default 28 days)",
        description="Delete the check-ins decided more than N days ago (retention.days, default 28), in small "
        "batches, and the export's unsent copies of them; print the count per day and how many were never "
        "exported. Every run, dry or not, is recorded in retention_runs.",
    )
    parser.add_argument("--days", type=int, default=None, metavar="N", help="keep N days (default retention.days)")
    parser.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    add_config_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    settings = config.retention
    days = args.days if args.days is not None else settings.days
    with open_database(config) as database:
        report = purge(database, days, dry_run=args.dry_run, batch_size=settings.batch_size,
                       timezone=config.report.timezone)
    print(report.text(), flush=True)
    return EXIT_OK
