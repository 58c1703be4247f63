"""``qrgate-provision decommission GATE``: revoke its certificate, write the CRL, clear its topics, stop it."""

from __future__ import annotations

import argparse

from ..lifecycle import FLUSH_TIMEOUT_S, decommission_gate
from . import Subcommands
from .common import inventory, open_ca, print_checklist, run_options, run_with_watcher, shared, ssh_options
from .renew import add_reach_arguments, reach_spec

REASONS = ("cessation_of_operation", "key_compromise", "affiliation_changed", "superseded", "unspecified")


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "decommission", help="retire a gate: flush its events, stop it, clear its topics, revoke its certificate",
        description="If the gate is reachable: wait for its pending events to be delivered (refuse to revoke while "
        "any remain, unless --force), stop and disable the unit, clear its retained status and availability on the "
        "broker, remove its key. Then revoke its certificate and write the CRL (--crl-out) for the broker. An "
        "unreachable gate is revoked all the same. Its delivered events stay in the province's store.",
    )
    add_reach_arguments(parser)
    parser.add_argument("--reason", choices=REASONS, default="cessation_of_operation",
                        help="the revocation reason (key_compromise for a stolen gate)")
    parser.add_argument("--force", action="store_true", help="revoke even with events still pending on the gate")
    parser.add_argument("--flush-timeout", type=float, default=FLUSH_TIMEOUT_S, metavar="S",
                        help=f"how long to wait for pending events to be delivered (default {FLUSH_TIMEOUT_S:g} s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    spec = reach_spec(args, required=False)
    found = inventory(args)
    state = shared(args, ca=open_ca(args), ids=found.gate_ids() if found else frozenset({args.gate}), software=None,
                   brokers=[])
    checklist = run_with_watcher(state, lambda: decommission_gate(spec, args.gate, ssh_options(args),
                                                                  run_options(args), state, force=args.force,
                                                                  reason=args.reason,
                                                                  flush_timeout_s=args.flush_timeout))
    return print_checklist(checklist)
