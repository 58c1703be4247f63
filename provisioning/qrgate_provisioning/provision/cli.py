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
import logging
import sys

from qrgate import __version__
from qrgate.commands import build_command_line, run_command_line

from .commands import PROG

SUBCOMMANDS = {"gate": "gate", "batch": "batch", "renew": "renew", "replace": "replace",
               "decommission": "decommission", "ca": "ca"}


def build_parser() -> argparse.ArgumentParser:
    return build_command_line(
        PROG, __version__,
        "Provision qrgate gates (Raspberry Pis) over SSH from the technician's laptop: target checks, "
        "packages, qrgate from a wheelhouse, the gate's key and certificate (made on the gate, signed by the "
        "site's device CA), its configuration, trust lists and unit, then a self-test and its birth message on "
        "the site broker. Safe to re-run: only what differs is changed.",
        "qrgate_provisioning.provision.commands", SUBCOMMANDS, verbose="log every remote command (never a secret)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
    return run_command_line(args, PROG)


if __name__ == "__main__":
    sys.exit(main())
