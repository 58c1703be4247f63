"""``qrgate-province command-key new FILE --kid ID`` and ``command-key show FILE``: the operator keys that sign
commands to gates.

``new`` makes an Ed25519 key in FILE (0600, never overwriting one) on the machine that sends commands; the private
half never leaves it. Both print the public half as a gate's ``operators.json`` (``remote.operator_keys``):
install it on every gate that should obey this key (merge the ``keys`` entries when a gate trusts several).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...errors import ProvinceError
from ..command_signing import load_operator_key, new_operator_key, operator_keys_file
from . import EXIT_OK, Subcommands


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "command-key", help="make or show an operator key that signs commands to gates",
        description="Make an operator signing key (Ed25519, in a 0600 file) or show one; both print the "
        "operators.json a gate installs (its remote.operator_keys) to obey it.",
    )
    actions = parser.add_subparsers(dest="key_action", metavar="ACTION", required=True)
    new = actions.add_parser("new", help="a new key in FILE (refuses to overwrite one)")
    new.add_argument("file", type=Path, metavar="FILE")
    new.add_argument("--kid", required=True, metavar="ID", help="the key's id, e.g. ops-2026 (at most 64 characters)")
    show = actions.add_parser("show", help="the operators.json entry of the key in FILE")
    show.add_argument("file", type=Path, metavar="FILE")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.key_action == "new":
        kid = args.kid.strip()
        if not kid or len(kid) > 64 or any(c.isspace() for c in kid):
            raise ProvinceError("--kid: 1 to 64 characters without spaces")
        key = new_operator_key(args.file, kid)
        print(f"operator key {kid} written to {args.file} (mode 0600); install this as each gate's "
              "remote.operator_keys file (e.g. /etc/qrgate/operators.json):", file=sys.stderr)
    else:
        key = load_operator_key(args.file)
    sys.stdout.write(operator_keys_file([key]))
    return EXIT_OK
