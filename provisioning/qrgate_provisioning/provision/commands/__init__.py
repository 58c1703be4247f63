"""One module per ``qrgate-provision`` subcommand (``add_parser(subparsers)``, which sets ``run(args) -> int``);
what they share (options, building the CA, the wheelhouse, the broker watcher) is in ``common``."""

from __future__ import annotations

from qrgate.commands import Subcommands

PROG = "qrgate-provision"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "PROG", "Subcommands"]
