"""``qrgate-issuer broker-config site`` and ``broker-config province``: render a broker's Mosquitto files.

Writes ``mosquitto.conf`` and ``qrgate.acl`` (``qrgate_provisioning.brokerconf``) into a directory.
Paths given are where the files will be on the broker's machine, not on this one.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

from qrgate.errors import ConfigError

from ..brokerconf import (
    ACL_FILE_NAME,
    BRIDGE_PROTOCOLS,
    DEFAULT_CRL_FILE,
    ProvincialBroker,
    RenderedBroker,
    SiteBroker,
    TlsFiles,
    write_provincial_broker,
    write_site_broker,
)
from . import EXIT_OK, Subcommands

CERTS_DIR = "/etc/mosquitto/certs"


def add_parser(subparsers: Subcommands) -> None:
    """Register ``broker-config site`` and ``broker-config province`` on ``qrgate-issuer``."""
    broker = subparsers.add_parser(
        "broker-config", help="render the site or provincial Mosquitto configuration",
        description="Render mosquitto.conf and qrgate.acl from firmware/mosquitto/ into a directory. "
        "Paths given are where the files will be on the broker's machine.",
    )
    kinds = broker.add_subparsers(dest="kind", metavar="KIND", required=True)

    site = kinds.add_parser(
        "site", help="a site's broker, bridged to the province",
        description="The site broker: the gates' mutual-TLS listener, their ACL, and the bridge to the province. "
        "The bridge's certificate must carry the CN site-<site-id>.",
    )
    site.add_argument("--site-id", required=True, help="the site's id (also in its bridge certificate's CN)")
    site.add_argument("--province-host", required=True, help="the provincial broker's host name or IPv4 address")
    site.add_argument("--province-port", type=int, default=8883)
    site.add_argument("--bridge-ca-file", default=f"{CERTS_DIR}/province-ca.pem",
                      help="CA that signed the provincial broker's certificate")
    site.add_argument("--bridge-cert-file", default=f"{CERTS_DIR}/bridge.pem", help="this site's bridge certificate")
    site.add_argument("--bridge-key-file", default=f"{CERTS_DIR}/bridge.key", help="this site's bridge key")
    site.add_argument("--reader", action="append", default=[], metavar="CN",
                      help="a site-local reader of the gates' topics (repeatable)")
    site.add_argument("--restart-timeout", type=int, nargs=2, default=(5, 60), metavar=("BASE", "CAP"),
                      help="bridge reconnect backoff in seconds (default: 5 60)")
    site.add_argument("--bridge-protocol", choices=BRIDGE_PROTOCOLS, default="mqttv311",
                      help="MQTT version between the brokers (default mqttv311: see docs/mqtt.md)")
    site.add_argument("--max-queued-messages", type=int, default=100_000)
    site.add_argument("--autosave-changes", type=int, default=100,
                      help="save the broker's database after this many changes (see docs/mqtt.md)")
    _add_common_arguments(site)
    site.set_defaults(run=run_site)

    province = kinds.add_parser(
        "province", help="the provincial broker",
        description="The provincial broker: its mutual-TLS listener and the ACL of sites, gates and roles.",
    )
    province.add_argument("--site", action="append", default=[], metavar="SITE=GATE[,GATE...]",
                          help="a site and its gates' device ids (repeatable)")
    province.add_argument("--sites-csv", type=Path, metavar="FILE",
                          help="CSV with the columns site_id,device_id: one row per gate")
    province.add_argument("--consumer", action="append", default=[], metavar="CN",
                          help="a backend consumer (repeatable)")
    province.add_argument("--operator", action="append", default=[], metavar="CN", help="an operator (repeatable)")
    province.add_argument("--issuer", action="append", default=[], metavar="CN",
                          help="a trust-list issuer (repeatable)")
    province.add_argument("--service", action="append", default=[], metavar="CN",
                          help="the province's operations service, qrgate-province (repeatable)")
    province.add_argument("--max-queued-messages", type=int, default=1_000_000)
    province.add_argument("--autosave-interval", type=int, default=30, metavar="SECONDS",
                          help="save the broker's database this often (a timer: docs/scale.md says why)")
    _add_common_arguments(province)
    province.set_defaults(run=run_province)


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True,
                        help="directory to write mosquitto.conf and qrgate.acl into")
    parser.add_argument("--port", type=int, default=8883)
    parser.add_argument("--bind-address", default="0.0.0.0")
    parser.add_argument("--ca-file", default=f"{CERTS_DIR}/ca.pem", help="CA that signs the clients' certificates")
    parser.add_argument("--cert-file", default=f"{CERTS_DIR}/server.pem", help="this broker's certificate")
    parser.add_argument("--key-file", default=f"{CERTS_DIR}/server.key", help="this broker's key")
    parser.add_argument("--crl-file", default=DEFAULT_CRL_FILE,
                        help="the CRLs of the CAs in --ca-file (revoked client certificates; required to start)")
    parser.add_argument("--acl-file", default=f"/etc/mosquitto/{ACL_FILE_NAME}", help="where qrgate.acl is installed")
    parser.add_argument("--persistence-dir", default="/var/lib/mosquitto")
    parser.add_argument("--log-file", help="log to this file (default: stderr, i.e. the journal under systemd)")
    parser.add_argument("--run-as-user", default="mosquitto")


def run_site(args: argparse.Namespace) -> int:
    site = SiteBroker(
        site_id=args.site_id, province_host=args.province_host, province_port=args.province_port,
        listener_tls=TlsFiles(args.ca_file, args.cert_file, args.key_file),
        bridge_tls=TlsFiles(args.bridge_ca_file, args.bridge_cert_file, args.bridge_key_file),
        port=args.port, bind_address=args.bind_address, acl_file=args.acl_file,
        persistence_dir=args.persistence_dir, log_file=args.log_file, run_as_user=args.run_as_user,
        restart_timeout_s=tuple(args.restart_timeout), bridge_protocol=args.bridge_protocol,
        autosave_changes=args.autosave_changes,
        max_queued_messages=args.max_queued_messages, readers=tuple(args.reader), crl_file=args.crl_file,
    )
    note = f"site {args.site_id}: the bridge's certificate CN must be {site.bridge_id}"
    _report(write_site_broker(site, args.out), note)
    return EXIT_OK


def run_province(args: argparse.Namespace) -> int:
    sites = _sites(args.site, args.sites_csv)
    province = ProvincialBroker(
        listener_tls=TlsFiles(args.ca_file, args.cert_file, args.key_file), sites=sites,
        consumers=tuple(args.consumer), operators=tuple(args.operator), issuers=tuple(args.issuer),
        services=tuple(args.service),
        port=args.port, bind_address=args.bind_address, acl_file=args.acl_file,
        persistence_dir=args.persistence_dir, log_file=args.log_file, run_as_user=args.run_as_user,
        autosave_interval_s=args.autosave_interval, max_queued_messages=args.max_queued_messages,
        crl_file=args.crl_file,
    )
    gates = sum(len(devices) for devices in sites.values())
    _report(write_provincial_broker(province, args.out), f"province: {len(sites)} site(s), {gates} gate(s)")
    return EXIT_OK


def _sites(options: Sequence[str], csv_path: Path | None) -> dict[str, list[str]]:
    """``SITE=GATE,GATE`` options and CSV rows (site_id,device_id) merged into site -> gates."""
    sites: dict[str, list[str]] = {}
    for option in options:
        site_id, separator, devices = option.partition("=")
        if not separator or not devices:
            raise ConfigError(f"--site {option!r}: expected SITE=GATE[,GATE...]")
        sites.setdefault(site_id, []).extend(device.strip() for device in devices.split(","))
    if csv_path is not None:
        try:
            with open(csv_path, newline="", encoding="utf-8") as file:
                rows = list(csv.DictReader(file))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"{csv_path}: cannot read: {exc}") from exc
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            row_site, row_device = row.get("site_id"), row.get("device_id")
            if not row_site or not row_device:
                raise ConfigError(f"{csv_path}:{line}: a row needs both site_id and device_id")
            sites.setdefault(row_site.strip(), []).append(row_device.strip())
    return sites


def _report(rendered: RenderedBroker, note: str) -> None:
    print(f"wrote {rendered.config_file} and {rendered.acl_file} ({note})")
