"""``qrgate demo``: a whole check-in point on this machine (see qrgate_tools.demo; needs qrgate[tools])."""

from __future__ import annotations

import argparse
import sys

from ..errors import QrgateError
from . import Subcommands, tools_missing


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the demo gate (synthetic camera, mock GPIO, its own local Mosquitto)",
        description="Start a local Mosquitto, mint a demo issuer and passes, and run the gate daemon on a "
        "synthetic scene of visitors. Exits 0 when every visitor got the expected verdict and no event was lost.",
    )
    parser.add_argument("--headless", action="store_true", help="no live display; runs the scene as fast as it decodes")
    parser.add_argument("--json", action="store_true", help="print only the summary, as one JSON object")
    parser.add_argument("--camera", choices=("synthetic", "usb"), default="synthetic",
                        help="synthetic gate scene (default) or a real USB webcam (show your own passes)")
    parser.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                        help="pace the synthetic scene at the camera's frame rate (default: on unless --headless)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from qrgate_tools.demo import run_demo

        summary = run_demo(headless=args.headless or args.json, as_json=args.json, camera=args.camera,
                           realtime=args.realtime)
    except ModuleNotFoundError as exc:
        return tools_missing("demo", exc)
    except QrgateError as exc:
        print(f"qrgate demo: {exc}", file=sys.stderr)
        return 1
    return 0 if summary["lost"] == 0 and not summary["mismatches"] else 1
