"""``qrgate-issuer revocation build``: sign a revocation snapshot or delta from files of revoked passes.

Revocation lists name revoked passes by truncated SHA-256 hashes, as the EU DCC revocation scheme.
A snapshot lists every revoked pass; a delta adds and removes entries on the list of version
``--base``, which the gates must hold.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from qrgate.passes.revocation import HASH_BYTES, HashType, country_uci_hash, pass_id_hash, uci_hash

from ..trustlist import build_revocation_delta, build_revocation_snapshot, load_list_signer, pass_hashes
from . import EXIT_OK, EXIT_USAGE, PROG, Subcommands
from .arguments import positive_float, positive_int
from .output import fail, write_list_atomically
from .trust_list import DEFAULT_VALID_HOURS, HOUR_S

# Input files of ``revocation build``: option stem -> how one line becomes (hash type, hash) pairs.
# Lines are stripped; blank lines and lines starting with "#" are skipped.
HASH_INPUTS: dict[str, tuple[str, Callable[[str], Iterable[tuple[HashType, bytes]]]]] = {
    "uci": ("one certificate identifier (UVCI) per line", lambda line: [(HashType.UCI, uci_hash(line))]),
    "country-uci": ('"<issuing country> <UVCI>" per line, e.g. "VN URN:UVCI:01:VN:..."',
                    lambda line: [(HashType.COUNTRY_UCI, country_uci_hash(*_two_fields(line)))]),
    "pass-id": ("one qrgate pass id in hex per line",
                lambda line: [(HashType.QRGATE_PASS_ID, pass_id_hash(bytes.fromhex(line)))]),
    "pass": ("one whole pass text (HC1:/QG1:) per line: every hash of that pass",
             lambda line: pass_hashes(line).items()),
    "hash": (f'"<hash type> <{HASH_BYTES * 2} hex digits>" per line, already hashed (hash types: '
             f'{", ".join(HashType)})', lambda line: [_hashed(line)]),
}


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "revocation", help="build and sign revocation lists (snapshots and deltas)",
        description="Revocation lists name revoked passes by truncated SHA-256 hashes, as the EU DCC revocation "
        "scheme.",
    )
    commands = parser.add_subparsers(dest="revocation_command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build", help="build and sign a revocation snapshot or delta",
        description="A snapshot lists every revoked pass; a delta adds (input files) and removes (--remove-* files) "
        "entries on the list of version --base, which the gates must hold.",
    )
    kind = build.add_mutually_exclusive_group(required=True)
    kind.add_argument("--snapshot", action="store_true", help="a full list")
    kind.add_argument("--delta", action="store_true", help="changes to the list of version --base")
    build.add_argument("--base", type=positive_int, metavar="N", help="with --delta: the version it applies to")
    build.add_argument("--version", required=True, type=positive_int, metavar="N")
    build.add_argument("--signer", required=True, type=Path, metavar="KEY.pem", help="a list key's private PEM")
    build.add_argument("--valid-hours", type=positive_float, default=DEFAULT_VALID_HOURS, metavar="H",
                       help=f"hours until the list expires (default {DEFAULT_VALID_HOURS:g})")
    for stem, (meaning, _) in HASH_INPUTS.items():
        build.add_argument(f"--{stem}-file", dest=f"add_{stem}", action="append", default=[], type=Path, metavar="F",
                           help=f"revoke: {meaning}; repeatable")
    for stem, (meaning, _) in HASH_INPUTS.items():
        build.add_argument(f"--remove-{stem}-file", dest=f"remove_{stem}", action="append", default=[], type=Path,
                           metavar="F", help=f"with --delta, revoke no more: {meaning}")
    build.add_argument("--out", required=True, type=Path, metavar="FILE")
    build.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    removals = any(getattr(args, f"remove_{stem}") for stem in HASH_INPUTS)
    if args.delta != (args.base is not None) or (args.snapshot and removals):
        print(f"{PROG} revocation build: --base goes with --delta, and --remove-* files only with --delta",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        signer = load_list_signer(args.signer)
        add = _read_hashes(args, "add")
        issued_at = int(time.time())
        expires_at = issued_at + int(args.valid_hours * HOUR_S)
        fields = {"version": args.version, "issued_at": issued_at, "expires_at": expires_at}
        if args.snapshot:
            document = build_revocation_snapshot(signer, add, **fields)
        else:
            document = build_revocation_delta(signer, base_version=args.base, add=add,
                                              remove=_read_hashes(args, "remove"), **fields)
        write_list_atomically(args.out, document)
    except (OSError, ValueError) as exc:
        return fail(exc)
    counts = ", ".join(f"{len(v)} {t}" for t, v in add.items() if v) or "no entries"
    kind = "snapshot" if args.snapshot else f"delta on v{args.base}"
    print(f"revocation {kind} v{args.version}: {counts}; {len(document)} bytes -> {args.out}")
    return EXIT_OK


def _read_hashes(args: argparse.Namespace, role: str) -> dict[HashType, list[bytes]]:
    """Every hash named in the input files of ``role`` ("add" or "remove"), per hash type, sorted."""
    hashes: dict[HashType, set[bytes]] = {t: set() for t in HashType}
    for stem, (_, to_hashes) in HASH_INPUTS.items():
        for path in getattr(args, f"{role}_{stem}"):
            with path.open(encoding="utf-8") as lines:
                for number, raw in enumerate(lines, start=1):
                    line = raw.strip()
                    if not line or line.startswith("#"):
                        continue
                    try:
                        for hash_type, digest in to_hashes(line):
                            hashes[hash_type].add(digest)
                    except (ValueError, KeyError, IndexError) as exc:
                        raise ValueError(f"{path}:{number}: {exc or 'unreadable line'}") from None
    return {t: sorted(v) for t, v in hashes.items()}


def _two_fields(line: str) -> tuple[str, str]:
    fields = line.split()
    if len(fields) != 2:
        raise ValueError("expected two fields separated by a space")
    return fields[0], fields[1]


def _hashed(line: str) -> tuple[HashType, bytes]:
    name, digits = _two_fields(line)
    digest = bytes.fromhex(digits)
    if len(digest) != HASH_BYTES:
        raise ValueError(f"a hash is {HASH_BYTES} bytes ({HASH_BYTES * 2} hex digits)")
    return HashType(name), digest
