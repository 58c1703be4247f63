"""One module per ``qrgate-province`` subcommand (``add_parser(subparsers)``, which sets ``run(args) -> int``),
imported only when the command line is built; what they share is in ``common``."""

from __future__ import annotations

from qrgate.commands import Subcommands

PROG = "qrgate-province"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "PROG", "Subcommands"]
