"""``qrgate self-test --config FILE [--json] [--skip-broker]``: try every part of the gate once.

Blinks each LED, sounds the buzzer, pulses the relay, grabs frames (brightness, focus), and checks the
clock's synchronisation, the disk, the outbox, the trust list and the broker (qrgate.selftest). Prints one
line per check, ``ok`` with what it measured or ``FAILED`` with the reason; ``--json`` prints one object
instead: ``{"device", "ok", "checks": [{"name", "ok", "detail"}]}`` (a configuration that cannot be read:
``{"ok": false, "error", "checks": []}``). Exit 0 if every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..config_file import load_config
from ..errors import QrgateError
from . import Subcommands

EXIT_OK, EXIT_FAILED = 0, 1
# What fails when the daemon holds the pins or the camera: claiming the pins, opening the camera.
_OPENING = frozenset({"feedback", "camera"})


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "self-test",
        help="blink, beep, pulse, grab frames, check clock, disk, outbox, trust list and broker",
        description="Try every part of the gate once and print each as ok (with what was measured) or FAILED "
        "(with the reason). Stop the qrgate service first: the pins and the camera cannot be shared. "
        "Exit 0 if every check passed, 1 otherwise.",
    )
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the checklist")
    parser.add_argument("--skip-broker", action="store_true", help="do not connect to the MQTT broker")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except QrgateError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc), "checks": []}))
        else:
            print(exc, file=sys.stderr)
        return EXIT_FAILED
    # The lists' own warnings (a damaged file, a fallback) go to stderr; the checklist or JSON to stdout.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..selftest import report, run_self_test  # OpenCV, paho, gpiozero: only for this command

    results = run_self_test(config, skip_broker=args.skip_broker)
    failed = [result for result in results if not result.ok]
    if args.json:
        print(json.dumps(report(results, config.device.id), ensure_ascii=False))
    else:
        width = max(len(result.name) for result in results)
        for result in results:
            print(f"{'ok' if result.ok else 'FAILED':<6} {result.name:<{width}}  {result.detail}")
        summary = f"{len(results) - len(failed)} of {len(results)} checks ok on {config.device.id}"
        print(summary if failed else f"all {len(results)} checks ok on {config.device.id}")
        if any(result.name in _OPENING and not result.detail.startswith("too ") for result in failed):
            print("the pins and the camera cannot be shared: if the qrgate service is running, stop it first "
                  "(sudo systemctl stop qrgate)", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
