"""``qrgate-province user add|list|passwd|role|disable``: the people who log in to the dashboard.

People are managed here, on the server, and not from the dashboard: whoever can reach the web pages should not be
able to give themselves a role. Every change is written to the audit log as ``cli:<unix user>``. A password is
read from the terminal without echo (twice), or from the first line of standard input with ``--password-stdin``
(for a provisioning script); never from an argument, which every user of the machine can see in ``ps``.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from ...errors import ProvinceError
from ..accounts import ROLES, Accounts
from . import EXIT_OK, Subcommands
from .common import add_config_argument, config_of, open_database


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "user", help="people who log in to the dashboard, and their roles",
        description="Add, list and change the people who log in to the dashboard. Roles: viewer (sees the fleet, "
        "places and reports), operator (also commands gates, reads the audit log), tracer (also traces passes, "
        "reads the audit log).",
    )
    actions = parser.add_subparsers(dest="user_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="a new person")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    listing = actions.add_parser("list", help="everyone, with their role")
    passwd = actions.add_parser("passwd", help="a new password (ends the person's sessions)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    role = actions.add_parser("role", help="a new role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    disable = actions.add_parser("disable", help="no more log-ins (ends the person's sessions; kept in the log)")
    disable.add_argument("name")
    for action in (add, listing, passwd, role, disable):
        add_config_argument(action)
    parser.set_defaults(run=run)


def cli_actor() -> str:
    """Who the audit log says made a change from the command line."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return "cli:?"


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ProvinceError("no terminal to ask the password on: give it on standard input with --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ProvinceError("the two passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    password = read_password(args.password_stdin) if args.user_action in ("add", "passwd") else None
    with open_database(config) as database:
        accounts = Accounts(database, session_max_age_s=config.web.session_max_age_s)
        actor = cli_actor()
        if args.user_action == "add":
            assert password is not None
            user = accounts.add_user(args.name, args.role, password, actor=actor)
            print(f"added {user.name} ({user.role})")
        elif args.user_action == "passwd":
            assert password is not None
            accounts.set_password(args.name, password, actor=actor)
            print(f"new password for {args.name}; their sessions ended")
        elif args.user_action == "role":
            accounts.set_role(args.name, args.role, actor=actor)
            print(f"{args.name} is now {args.role}")
        elif args.user_action == "disable":
            accounts.disable(args.name, actor=actor)
            print(f"disabled {args.name}; their sessions ended")
        else:
            users = accounts.list_users()
            width = max([4, *(len(user.name) for user in users)])
            print(f"{'NAME':<{width}}  {'ROLE':<8}  {'STATE':<8}  CREATED")
            for user in users:
                state = "disabled" if user.disabled else "active"
                print(f"{user.name:<{width}}  {user.role:<8}  {state:<8}  {user.created_at:%Y-%m-%d %H:%M}")
    return EXIT_OK
