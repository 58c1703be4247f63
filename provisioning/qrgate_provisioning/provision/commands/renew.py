"""``qrgate-provision renew GATE``: a new key on the gate and a new certificate for it; the old one is revoked."""

from __future__ import annotations

import argparse

from ..inventory import GateSpec, merge, spec_from
from ..lifecycle import renew_gate
from . import Subcommands
from .common import (
    add_common,
    inventory,
    open_ca,
    overrides,
    print_checklist,
    run_options,
    run_with_watcher,
    shared,
    ssh_options,
)


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "renew", help="renew a gate's certificate: new key on the gate, new certificate, old one revoked",
        description="Make a new key on the gate (device.key.new), have the device CA certify it (action renew; the "
        "old certificate is revoked as superseded), install it, swap it in, restart the unit and watch for its "
        "birth message. A renewal cut off half-way is completed by running renew again.",
    )
    add_reach_arguments(parser)
    parser.set_defaults(run=run)


def add_reach_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gate", metavar="GATE", help="the gate id")
    parser.add_argument("--host", help="the gate's address (default: its inventory row's host)")
    add_common(parser, software=False, files=False)


def reach_spec(args: argparse.Namespace, *, required: bool = True) -> GateSpec | None:
    """The gate's row (inventory, with the command line's host and SSH options) for reaching it."""
    found = inventory(args)
    row = found.row_for(args.gate) if found is not None else None
    values = merge(found.defaults if found is not None else {}, row or {}, overrides(args),
                   {"gate": args.gate, "host": args.host})
    if not values.get("host"):
        if required:
            raise SystemExit(f"qrgate-provision: no host for {args.gate}: give --host or an --inventory that lists it")
        return None
    if row is not None:
        return spec_from(values, where=f"{args.inventory}, gate {args.gate}",
                         base_dir=found.path.parent if found is not None else None)
    # Not in an inventory: only the address matters for reaching it.
    filler = {"site": "unlisted", "direction": "in", "board": "unlisted", "broker": values.get("broker") or "unlisted"}
    return spec_from({**filler, **values}, where="the command line")


def run(args: argparse.Namespace) -> int:
    spec = reach_spec(args)
    assert spec is not None
    found = inventory(args)
    state = shared(args, ca=open_ca(args), ids=found.gate_ids() if found else frozenset({spec.gate}), software=None,
                   brokers=[spec.broker] if spec.broker != "unlisted" else [])
    checklist = run_with_watcher(state, lambda: renew_gate(spec, ssh_options(args), run_options(args), state))
    return print_checklist(checklist)
