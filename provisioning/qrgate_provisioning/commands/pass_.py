"""``qrgate-issuer pass mint`` and ``pass batch``: mint qrgate (QG1:) passes, one or a ward office's CSV of them.

(The module is ``pass_`` because ``pass`` is a Python keyword.) A batch is built whole before
anything is written: a bad row or an unprintable pass leaves no half batch. Nothing here prints a
CSV cell: ward offices' rows hold personal data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm

from ..batch import MAX_VALID_DAYS, Batch, MintedPass, display_date, mint_pass, pass_request, passes_csv, read_batch
from ..cards import QUIET_ZONE_MODULES, Card, cards_pdf, pass_qr
from ..keys import IssuerKey, load_issuer_key
from . import EXIT_OK, Subcommands
from .arguments import days, issuer_id
from .cards import HOUSEHOLD_COLUMN, WARD_COLUMN, optional_cell
from .output import write_atomically

PNG_MODULE_PIXELS = 10


def add_parser(subparsers: Subcommands) -> None:
    passes = subparsers.add_parser("pass", help="mint qrgate passes", description="Mint qrgate (QG1:) passes.")
    actions = passes.add_subparsers(dest="action", metavar="ACTION", required=True)

    mint = actions.add_parser(
        "mint", help="mint one pass and print its QG1: text",
        description="Mint one pass, valid to the end of the Vietnamese calendar day N days from today, and "
        "print its QG1: text. The pass id, expiry and QR version go to stderr.",
    )
    _add_signing_arguments(mint)
    pass_id = mint.add_mutually_exclusive_group(required=True)
    pass_id.add_argument("--pass-id", metavar="HEX", help="the pass id, 1-32 bytes in hex")
    pass_id.add_argument("--random-id", action="store_true", help="a random 16-byte pass id")
    mint.add_argument("--subject", required=True, metavar="ID",
                      help="pseudonymous subject id (never a citizen ID number)")
    mint.add_argument("--initials", help="holder's initials for the gate display, up to 8 characters, e.g. N.T.A")
    mint.add_argument("--png", type=Path, metavar="FILE", help="also write the QR code as a PNG image")
    mint.set_defaults(run=run_mint)

    batch = actions.add_parser(
        "batch", help="mint a pass for every row of a CSV",
        description="Mint a pass for every row of a UTF-8 CSV with columns subject_id and initials (and "
        "optionally pass_id, household, ward, any others), and write the rows back with pass_id, expires "
        "and pass filled in. Nothing is written unless every row is valid.",
    )
    _add_signing_arguments(batch)
    batch.add_argument("--csv", required=True, type=Path, metavar="FILE", help="the pass requests")
    batch.add_argument("--out-csv", required=True, type=Path, metavar="FILE",
                       help="where to write the rows with their passes")
    batch.add_argument("--cards", type=Path, metavar="PDF", help="also write the printable cards")
    batch.set_defaults(run=run_batch)


def _add_signing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, type=Path, metavar="KEY.pem", help="the issuer's private key")
    parser.add_argument("--issuer", required=True, type=issuer_id, help="the issuer id of the key, e.g. VN-HN")
    parser.add_argument("--valid-days", required=True, type=days(MAX_VALID_DAYS), metavar="N",
                        help="valid to the end of the day N days from today (Vietnam time)")


def run_mint(args: argparse.Namespace) -> int:
    key = _load_key(args.key, args.issuer)
    request = pass_request(args.subject, args.initials, None if args.random_id else args.pass_id)
    minted = mint_pass(key, args.issuer, request, now=time.time(), valid_days=args.valid_days)
    qr = pass_qr(minted.text)
    if args.png is not None:
        qr.save(str(args.png), kind="png", scale=PNG_MODULE_PIXELS, border=QUIET_ZONE_MODULES)
    print(minted.text)
    print(f"pass id {request.pass_id.hex()}, valid to the end of {display_date(minted.expires)}, "
          f"QR version {qr.designator}", file=sys.stderr)
    return EXIT_OK


def run_batch(args: argparse.Namespace) -> int:
    key = _load_key(args.key, args.issuer)
    batch = read_batch(args.csv)
    now = time.time()
    minted = [mint_pass(key, args.issuer, request, now=now, valid_days=args.valid_days) for request in batch.requests]
    # Everything is built before anything is written: a bad row or an unprintable pass leaves no half batch.
    pdf = cards_pdf(_batch_cards(batch, minted, args.issuer)) if args.cards is not None else None
    write_atomically(args.out_csv, passes_csv(batch, minted).encode("utf-8-sig"), mode=0o600)
    print(f"{len(minted)} passes written to {args.out_csv}")
    if pdf is not None:
        write_atomically(args.cards, pdf)
        print(f"{len(minted)} cards written to {args.cards}")
    return EXIT_OK


def _batch_cards(batch: Batch, minted: list[MintedPass], issuer: str) -> list[Card]:
    return [
        Card(
            pass_text=minted_pass.text,
            pass_id=minted_pass.request.pass_id.hex(),
            expires=minted_pass.expires,
            issuer=issuer,
            initials=minted_pass.request.initials,
            household=optional_cell(cells, HOUSEHOLD_COLUMN),
            ward=optional_cell(cells, WARD_COLUMN),
        )
        for (_, cells), minted_pass in zip(batch.table.rows, minted, strict=True)
    ]


def _load_key(path: Path, issuer: str) -> IssuerKey:
    pem = path.read_bytes()
    try:
        return load_issuer_key(pem, issuer)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: the PEM is encrypted; the keys this tool writes are not (they live offline, mode 0600).
        raise ValueError(f"{path}: not an unencrypted private key in PEM, as 'key new' writes") from None
