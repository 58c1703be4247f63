"""``qrgate-issuer trust-list build`` and ``trust-list new-signer``: the province's signed trust list, and list keys.

The trust list is every issuer key the gates trust, signed by a list key the gates pin. To rotate
list keys, a list first names the next key (``--next-signer``) while signed by the old one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from qrgate.errors import TrustStoreError

from ..trustlist import (
    LIST_SIGNER_ALGORITHMS,
    build_trust_list,
    entries_from_paths,
    load_list_signer,
    load_public_spki,
    new_list_signer,
    spki,
    write_list_signer,
)
from . import EXIT_OK, Subcommands
from .arguments import positive_float, positive_int
from .output import fail, iso, write_list_atomically

HOUR_S = 3_600
DEFAULT_VALID_HOURS = 168.0  # a week: the hard end; gates call a list stale long before (trust.max_age_h)


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "trust-list", help="build and sign the province's trust list; create list-signing keys",
        description="The trust list is every issuer key the gates trust, signed by a list key the gates pin.",
    )
    commands = parser.add_subparsers(dest="trust_list_command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build", help="build and sign a trust list",
        description="Sign a trust list holding every key found in --keys (certificates and JSON key files, as a "
        "gate's trust.paths). Its list keys are the signer and every --next-signer: to rotate, first sign with the old "
        "key naming the new one, later with the new key alone (docs/trust.md).",
    )
    build.add_argument("--signer", required=True, type=Path, metavar="KEY.pem",
                       help="the list key's private PEM (ES256 or Ed25519)")
    build.add_argument("--keys", required=True, nargs="+", action="extend", type=Path, metavar="DIR_OR_FILE",
                       help="issuer certificates (.pem/.crt/.cer/.der) and JSON key files, or directories of them")
    build.add_argument("--version", required=True, type=positive_int, metavar="N",
                       help="list version: higher than any published")
    build.add_argument("--valid-hours", type=positive_float, default=DEFAULT_VALID_HOURS, metavar="H",
                       help=f"hours until the list expires (default {DEFAULT_VALID_HOURS:g})")
    build.add_argument("--next-signer", action="append", default=[], type=Path, metavar="PUB.pem",
                       help="another list key the gates pin from this list on (its public PEM); repeatable")
    build.add_argument("--out", required=True, type=Path, metavar="FILE", help="where to write the signed list")
    build.set_defaults(run=run_build)

    signer = commands.add_parser(
        "new-signer", help="create a list-signing key",
        description="Write list-<kid>.key (private, mode 0600: keep it offline) and list-<kid>.pem (the public key "
        "gates pin in their trust-list signer directory).",
    )
    signer.add_argument("--alg", choices=LIST_SIGNER_ALGORITHMS, default="EdDSA",
                        help="signature algorithm (default EdDSA)")
    signer.add_argument("--out-dir", required=True, type=Path, metavar="DIR")
    signer.set_defaults(run=run_new_signer)


def run_build(args: argparse.Namespace) -> int:
    try:
        signer = load_list_signer(args.signer)
        entries = entries_from_paths(args.keys)
        next_signers = [load_public_spki(path) for path in args.next_signer]
        issued_at = int(time.time())
        document = build_trust_list(signer, entries, version=args.version, issued_at=issued_at,
                                    expires_at=issued_at + int(args.valid_hours * HOUR_S), next_signers=next_signers)
        write_list_atomically(args.out, document)
    except (OSError, ValueError, TrustStoreError) as exc:
        return fail(exc)
    print(f"trust list v{args.version}: {len(entries)} keys, {len({spki(signer), *next_signers})} list key(s), "
          f"expires {iso(issued_at + int(args.valid_hours * HOUR_S))}, {len(document)} bytes -> {args.out}")
    return EXIT_OK


def run_new_signer(args: argparse.Namespace) -> int:
    try:
        paths = write_list_signer(new_list_signer(args.alg), args.out_dir)
    except (OSError, ValueError) as exc:
        return fail(exc)
    print(f"private key {paths['private_key']} (keep offline), public key {paths['public_key']} (pin on gates)")
    return EXIT_OK
