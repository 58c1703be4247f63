"""The ``qrgate-provision`` command: a technician's laptop provisions Raspberry Pi gates over SSH.

    gate HOST --site S --gate G --direction in|out --board PROFILE   one gate, end to end, with a checklist
    batch INVENTORY                                                  many gates at once, with a summary table
    renew GATE                                                       a new key and certificate on the gate
    replace HOST --gate G                                            a new SD card for a provisioned gate
    decommission GATE                                                revoke, clear its topics, stop it
    ca init DIR --name NAME / ca crl --out FILE                      the site's device CA and its CRL

argparse with one module per subcommand under ``qrgate_provisioning.provision.commands``, as ``qrgate`` and
``qrgate-issuer`` do. Exit codes: 0 every checklist item ok; 1 something failed (the checklist says what);
2 usage error. docs/provisioning.md walks a technician through it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from qrgate import __version__
from qrgate.errors import QrgateError

from .commands import EXIT_FAILED, PROG

SUBCOMMANDS = {"gate": "gate", "batch": "batch", "renew": "renew", "replace": "replace",
               "decommission": "decommission", "ca": "ca"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Provision qrgate gates (Raspberry Pis) over SSH from the technician's laptop: target checks, "
        "packages, qrgate from a wheelhouse, the gate's key and certificate (made on the gate, signed by the "
        "site's device CA), its configuration, trust lists and unit, then a self-test and its birth message on "
        "the site broker. Safe to re-run: only what differs is changed.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every remote command (never a secret)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS.values():
        module = importlib.import_module(f"qrgate_provisioning.provision.commands.{module_name}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        return int(args.run(args))
    except (ValueError, OSError, QrgateError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
