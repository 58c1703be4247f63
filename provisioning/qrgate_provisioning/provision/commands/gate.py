"""``qrgate-provision gate HOST --site S --gate G --direction in|out --board PROFILE``: one gate, end to end."""

from __future__ import annotations

import argparse

from ..inventory import merge, spec_from
from ..provisioner import provision_gate
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
    wheelhouse,
)


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "gate", help="provision one gate over SSH and print its checklist",
        description="Check the target, print what will change, install what differs (packages, qrgate, the "
        "gate's key and certificate, qrgate.toml, trust lists, the unit), then self-test, start and watch for "
        "its birth message on the site broker. A second run changes nothing and says so.",
    )
    add_gate_arguments(parser)
    parser.set_defaults(run=run, action="provision")


def add_gate_arguments(parser: argparse.ArgumentParser, *, host_required: bool = True) -> None:
    parser.add_argument("host", help="the gate's address (as ssh reaches it)")
    row = parser.add_argument_group("the inventory row (else the --inventory file's row for --gate)")
    row.add_argument("--gate", required=True, help="the gate id: device id, certificate CN, MQTT client id")
    row.add_argument("--site", help="the site id")
    row.add_argument("--direction", choices=("in", "out", "both"), help="whether the gate checks people in or out")
    row.add_argument("--board", help="the board profile (hardware/profiles/NAME.toml)")
    row.add_argument("--name", help="the gate's label within its site (default: the gate id)")
    add_common(parser)


def run(args: argparse.Namespace) -> int:
    found = inventory(args)
    row = {"host": args.host, "site": args.site, "direction": args.direction, "board": args.board, "name": args.name,
           **overrides(args)}
    if found is not None:
        spec = found.spec_for(args.gate, row)
        ids = found.gate_ids()  # the CA signs only for gates the inventory names
    else:
        spec = spec_from(merge(row, {"gate": args.gate}), where="the command line")
        ids = frozenset({spec.gate})  # no inventory file: the command line is the inventory
    state = shared(args, ca=open_ca(args), ids=ids, software=wheelhouse(args), brokers=[spec.broker])
    options = run_options(args)

    def report(line: str) -> None:
        print(line, flush=True)

    checklist = run_with_watcher(state, lambda: provision_gate(spec, ssh_options(args), options, state,
                                                               action=args.action, report=report))
    return print_checklist(checklist)
