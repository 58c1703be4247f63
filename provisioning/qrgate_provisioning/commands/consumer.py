"""``qrgate-issuer consumer run`` and ``consumer summary``: the province's reference consumer and its report.

Also ``python -m qrgate_provisioning.consumer`` (``main``), as docs/mqtt.md describes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from qrgate.errors import QrgateError

from ..consumer import DEFAULT_GROUP, SESSION_EXPIRY_S, Consumer, ConsumerTls, daily_summary, open_store
from ..errors import ConsumerError
from . import Subcommands


def add_parser(subparsers: Subcommands) -> None:
    """Register ``consumer run`` and ``consumer summary`` (each sets ``run(args) -> int``)."""
    consumer = subparsers.add_parser(
        "consumer", help="the province's reference consumer of check-ins, and its daily summary",
        description="Store every gate's check-ins exactly once (SQLite or PostgreSQL) and acknowledge them "
        "end to end; print the daily per-site summary.",
    )
    actions = consumer.add_subparsers(dest="action", metavar="ACTION", required=True)

    run = actions.add_parser(
        "run", help="consume check-ins until SIGTERM/SIGINT",
        description="Subscribe to every gate's check-ins with a shared subscription, store each once, "
        "acknowledge after the commit. Several instances with different --client-id share the load.",
    )
    run.add_argument("--host", required=True, help="the provincial broker")
    run.add_argument("--port", type=int, default=8883)
    run.add_argument("--ca-file", help="CA of the broker's certificate (enables TLS)")
    run.add_argument("--cert-file", help="this consumer's client certificate (mutual TLS)")
    run.add_argument("--key-file", help="this consumer's private key")
    run.add_argument("--client-id",
                     help="stable per instance: the broker keeps its session (default: qrgate-consumer-<host name>)")
    run.add_argument("--group", default=DEFAULT_GROUP, help=f"shared-subscription group (default {DEFAULT_GROUP})")
    run.add_argument("--session-expiry", type=int, default=SESSION_EXPIRY_S, metavar="SECONDS",
                     help="how long the broker keeps this consumer's session and queue while it is away "
                     "(default 7 days)")
    run.add_argument("--no-end-to-end-ack", action="store_true", help="do not acknowledge to the devices")
    _add_store_arguments(run)
    run.set_defaults(run=_run_consumer)

    summary = actions.add_parser(
        "summary", help="per-site check-ins of one day",
        description="Per site: check-ins the gates decided on one local day, accepted, rejected, devices seen.",
    )
    summary.add_argument("--day", type=dt.date.fromisoformat, help="YYYY-MM-DD (default: yesterday in --tz)")
    summary.add_argument("--tz", default="UTC",
                         help="the authorities' time zone, e.g. Asia/Ho_Chi_Minh (default UTC)")
    summary.add_argument("--json", action="store_true", help="one JSON object per site instead of a table")
    _add_store_arguments(summary)
    summary.set_defaults(run=_run_summary)


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=Path("checkins.sqlite"),
                        help="SQLite store (default checkins.sqlite)")
    parser.add_argument("--postgres", metavar="DSN",
                        help="store in PostgreSQL instead, e.g. 'dbname=qrgate host=/run/postgresql'")


def _run_consumer(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    store = open_store(args.db, args.postgres)
    tls = ConsumerTls(args.ca_file, args.cert_file, args.key_file) if args.ca_file else None
    consumer = Consumer(store, host=args.host, port=args.port, client_id=args.client_id, group=args.group, tls=tls,
                        session_expiry_s=args.session_expiry, end_to_end_ack=not args.no_end_to_end_ack)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    consumer.start()
    try:
        stop.wait()
    finally:
        consumer.stop()
        store.close()
    print(json.dumps(asdict(consumer.stats)))
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    try:
        zone = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConsumerError(f"unknown time zone {args.tz!r}") from exc
    day = args.day or (dt.datetime.now(zone).date() - dt.timedelta(days=1))
    store = open_store(args.db, args.postgres)
    try:
        sites = daily_summary(store, day, zone)
    finally:
        store.close()
    if args.json:
        for site in sites:
            print(json.dumps({"day": day.isoformat(), **asdict(site), "devices_seen": list(site.devices_seen)}))
        return 0
    print(f"check-ins on {day.isoformat()} ({args.tz})")
    print(f"{'site':24} {'check-ins':>9} {'accepted':>9} {'rejected':>9} {'devices':>8}")
    for site in sites:
        print(f"{site.site_id:24} {site.checkins:9d} {site.accepted:9d} {site.rejected:9d} {len(site.devices_seen):8d}")
    if not sites:
        print("(none)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m qrgate_provisioning.consumer ACTION ...``: ``qrgate-issuer consumer ACTION ...`` alone."""
    parser = argparse.ArgumentParser(prog="python -m qrgate_provisioning.consumer",
                                     description="The qrgate reference consumer (also `qrgate-issuer consumer`).")
    add_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(["consumer", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.run(args))
    except QrgateError as exc:
        print(f"qrgate consumer: {exc}", file=sys.stderr)
        return 1
