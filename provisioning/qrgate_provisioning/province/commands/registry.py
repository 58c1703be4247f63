"""``qrgate-province registry import|list|assign``: the places and gates the daily report judges."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from ...errors import ProvinceError
from . import EXIT_OK, Subcommands
from .common import add_config_argument, config_of, open_database


def add_parser(subparsers: Subcommands) -> None:
    registry = subparsers.add_parser(
        "registry", help="places and gates: import a CSV, list, assign a gate to a place",
        description="The registry of places (bus stations, markets, hospitals, factories, restaurants, offices) "
        "and their gates, against which the daily report finds the places not complying.",
    )
    actions = registry.add_subparsers(dest="action", metavar="ACTION", required=True)

    importing = actions.add_parser(
        "import", help="import places (and gates) from a CSV, all or nothing",
        description="Import the places of a CSV (UTF-8, with or without BOM; columns place_id, name, type, "
        "commune, district, address, gate_required, opening_hours and optionally gates as "
        "'DEVICE:DIRECTION[:NAME];...'). Every bad row is reported with its line, and then nothing is imported.",
    )
    importing.add_argument("file", type=Path, metavar="FILE", help="the CSV (see firmware/province/places.example.csv)")
    add_config_argument(importing)
    importing.set_defaults(run=run_import)

    listing = actions.add_parser("list", help="the registered places and their gates",
                                 description="The places by district and commune, with their gates.")
    listing.add_argument("--district", help="only this district")
    listing.add_argument("--json", action="store_true", help="one JSON object per place")
    add_config_argument(listing)
    listing.set_defaults(run=run_list)

    assign = actions.add_parser(
        "assign", help="put a gate at a place (or move it to another)",
        description="Record that device DEVICE is gate NAME of place P, checking people in, out or both "
        "(a 'both' gate takes each person's direction from their last passage at the place).",
    )
    assign.add_argument("device", metavar="DEVICE", help="the gate's device id")
    assign.add_argument("--place", required=True, metavar="P", help="the place id")
    assign.add_argument("--gate", required=True, metavar="NAME", help="the gate's name at the place")
    assign.add_argument("--direction", required=True, choices=("in", "out", "both"))
    add_config_argument(assign)
    assign.set_defaults(run=run_assign)


def run_import(args: argparse.Namespace) -> int:
    from ..registry import Registry

    try:
        text = args.file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProvinceError(f"{args.file}: not UTF-8 (byte {exc.start}); in Excel save as 'CSV UTF-8'") from exc
    with open_database(config_of(args)) as db:
        result = Registry(db).import_csv(text, str(args.file))
    print(f"{args.file}: {result.created} place(s) created, {result.updated} updated, {result.unchanged} unchanged; "
          f"{result.gates_assigned} gate(s) assigned")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    from ..registry import Registry

    with open_database(config_of(args)) as db:
        registry = Registry(db)
        places = registry.places(district=args.district)
        gates_of: dict[str, list[str]] = {}
        for gate in registry.gates():
            gates_of.setdefault(gate.place_id, []).append(f"{gate.device_id}:{gate.direction}:{gate.gate_name}")
    if args.json:
        for place in places:
            print(json.dumps({**asdict(place), "opening_hours": str(place.opening_hours),
                              "gates": gates_of.get(place.place_id, [])}, ensure_ascii=False))
        return EXIT_OK
    print(f"{'place':20} {'district':18} {'commune':18} {'type':12} {'gate?':5} {'hours':17} gates")
    for place in places:
        gates = ";".join(gates_of.get(place.place_id, [])) or "-"
        print(f"{place.place_id:20} {place.district[:18]:18} {place.commune[:18]:18} {place.kind[:12]:12} "
              f"{'yes' if place.gate_required else 'no':5} {str(place.opening_hours)[:17]:17} {gates}")
        print(f"{'':20} {place.name}")
    print(f"{len(places)} place(s)")
    return EXIT_OK


def run_assign(args: argparse.Namespace) -> int:
    from ..registry import Gate, Registry

    gate = Gate(args.device, args.place, args.gate, args.direction)
    with open_database(config_of(args)) as db:
        changed = Registry(db).assign_gate(gate)
    print(f"{gate.device_id}: {'now' if changed else 'already'} gate {gate.gate_name!r} ({gate.direction}) of "
          f"{gate.place_id}")
    return EXIT_OK
