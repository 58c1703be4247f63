"""One module per ``qrgate`` subcommand; each has ``add_parser(subparsers)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import sys
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
