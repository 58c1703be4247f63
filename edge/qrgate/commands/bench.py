"""``qrgate bench``: decoder and pipeline speed against baselines measured in the same run (qrgate_tools.bench;
needs qrgate[tools])."""

from __future__ import annotations

import argparse
import json

from . import Subcommands, tools_missing


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure decoder and pipeline speed next to a naive baseline",
        description="Render synthetic gate frames first, then time each decoder backend, the naive baseline "
        "(RGB->grey + pyzbar with all symbologies), each pipeline stage and the whole loop.",
    )
    parser.add_argument("--frames", type=int, default=60, help="frames per case (default 60)")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats per case (default 3)")
    sections = ("sizes", "photos", "revocation", "uplink", "province")
    parser.add_argument("--skip", action="append", default=[], choices=sections,
                        help="leave out a section: sizes (the chain vs bare zxing-cpp at 640x480, 1280x720 and "
                        "2304x1296, ~5 min), photos (../shared/qr-photos), revocation (1M-entry index), uplink "
                        "(real Mosquitto, ~1 min)")
    parser.add_argument("--only", action="append", default=[], choices=sections,
                        help="run only this section (repeatable), without the decoder tables, stages and loop; "
                        "province (2,000 simulated gates, ingest, the daily report: Mosquitto and PostgreSQL, "
                        "~6 min; docs/scale.md) runs only this way")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object at the end")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from qrgate_tools.bench import SECTIONS, run_bench, run_sections

        if args.only:
            results = run_sections([name for name in SECTIONS if name in args.only], args.repeat, print)
        else:
            results = run_bench(frames_per_case=args.frames, repeat=args.repeat,
                                sections=[name for name in SECTIONS if name not in args.skip])
    except ModuleNotFoundError as exc:
        return tools_missing("bench", exc)
    if args.json:
        print(json.dumps(results))
    return 0
