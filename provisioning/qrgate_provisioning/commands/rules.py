"""``qrgate-issuer rules build`` and ``rules publish``: sign and deliver the validation rule set.

A rule set is the province's policy as EU-DCC business rules in CertLogic, each naming the reason a
gate shows when it fails (docs/rules.md). Gates accept it like a trust list: signed by a list key
they pin, newer than the one in force, not expired.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

from qrgate.passes.signed_list import ListType
from qrgate.rules.policy import BUILTIN_RULE_SET
from qrgate.wire import RULE_SET_TOPIC

from ..trustlist import build_rule_set, load_list_signer
from . import EXIT_OK, Subcommands
from .arguments import positive_float, positive_int
from .output import fail, iso, write_list_atomically
from .publish import add_publish_arguments

DAY_S = 86_400
DEFAULT_RULE_SET_VALID_DAYS = 90.0  # a gate refuses a rule set offered after this: publish the next one before


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "rules", help="build, sign and publish the validation rule set (which certificates are green)",
        description="A rule set is the province's policy as EU-DCC business rules in CertLogic, each naming the "
        "reason a gate shows when it fails (docs/rules.md). Gates accept it like a trust list: signed by a list key "
        "they pin, newer than the one in force, not expired.",
    )
    commands = parser.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build", help="sign a rule set",
        description="Sign the rule-set JSON of --source (default: the built-in Vietnam 2021-22 set) as version N. "
        "Every rule is checked as a gate checks it; one invalid rule fails the build.",
    )
    build.add_argument("--source", type=Path, default=builtin_source(), metavar="FILE.json",
                       help=f"the rule set as JSON (default: qrgate's built-in {BUILTIN_RULE_SET})")
    build.add_argument("--version", required=True, type=positive_int, metavar="N", help="higher than any published")
    build.add_argument("--valid-days", type=positive_float, default=DEFAULT_RULE_SET_VALID_DAYS, metavar="D",
                       help=f"days until gates refuse it when offered (default {DEFAULT_RULE_SET_VALID_DAYS:g})")
    build.add_argument("--signer", required=True, type=Path, metavar="KEY.pem", help="a list key's private PEM")
    build.add_argument("--out", required=True, type=Path, metavar="FILE")
    build.set_defaults(run=run_build)
    publish = commands.add_parser(
        "publish", help="deliver a signed rule set: MQTT (retained) or a drop directory",
        description=f"Publish FILE retained on {RULE_SET_TOPIC} (QoS 1), or copy it atomically into a gate's drop "
        "directory. The same as `publish`, for rule sets only.",
    )
    add_publish_arguments(publish, ListType.RULE_SET)


def builtin_source() -> Path:
    """The rule set qrgate ships (the gates' default baseline), as a file in the installed package."""
    return Path(str(resources.files("qrgate").joinpath("data", BUILTIN_RULE_SET)))


def run_build(args: argparse.Namespace) -> int:
    try:
        signer = load_list_signer(args.signer)
        content = args.source.read_text(encoding="utf-8")
        issued_at = int(time.time())
        expires_at = issued_at + int(args.valid_days * DAY_S)
        document = build_rule_set(signer, content, version=args.version, issued_at=issued_at, expires_at=expires_at)
        write_list_atomically(args.out, document)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return fail(exc)
    print(f"rule set v{args.version} from {args.source}: expires {iso(expires_at)}, {len(document)} bytes "
          f"-> {args.out}")
    return EXIT_OK
