"""``qrgate-issuer key new``: create an issuer signing key, qrgate (EdDSA, ES256) or DCC-style (PS256, ES256).

Writes the private key (keep it offline: it never goes on a gate), the trust entry for the gates'
trust list and, for a DCC-style key, its self-signed signing certificate.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from ..keys import new_dcc_issuer_key, new_issuer_key, write_issuer_files
from . import EXIT_OK, Subcommands
from .arguments import country, days, issuer_id
from .output import usage

PASS_ALGORITHMS = ("EdDSA", "ES256")  # a PS256 signature alone would not fit a 3 cm code
DCC_ALGORITHMS = ("PS256", "ES256")  # the two the DCC specification allows
MAX_CERTIFICATE_DAYS = 10 * 366
DEFAULT_CERTIFICATE_DAYS = 365


def add_parser(subparsers: Subcommands) -> None:
    key = subparsers.add_parser("key", help="issuer signing keys", description="Issuer signing keys.")
    actions = key.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new",
        help="create an issuer signing key",
        description="Create an issuer signing key and write <issuer>-<kid>.key (private, mode 0600: keep it "
        "offline), <issuer>-<kid>.trust.json (for the gates' trust list) and, for a DCC-style key, "
        "<issuer>-<kid>.crt.pem (its self-signed signing certificate).",
    )
    kind = new.add_mutually_exclusive_group(required=True)
    kind.add_argument("--issuer", type=issuer_id, help="qrgate issuer id passes will carry, e.g. VN-HN")
    kind.add_argument("--dcc-country", metavar="CC", type=country,
                      help="DCC-style key for this country (ISO 3166-1 alpha-2, e.g. VN)")
    new.add_argument("--alg", required=True, choices=sorted({*PASS_ALGORITHMS, *DCC_ALGORITHMS}),
                     help=f"qrgate: {' or '.join(PASS_ALGORITHMS)}; DCC: {' or '.join(DCC_ALGORITHMS)}")
    new.add_argument("--valid-days", type=days(MAX_CERTIFICATE_DAYS), metavar="N",
                     help=f"DCC only: the certificate's validity from now (default {DEFAULT_CERTIFICATE_DAYS})")
    new.add_argument("--out", required=True, metavar="DIR", type=Path, help="directory to write the files to")
    new.set_defaults(run=run_new)


def run_new(args: argparse.Namespace) -> int:
    if args.issuer is not None:
        if args.alg not in PASS_ALGORITHMS:
            return usage(f"a qrgate issuer key is {' or '.join(PASS_ALGORITHMS)}, not {args.alg}: "
                         "an RSA signature would not fit a 3 cm QR code")
        if args.valid_days is not None:
            return usage("--valid-days is for --dcc-country keys; a qrgate key's validity is set in the trust list")
        key = new_issuer_key(args.issuer, args.alg)
        formats = ["qrgate"]
    else:
        if args.alg not in DCC_ALGORITHMS:
            return usage(f"a DCC signing key is {' or '.join(DCC_ALGORITHMS)}, not {args.alg}")
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        valid_days = DEFAULT_CERTIFICATE_DAYS if args.valid_days is None else args.valid_days
        key = new_dcc_issuer_key(args.dcc_country, args.alg, not_before=start,
                                 not_after=start + dt.timedelta(days=valid_days))
        formats = ["dcc"]
    paths = write_issuer_files(key, args.out, formats=formats)
    print(f"issuer {key.issuer}, {key.alg}, kid {key.kid.hex()}")
    print(f"private key: {paths['private_key']}  (keep it offline; it never goes on a gate)")
    print(f"trust entry: {paths['trust']}  (for the gates' trust list)")
    if "certificate" in paths:
        print(f"certificate: {paths['certificate']}")
    return EXIT_OK
