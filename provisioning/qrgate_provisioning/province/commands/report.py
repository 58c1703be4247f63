"""``qrgate-province report [--day D]``: build a day's report, keep it, write its CSV and PDF, publish it.

The systemd timer (firmware/province) runs it at 06:00 Asia/Ho_Chi_Minh for the day before; ``--day`` builds
any day on demand (again, if it was built already: the new build replaces the old in the database and the files).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path

from . import EXIT_OK, Subcommands
from .common import add_config_argument, config_of, open_database


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "report", help="the daily report of a day: CSV, PDF, stored, retained MQTT message",
        description="Build the report of one local day (report.timezone): places registered, with a gate, gates "
        "working, scans, places not complying and why, per district and commune. Stores it for the dashboard, "
        "writes DAY.csv and DAY.pdf, publishes it retained on the broker, prints a summary.",
    )
    parser.add_argument("--day", type=dt.date.fromisoformat, metavar="YYYY-MM-DD",
                        help="the day (default: yesterday in report.timezone)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where to write DAY.csv and DAY.pdf "
                        "(default report.output_dir)")
    parser.add_argument("--no-publish", action="store_true", help="do not publish it on the broker")
    parser.add_argument("--json", action="store_true", help="print the report's JSON instead of the summary")
    add_config_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..report import build_report, zone_of
    from ..report_csv import report_csv
    from ..report_pdf import report_pdf
    from ..report_publish import publish_report
    from ..report_store import save_report

    config = config_of(args)
    settings = config.report
    day = args.day or (dt.datetime.now(zone_of(settings.timezone)).date() - dt.timedelta(days=1))
    with open_database(config) as db:
        report = build_report(db, day, settings)
        with db.connection() as conn:
            save_report(conn, report)
    out = args.out or settings.output_dir
    csv_path = _write_atomically(out / f"{day.isoformat()}.csv", report_csv(report).encode("utf-8"))
    pdf_path = _write_atomically(out / f"{day.isoformat()}.pdf", report_pdf(report))
    if args.json:
        print(report.to_json().decode())
    else:
        scans = report.scans
        print(f"report of {day.isoformat()} ({settings.timezone}): {report.places_registered} places registered, "
              f"{report.places_with_gate} with a gate, {report.gates_working}/{report.gates_registered} gates "
              f"working; {scans.total} scans ({scans.accepted} accepted, {scans.identified} identified, "
              f"{scans.rejected} rejected; {scans.inbound} in, {scans.outbound} out); "
              f"{report.places_non_complying} places not complying")
        print(f"written {csv_path} and {pdf_path}")
    if settings.publish and not args.no_publish:
        publish_report(report, config.broker)  # ProvinceError (exit 1) if the broker does not take it
        if not args.json:
            print("published (retained)")
    return EXIT_OK


def _write_atomically(path: Path, data: bytes) -> Path:
    """Write the file whole or not at all: the dashboard or a mail job may be reading the previous build."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
