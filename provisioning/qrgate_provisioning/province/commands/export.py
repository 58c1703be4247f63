"""``qrgate-province export [--once] [--max-batches N]``: push the check-ins to the national system.

Without ``--once`` it is a service: it catches up, then looks for new check-ins every ``export.poll_interval_s``,
and after a temporary failure it waits as long and tries again. Stopping it at any moment (even SIGKILL) is safe:
the batch in flight is sent again, with the same id and bytes, by the next run."""

from __future__ import annotations

import argparse
import logging
import time

from ..export import ExportReport, export_run
from . import EXIT_FAILED, EXIT_OK, Subcommands
from .common import add_config_argument, config_of, open_database

log = logging.getLogger(__name__)


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "export", help="push the check-ins to the national system (HTTPS, batches, resumable)",
        description="Send the check-ins not yet acknowledged to export.endpoint in batches, resuming after the "
        "last acknowledged one; a batch is retried with the same id until the receiver acknowledges it.",
    )
    parser.add_argument("--once", action="store_true",
                        help="catch up, then exit (0: caught up; 1: a batch failed all its retries)")
    parser.add_argument("--max-batches", type=int, default=None, metavar="N",
                        help="stop after N acknowledged batches")
    add_config_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.max_batches is not None and args.max_batches < 1:
        raise ValueError("--max-batches: give 1 or more")
    config = config_of(args)
    settings = config.export
    with open_database(config) as database:
        left = args.max_batches
        while True:
            report = export_run(database, settings, max_batches=left)
            if args.once or report.batches or report.error:  # a service idle for hours prints nothing
                print(_summary(report), flush=True)
            if left is not None:
                left -= report.batches
                if left <= 0:
                    return EXIT_OK
            if args.once:
                return EXIT_OK if report.error is None else EXIT_FAILED
            time.sleep(settings.poll_interval_s)


def _summary(report: ExportReport) -> str:
    state = "caught up" if report.caught_up else (f"stopped: {report.error}" if report.error else "stopped")
    return (f"export: {report.batches} batch(es), {report.records} check-in(s) acknowledged"
            f"{f' ({report.duplicates} already held by the receiver)' if report.duplicates else ''}, "
            f"{report.retries} retry(ies); {state}")
