"""``qrgate-provision replace HOST --gate G``: a new SD card (or a new Pi) for a gate that is provisioned.

The same as ``gate``, with the identity step certifying a new key made on the new card with action
``replace``: the device CA revokes the old certificate (reason keyCompromise: the old card may be read by
whoever holds it) in the same transaction. The rest of the row comes from the inventory.
"""

from __future__ import annotations

from . import Subcommands
from .gate import add_gate_arguments, run


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "replace", help="provision a new SD card for a gate that has a certificate (same gate id, new key)",
        description="Provision HOST as gate G, which already has an active certificate: a new key is made on the "
        "new card and certified with action replace; the CA revokes the old certificate. Give --crl-out to write "
        "the CRL for the broker.",
    )
    add_gate_arguments(parser)
    parser.set_defaults(run=run, action="replace")
