"""``qrgate verify``: verify one pass the way the gate would, and print the verdict as JSON.

For technicians: check a visitor's pass, a freshly minted batch, a trust directory or a rule set, offline.
Prints one JSON object (verdict, reason, detail, format, issuer, kid, expires, rules) and exits 0 if the
pass is accepted, 1 if it is rejected, 2 on a usage error (message on stderr).

Validation rules apply only with ``--rules``: without it the command checks what the EU DCC test vectors
check (signature, key usage, dates, revocation), and agrees with every one of them; their validation
clocks and products are not Vietnam's policy, which would refuse most of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

from ..errors import TrustStoreError
from ..passes.authority import TrustAuthority
from ..passes.signed_list import SignerKeys
from ..passes.trust import TrustStore
from ..passes.verdict import Verdict
from ..passes.verifier import PassVerifier
from ..rules.policy import RuleSet, RuleSetError, builtin_rule_set, load_rule_set
from . import Subcommands

BUILTIN = "builtin"

EXIT_ACCEPTED, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


def add_parser(subparsers: Subcommands) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "verify",
        help="verify one pass offline and print the verdict as JSON",
        description="Verify one pass (its QR text, or a photo of it) against trust anchors, as the gate does. "
        "Exit 0 if accepted, 1 if rejected, 2 on a usage error. Without --rules no validation rules are "
        "applied (signature, key usage, dates only), as the EU DCC test vectors expect; the gate itself "
        "applies its rules.baseline (the built-in set unless configured otherwise): give --rules builtin "
        "to judge a DCC as a default gate does.",
    )
    parser.add_argument("text", nargs="?", help="the QR text, e.g. 'HC1:...' or 'QG1:...'")
    parser.add_argument("--image", metavar="FILE", help="read the QR code from this image instead of TEXT")
    parser.add_argument(
        "--trust", metavar="PATH", action="append", default=[],
        help="trust anchors: a directory, certificate (PEM/DER) or JSON key file; repeatable",
    )
    parser.add_argument("--at", metavar="ISO8601", type=_instant, help="verify as of this time (default: now)")
    parser.add_argument("--clock-skew", metavar="SECONDS", type=int, default=300,
                        help="tolerance for issued-at in the future and for expiry (default: 300)")
    parser.add_argument(
        "--rules", metavar="PATH|builtin",
        help="judge a genuine DCC by these validation rules: a rule-set JSON file, a signed rule-set document "
        "(needs --signers), or 'builtin' (Vietnam's 2021-22 policy shipped with qrgate); default: no rules",
    )
    parser.add_argument("--signers", metavar="DIR",
                        help="the province's list signing public keys (*.pem), to verify a signed --rules document")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.image is None):
        return _usage("give the pass TEXT or --image FILE, not both and not neither")
    try:
        trust = TrustStore.from_paths(args.trust)
        rules = _rule_set(args.rules, args.signers)
    except (TrustStoreError, RuleSetError) as exc:
        return _usage(str(exc))
    if args.image is not None:
        try:
            text = _qr_text(args.image)
        except ValueError as exc:
            return _usage(str(exc))
    else:
        text = args.text
    at = args.at if args.at is not None else time.time()
    verdict = PassVerifier(TrustAuthority.of_store(trust, rules), clock_skew_s=args.clock_skew).verify(text, at)
    print(json.dumps(_report(verdict)))
    return EXIT_ACCEPTED if verdict.accepted else EXIT_REJECTED


def _rule_set(name: str | None, signers_dir: str | None) -> RuleSet | None:
    if name is None:
        return None
    if name == BUILTIN:
        return builtin_rule_set()
    signers = SignerKeys.from_pem_dir(signers_dir) if signers_dir is not None else None
    return load_rule_set(name, signers)


def _report(verdict: Verdict) -> dict[str, object]:
    rules = None
    if verdict.rules_version is not None:  # the rules judged this DCC: what they said, and which rule failed
        rules = {"version": verdict.rules_version, "reason": str(verdict.reason), "rule": verdict.detail}
    return {
        "verdict": "accepted" if verdict.accepted else "rejected",
        "reason": str(verdict.reason),
        "detail": verdict.detail,
        "format": str(verdict.format),
        "issuer": verdict.issuer,
        "kid": verdict.kid,
        "expires": iso_time(verdict.expires),
        "rules": rules,
    }


def iso_time(epoch_s: float | None) -> str | None:
    """``epoch_s`` as ISO 8601 UTC ("...Z"); None when absent or outside what a calendar date can show.

    The verifier refuses a pass whose dates fall outside 2000..2200, but a report must never be the thing
    that fails: any number prints, and one no calendar can hold prints as null.
    """
    if epoch_s is None:
        return None
    try:
        return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return None


def _qr_text(path: str) -> str:
    """The text of the first QR code in the image at ``path``; ValueError says why there is none."""
    import cv2  # here, not at the top: OpenCV takes a while to import and TEXT mode does not need it

    from ..decoding.factory import build_decoder

    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError(f"{path}: cannot read the image")
    codes = build_decoder().decode(grey)
    if not codes:
        raise ValueError(f"{path}: no QR code found")
    if len(codes) > 1:
        print(f"qrgate verify: {path}: {len(codes)} QR codes found, verifying the first", file=sys.stderr)
    return codes[0].text


def _instant(value: str) -> float:
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.timestamp()


def _usage(message: str) -> int:
    print(f"qrgate verify: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qrgate")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["verify", *(sys.argv[1:] if argv is None else argv)])
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
