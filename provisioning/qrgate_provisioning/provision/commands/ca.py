"""``qrgate-provision ca init DIR --name NAME`` and ``qrgate-provision ca crl --out FILE``: the device CA."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..device_ca import DeviceCA
from . import Subcommands
from .common import CA_ENV, open_ca


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser("ca", help="create the site's device CA, or write its CRL for the broker",
                                   description="The device CA signs the gates' certificates (deny by default: only "
                                   "gates of the inventory, one active certificate each) and keeps their registry "
                                   "and an audit log. Keep its directory on the technician's laptop, mode 0700.")
    actions = parser.add_subparsers(dest="ca_action", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="create a new CA directory", description="Create a CA (EC P-256 key, "
                              "ten-year certificate) in DIR; refuses to overwrite one.")
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument("--name", required=True, help="the CA certificate's CN, e.g. 'qrgate hn-bx-giapbat devices'")
    init.set_defaults(run=run_init)
    crl = actions.add_parser("crl", help="write the CRL (the broker's crlfile)",
                             description="Write the CA's current CRL to FILE; then reload the broker.")
    crl.add_argument("--ca", metavar="DIR", default=os.environ.get(CA_ENV), help=f"the CA (default ${CA_ENV})")
    crl.add_argument("--out", required=True, type=Path, metavar="FILE")
    crl.set_defaults(run=run_crl)


def run_init(args: argparse.Namespace) -> int:
    ca = DeviceCA.create(args.directory, args.name)
    print(f"{args.directory}: device CA {ca.name!r} created; the broker's cafile is {args.directory / 'ca.pem'}")
    return 0


def run_crl(args: argparse.Namespace) -> int:
    written = open_ca(args).write_crl(args.out)
    print(f"{args.out}: CRL #{written.number}, {len(written.revoked_serials)} revoked, next update "
          f"{written.next_update:%Y-%m-%d}; reload the broker (systemctl reload mosquitto)")
    return 0
