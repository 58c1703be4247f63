"""One module per ``qrgate`` subcommand; each has ``add_parser(subparsers)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping
from typing import Protocol

# What qrgate_tools (``qrgate demo``, ``qrgate bench``) imports beyond the gate's own dependencies: the
# ``tools`` extra (pyproject.toml) and the province's side, which mints the demo's passes and signed lists.
TOOLS_ONLY = frozenset({"rich", "reportlab", "qrgate_provisioning", "qrgate_tools"})


class Subcommands(Protocol):
    """What ``add_parser`` needs of ``ArgumentParser.add_subparsers()``'s result.

    argparse's own class for it (``_SubParsersAction``) is private, so the signatures name this
    instead; the parts used are those argparse documents. ``qrgate-issuer``'s commands use it too.
    """

    def add_parser(
        self, name: str, *, help: str | None = ..., description: str | None = ...
    ) -> argparse.ArgumentParser: ...


def tools_missing(command: str, error: ModuleNotFoundError) -> int:
    """Exit status 1 with what to install when ``error`` is a module only the tools need; re-raise it otherwise."""
    missing = (error.name or "").partition(".")[0]
    if missing not in TOOLS_ONLY:
        raise error
    print(f"qrgate {command}: {missing} is not installed (the gate's own install leaves the tools' "
          "dependencies out); install qrgate[tools]: pip install 'qrgate[tools]'", file=sys.stderr)
    return 1


def build_command_line(prog: str, version: str, description: str, package: str, subcommands: Mapping[str, str],
                       *, verbose: str | None = None) -> argparse.ArgumentParser:
    """The parser of a qrgate command: ``--version``, optionally ``--verbose``, and one subcommand per module of
    ``package`` (``subcommands``: name -> module, in --help order), each registering itself with ``add_parser``.

    Shared by ``qrgate`` and the province's ``qrgate-issuer``, ``qrgate-provision`` and ``qrgate-province``,
    so every qrgate command line is built, and answers, the same way."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {version}")
    if verbose is not None:
        parser.add_argument("--verbose", "-v", action="store_true", help=verbose)
    registry = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in subcommands.values():
        importlib.import_module(f"{package}.{module_name}").add_parser(registry)
    return parser


def run_command_line(args: argparse.Namespace, prog: str) -> int:
    """Run the chosen subcommand: a QrgateError, ValueError or OSError is one line on stderr and exit status 1
    (the message names the cause; no traceback for a bad file or an unreachable server), Ctrl-C is 130."""
    from ..errors import QrgateError  # here, not at the top: ``qrgate verify`` starts without the package's rest

    try:
        return int(args.run(args) or 0)
    except (ValueError, OSError, QrgateError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
