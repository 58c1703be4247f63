"""The ``qrgate-issuer`` command: issuer keys, passes and printed pass cards, on the issuer's offline machine.

    key new      create an issuer signing key: qrgate (EdDSA, ES256) or DCC-style (PS256, ES256)
    pass mint    mint one pass and print its QG1: text (optionally also a PNG of its QR code)
    pass batch   mint a pass for every row of a ward office's CSV (optionally also the cards PDF)
    cards        the printable A4 PDF of pass cards for a CSV of passes

plus the trust-list, revocation, rule-set and publishing commands registered by ``commands_lists`` and the
Mosquitto configuration generator of ``brokerconf``.

Every subcommand sets ``run(args) -> int``. Exit codes: 0 done; 1 failed, with the reason on stderr
(an unreadable file, a bad CSV row, a key of the wrong type); 2 usage error. Nothing here prints a
CSV cell: ward offices' rows hold personal data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm

from qrgate import __version__
from qrgate.errors import QrgateError
from qrgate.passes.trust import TrustStore
from qrgate.passes.verdict import PassFormat, Verdict
from qrgate.passes.verifier import PassVerifier

from . import brokerconf, commands_lists, consumer
from .batch import (
    MAX_VALID_DAYS,
    PASS_COLUMN,
    Batch,
    MintedPass,
    display_date,
    mint_pass,
    pass_request,
    passes_csv,
    read_batch,
    read_table,
)
from .cards import QUIET_ZONE_MODULES, Card, cards_pdf, pass_qr
from .keys import IssuerKey, load_issuer_key, new_dcc_issuer_key, new_issuer_key, write_issuer_files

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "qrgate-issuer"

PASS_ALGORITHMS = ("EdDSA", "ES256")  # a PS256 signature alone would not fit a 3 cm code
DCC_ALGORITHMS = ("PS256", "ES256")  # the two the DCC specification allows
MAX_CERTIFICATE_DAYS = 10 * 366
# Issuer ids name the key files (``write_issuer_files``), so they keep to file-name-safe characters.
ISSUER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
COUNTRY = re.compile(r"[A-Z]{2}")
HOUSEHOLD_COLUMN, WARD_COLUMN = "household", "ward"
PNG_MODULE_PIXELS = 10


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="qrgate province tools: signing keys, passes, printed pass cards, trust and revocation lists, "
        "validation rule sets "
        "(run these on the issuer's offline machine; private keys never go on a gate), broker configurations, "
        "and the backend's reference consumer.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_key_parsers(commands)
    _add_pass_parsers(commands)
    _add_cards_parser(commands)
    commands_lists.add_parsers(commands)  # trust-list, revocation, rules, publish
    brokerconf.add_parsers(commands)  # broker-config site|province
    consumer.add_parsers(commands)  # the province's reference consumer and its daily summary
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, OSError, QrgateError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


# ---- key new ----------------------------------------------------------------------------------------

def _add_key_parsers(commands: argparse._SubParsersAction) -> None:
    key = commands.add_parser("key", help="issuer signing keys", description="Issuer signing keys.")
    actions = key.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new",
        help="create an issuer signing key",
        description="Create an issuer signing key and write <issuer>-<kid>.key (private, mode 0600: keep it "
        "offline), <issuer>-<kid>.trust.json (for the gates' trust list) and, for a DCC-style key, "
        "<issuer>-<kid>.crt.pem (its self-signed signing certificate).",
    )
    kind = new.add_mutually_exclusive_group(required=True)
    kind.add_argument("--issuer", type=_issuer_id, help="qrgate issuer id passes will carry, e.g. VN-HN")
    kind.add_argument("--dcc-country", metavar="CC", type=_country,
                      help="DCC-style key for this country (ISO 3166-1 alpha-2, e.g. VN)")
    new.add_argument("--alg", required=True, choices=sorted({*PASS_ALGORITHMS, *DCC_ALGORITHMS}),
                     help=f"qrgate: {' or '.join(PASS_ALGORITHMS)}; DCC: {' or '.join(DCC_ALGORITHMS)}")
    new.add_argument("--valid-days", type=_days(MAX_CERTIFICATE_DAYS), metavar="N",
                     help="DCC only: the certificate's validity from now (default 365)")
    new.add_argument("--out", required=True, metavar="DIR", type=Path, help="directory to write the files to")
    new.set_defaults(run=_run_key_new)


def _run_key_new(args: argparse.Namespace) -> int:
    if args.issuer is not None:
        if args.alg not in PASS_ALGORITHMS:
            return _usage(f"a qrgate issuer key is {' or '.join(PASS_ALGORITHMS)}, not {args.alg}: "
                          "an RSA signature would not fit a 3 cm QR code")
        if args.valid_days is not None:
            return _usage("--valid-days is for --dcc-country keys; a qrgate key's validity is set in the trust list")
        key = new_issuer_key(args.issuer, args.alg)
        formats = ["qrgate"]
    else:
        if args.alg not in DCC_ALGORITHMS:
            return _usage(f"a DCC signing key is {' or '.join(DCC_ALGORITHMS)}, not {args.alg}")
        start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        days = 365 if args.valid_days is None else args.valid_days
        key = new_dcc_issuer_key(args.dcc_country, args.alg, not_before=start,
                                 not_after=start + dt.timedelta(days=days))
        formats = ["dcc"]
    paths = write_issuer_files(key, args.out, formats=formats)
    print(f"issuer {key.issuer}, {key.alg}, kid {key.kid.hex()}")
    print(f"private key: {paths['private_key']}  (keep it offline; it never goes on a gate)")
    print(f"trust entry: {paths['trust']}  (for the gates' trust list)")
    if "certificate" in paths:
        print(f"certificate: {paths['certificate']}")
    return EXIT_OK


# ---- pass mint, pass batch --------------------------------------------------------------------------

def _add_pass_parsers(commands: argparse._SubParsersAction) -> None:
    passes = commands.add_parser("pass", help="mint qrgate passes", description="Mint qrgate (QG1:) passes.")
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
    mint.set_defaults(run=_run_pass_mint)

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
    batch.set_defaults(run=_run_pass_batch)


def _add_signing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", required=True, type=Path, metavar="KEY.pem", help="the issuer's private key")
    parser.add_argument("--issuer", required=True, type=_issuer_id, help="the issuer id of the key, e.g. VN-HN")
    parser.add_argument("--valid-days", required=True, type=_days(MAX_VALID_DAYS), metavar="N",
                        help="valid to the end of the day N days from today (Vietnam time)")


def _run_pass_mint(args: argparse.Namespace) -> int:
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


def _run_pass_batch(args: argparse.Namespace) -> int:
    key = _load_key(args.key, args.issuer)
    batch = read_batch(args.csv)
    now = time.time()
    minted = [mint_pass(key, args.issuer, request, now=now, valid_days=args.valid_days) for request in batch.requests]
    # Everything is built before anything is written: a bad row or an unprintable pass leaves no half batch.
    pdf = cards_pdf(_batch_cards(batch, minted, args.issuer)) if args.cards is not None else None
    _write_atomically(args.out_csv, passes_csv(batch, minted).encode("utf-8-sig"), mode=0o600)
    print(f"{len(minted)} passes written to {args.out_csv}")
    if pdf is not None:
        _write_atomically(args.cards, pdf)
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
            household=_cell(cells, HOUSEHOLD_COLUMN),
            ward=_cell(cells, WARD_COLUMN),
        )
        for (_, cells), minted_pass in zip(batch.table.rows, minted, strict=True)
    ]


# ---- cards ------------------------------------------------------------------------------------------

def _add_cards_parser(commands: argparse._SubParsersAction) -> None:
    cards = commands.add_parser(
        "cards", help="print pass cards (A4 PDF) for a CSV of passes",
        description="Write an A4 PDF of pass cards (85.6 x 54 mm, ten to a page) for every row of a CSV with a "
        "'pass' column, as 'pass batch' writes it; household and ward columns are printed when present. "
        "Every pass is first verified against the trust anchors, as a gate would, and its card shows what "
        "the gate reads from it: a pass the gates would refuse is never printed.",
    )
    cards.add_argument("--csv", required=True, type=Path, metavar="FILE", help="rows with a 'pass' column")
    cards.add_argument("--trust", required=True, action="append", metavar="PATH",
                       help="the issuer's trust entry or a gate's trust directory; repeatable")
    cards.add_argument("--out", required=True, type=Path, metavar="PDF", help="the PDF to write")
    cards.set_defaults(run=_run_cards)


def _run_cards(args: argparse.Namespace) -> int:
    table = read_table(args.csv, (PASS_COLUMN,))
    verifier = PassVerifier(TrustStore.from_paths(args.trust))
    now = time.time()
    cards = []
    for line, cells in table.rows:
        text = cells[PASS_COLUMN].strip()
        verdict = verifier.verify(text, now)
        if not (verdict.accepted and verdict.format is PassFormat.QRGATE):
            raise ValueError(f"{table.source} line {line}: {_refusal(verdict)}; no cards written")
        cards.append(_verified_card(text, verdict, cells))
    if not cards:
        raise ValueError(f"{table.source}: no rows below the header")
    _write_atomically(args.out, cards_pdf(cards))
    print(f"{len(cards)} cards written to {args.out}")
    return EXIT_OK


def _refusal(verdict: Verdict) -> str:
    if verdict.accepted:
        return f"a {verdict.format} pass, not a qrgate pass"
    detail = f" ({verdict.detail})" if verdict.detail else ""
    return f"the pass is rejected: {verdict.reason}{detail}"


def _verified_card(text: str, verdict: Verdict, cells: dict[str, str]) -> Card:
    # An accepted qrgate verdict always carries these; the check keeps a violation from printing "None".
    if verdict.pass_id is None or verdict.expires is None or verdict.issuer is None:
        raise ValueError("accepted verdict without pass id, expiry or issuer")
    return Card(
        pass_text=text,
        pass_id=verdict.pass_id,
        expires=verdict.expires,
        issuer=verdict.issuer,
        initials=verdict.initials,
        household=_cell(cells, HOUSEHOLD_COLUMN),
        ward=_cell(cells, WARD_COLUMN),
    )


def _cell(cells: dict[str, str], column: str) -> str | None:
    """An optional column's value, None when the column is absent or the cell empty."""
    return cells.get(column, "").strip() or None


# ---- shared -----------------------------------------------------------------------------------------

def _load_key(path: Path, issuer: str) -> IssuerKey:
    pem = path.read_bytes()
    try:
        return load_issuer_key(pem, issuer)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: the PEM is encrypted; the keys this tool writes are not (they live offline, mode 0600).
        raise ValueError(f"{path}: not an unencrypted private key in PEM, as 'key new' writes") from None


def _write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _usage(message: str) -> int:
    print(f"{PROG}: usage error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _issuer_id(value: str) -> str:
    if not ISSUER_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            "an issuer id is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. VN-HN)"
        )
    return value


def _country(value: str) -> str:
    if not COUNTRY.fullmatch(value):
        raise argparse.ArgumentTypeError("a country is two capital letters (ISO 3166-1 alpha-2), e.g. VN")
    return value


def _days(maximum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            days = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
        if not 0 < days <= maximum:
            raise argparse.ArgumentTypeError(f"days must be 1 to {maximum}")
        return days

    return parse


if __name__ == "__main__":
    sys.exit(main())
