"""One module per ``qrgate-issuer`` subcommand, as the gate's ``qrgate.commands``.

Each module has ``add_parser(subparsers)``, which adds its subcommand (and that subcommand's own
actions, e.g. ``key new``) to ``subparsers``; every parser that does something sets
``run(args) -> int`` as its default. ``qrgate_provisioning.cli`` wires them together.

Exit codes: 0 done; 1 failed, with the reason on stderr; 2 usage error.
"""

from __future__ import annotations

from qrgate.commands import Subcommands  # one protocol for both CLIs

PROG = "qrgate-issuer"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "PROG", "Subcommands"]
