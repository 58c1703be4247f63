"""``qrgate-province command DEVICE NAME [--arg k=v] --key FILE --actor NAME``: one signed command to one gate.

The command is signed with an operator key (``qrgate-province command-key new``), sent over the provincial broker
(the config's ``[broker]`` section, which must name an operator's certificate) and the gate's answer printed: the
outcome, its sentence and what the command returned. Exit status 0 when the gate answered ``done``, 1 when it
refused or failed the command or did not answer. With a database configured (``--dsn``, or a ``[database]``
section in the config file) the command is written to the audit log before it is sent, and its answer after; a
command whose audit line cannot be written is not sent.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import get_args

from qrgate.wire import MAX_COMMAND_LIFETIME_S, CommandName

from ...errors import ProvinceError
from ..command_signing import DEFAULT_LIFETIME_S
from . import EXIT_FAILED, EXIT_OK, Subcommands
from .common import add_config_argument, config_of, open_database

COMMAND_NAMES: tuple[str, ...] = get_args(CommandName)


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "command", help="send one signed command to a gate and print its answer (audited)",
        description="Sign NAME for DEVICE with an operator key and send it over the provincial broker; print the "
        "gate's answer. Commands: status, self_test (the checks that do not disturb a running gate), reload_trust "
        "(read the trust drop directory now), flush_outbox (publish what is pending now), set_log_level --arg "
        "level=DEBUG|INFO|WARNING|ERROR, restart (the gate answers, then systemd restarts it). Exit status 0 when "
        "the gate answered 'done'.",
    )
    parser.add_argument("device", metavar="DEVICE", help="the gate's device id")
    parser.add_argument("name", metavar="NAME", choices=COMMAND_NAMES, help=f"one of {', '.join(COMMAND_NAMES)}")
    parser.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", dest="args",
                        help="an argument of the command (repeatable), e.g. level=DEBUG")
    parser.add_argument("--key", required=True, metavar="FILE", help="the operator key file (mode 0600)")
    parser.add_argument("--actor", required=True, metavar="NAME",
                        help="your name, as the gate's log and the audit log record it (with your OS user)")
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME_S, metavar="S",
                        help=f"seconds the gate may act on it (default {DEFAULT_LIFETIME_S:g}, at most "
                        f"{MAX_COMMAND_LIFETIME_S})")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for the answer (default 10)")
    parser.add_argument("--json", action="store_true", help="print the gate's whole answer as JSON")
    add_config_argument(parser)
    parser.set_defaults(run=run)


def parse_arguments(pairs: list[str]) -> dict[str, str]:
    """``["level=DEBUG"]`` -> ``{"level": "DEBUG"}``."""
    arguments: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ProvinceError(f"--arg {pair!r}: give KEY=VALUE, e.g. level=DEBUG")
        arguments[key.strip()] = value
    return arguments


def run(args: argparse.Namespace) -> int:
    from ..accounts import Accounts
    from ..command_sender import send_command_audited
    from ..command_signing import load_operator_key, new_command

    actor = args.actor.strip()
    if not actor or len(actor) > 64:
        raise ProvinceError("--actor: give your name (1 to 64 characters) for the gate's log and the audit log")
    config = config_of(args)
    key = load_operator_key(args.key)
    command = new_command(args.name, args.device, actor, args=parse_arguments(args.args), lifetime_s=args.lifetime)
    detail: dict[str, object] = {"via": "cli", "os_user": _os_user()}
    if args.dsn or "database" in config.model_fields_set:
        with open_database(config) as database:
            response = send_command_audited(config.broker, key, command, Accounts(database), detail=detail,
                                            timeout_s=args.timeout)
    else:
        print(f"{args.device}: not written to the audit log: no database configured ([database] in the config, "
              "or --dsn)", file=sys.stderr)
        response = send_command_audited(config.broker, key, command, None, timeout_s=args.timeout)
    if args.json:
        print(response.to_json().decode())
    else:
        print(f"{response.device_id}: {response.command or args.name}: {response.outcome}: {response.detail}")
        if response.result:
            print(json.dumps(response.result, indent=2, ensure_ascii=False, sort_keys=True))
    return EXIT_OK if response.outcome == "done" else EXIT_FAILED


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"uid:{os.getuid()}"
