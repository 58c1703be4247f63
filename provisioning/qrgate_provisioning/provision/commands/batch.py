"""``qrgate-provision batch INVENTORY``: every gate of an inventory, several at once, then a summary table."""

from __future__ import annotations

import argparse

from ..batch import DEFAULT_CONCURRENCY, make_display, run_batch, summary_text
from ..inventory import load_inventory
from . import Subcommands
from .common import add_common, open_ca, overrides, run_options, run_with_watcher, shared, ssh_options, wheelhouse


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "batch", help="provision every gate of an inventory, several at once",
        description="Provision every row of INVENTORY (TOML or CSV: host, site, gate, direction, board) as `gate` "
        "would, CONCURRENCY at a time, with a progress view and a summary table; a gate that fails does not stop "
        "the others. Command-line files and settings apply to every row that does not set its own.",
    )
    parser.add_argument("inventory_file", metavar="INVENTORY", help="the inventory (TOML or CSV)")
    parser.add_argument("--concurrency", "-j", type=int, default=DEFAULT_CONCURRENCY,
                        help=f"gates provisioned at once (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--only", action="append", default=[], metavar="GATE", help="only these gates (repeat)")
    parser.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    parser.add_argument("--checklists", action="store_true", help="print every gate's checklist, not only failures")
    add_common(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    found = load_inventory(args.inventory_file)
    specs = found.specs(over_defaults=overrides(args))
    if args.only:
        specs = [spec for spec in specs if spec.gate in set(args.only)]
    state = shared(args, ca=open_ca(args), ids=found.gate_ids(), software=wheelhouse(args),
                   brokers={spec.broker for spec in specs})
    display = make_display(specs, plain=args.plain)
    results = run_with_watcher(state, lambda: run_batch(specs, ssh_options(args), run_options(args), state,
                                                        concurrency=args.concurrency, display=display))
    for result in results:
        if args.checklists or not result.checklist.ok:
            print(result.checklist.render(), end="\n\n")
    print(summary_text(results), flush=True)
    return 0 if all(result.checklist.ok for result in results) else 1
