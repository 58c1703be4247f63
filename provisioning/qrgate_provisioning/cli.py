"""The ``qrgate-issuer`` command: issuer keys, passes and printed pass cards, on the issuer's offline machine.

    key new            create an issuer signing key: qrgate (EdDSA, ES256) or DCC-style (PS256, ES256)
    pass mint          mint one pass and print its QG1: text (optionally also a PNG of its QR code)
    pass batch         mint a pass for every row of a ward office's CSV (optionally also the cards PDF)
    cards              the printable A4 PDF of pass cards for a CSV of passes
    trust-list         build and sign the trust list; create list-signing keys
    revocation build   sign a revocation snapshot or delta
    rules              sign and publish the validation rule set
    publish            deliver a signed list over MQTT or into a drop directory
    broker-config      render the site or provincial Mosquitto configuration
    consumer           the province's reference consumer of check-ins, and its daily summary

argparse with one module per subcommand under ``qrgate_provisioning.commands``, as the gate's
``qrgate`` command; each exposes ``add_parser(subparsers)`` and sets ``run(args) -> int``.
Exit codes: 0 done; 1 failed, with the reason on stderr (an unreadable file, a bad CSV row, a key of
the wrong type); 2 usage error. Nothing here prints a CSV cell: ward offices' rows hold personal data.
"""

from __future__ import annotations

import argparse
import sys

from qrgate import __version__
from qrgate.commands import build_command_line, run_command_line

from .commands import PROG

# subcommand name -> module under qrgate_provisioning.commands, in the order ``--help`` lists them
SUBCOMMANDS = {
    "key": "key",
    "pass": "pass_",
    "cards": "cards",
    "trust-list": "trust_list",
    "revocation": "revocation",
    "rules": "rules",
    "publish": "publish",
    "broker-config": "broker_config",
    "consumer": "consumer",
}


def build_parser() -> argparse.ArgumentParser:
    return build_command_line(
        PROG, __version__,
        "qrgate province tools: signing keys, passes, printed pass cards, trust and revocation lists, "
        "validation rule sets "
        "(run these on the issuer's offline machine; private keys never go on a gate), broker configurations, "
        "and the backend's reference consumer.",
        "qrgate_provisioning.commands", SUBCOMMANDS)


def main(argv: list[str] | None = None) -> int:
    return run_command_line(build_parser().parse_args(argv), PROG)


if __name__ == "__main__":
    sys.exit(main())
