"""``qrgate-issuer cards``: the printable A4 PDF of pass cards for a CSV of passes.

Every pass is first verified against the trust anchors, as a gate would, and its card shows what
the gate reads from it: a pass the gates would refuse is never printed. Nothing here prints a CSV
cell: ward offices' rows hold personal data.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from qrgate.passes.trust import TrustStore
from qrgate.passes.verdict import PassFormat, Verdict
from qrgate.passes.verifier import PassVerifier

from ..batch import PASS_COLUMN, read_table
from ..cards import Card, cards_pdf
from . import EXIT_OK, Subcommands
from .output import write_atomically

# Columns a card prints when the CSV has them; ``pass batch`` carries every column through.
HOUSEHOLD_COLUMN, WARD_COLUMN = "household", "ward"


def add_parser(subparsers: Subcommands) -> None:
    cards = subparsers.add_parser(
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
    cards.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    write_atomically(args.out, cards_pdf(cards))
    print(f"{len(cards)} cards written to {args.out}")
    return EXIT_OK


def optional_cell(cells: dict[str, str], column: str) -> str | None:
    """An optional column's value, None when the column is absent or the cell empty."""
    return cells.get(column, "").strip() or None


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
        household=optional_cell(cells, HOUSEHOLD_COLUMN),
        ward=optional_cell(cells, WARD_COLUMN),
    )
