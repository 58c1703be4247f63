"""Pass requests, one-off or from a ward office's CSV, minted into ``QG1:`` passes.

CSV in (UTF-8, with or without the byte-order mark spreadsheets write; one row per card holder):

- ``subject_id`` (required): the pseudonymous id a gate reports in check-in events, 1-64 characters;
- ``initials`` (required): shown on the gate display and on the card, 1-8 characters (e.g. "N.T.A");
- ``pass_id`` (optional): hex, 1-32 bytes; empty or absent means 16 random bytes;
- any other column (``household``, ``ward``, a name for the office's own records) is carried through.

CSV out: the same columns and rows, plus ``pass_id``, ``expires`` (dd/mm/yyyy, the last valid day) and
``pass`` (the ``QG1:`` text). The rows hold personal data, so no message here ever quotes a cell: errors
name the file, the line and the column.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qrgate.passes.qrgate_pass import MAX_ID_CHARS, MAX_INITIALS_CHARS, MAX_PASS_ID_BYTES

from .keys import IssuerKey
from .mint import mint_qrgate_pass

# Vietnam has kept UTC+7 without daylight saving since 1975; a fixed offset needs no tz database.
VIETNAM_TIME = dt.timezone(dt.timedelta(hours=7), "ICT")
RANDOM_PASS_ID_BYTES = 16  # 128 bits: random ids never collide, and a pass still fits a version-9 code
MAX_VALID_DAYS = 3 * 366

REQUIRED_COLUMNS = ("subject_id", "initials")
PASS_ID_COLUMN, EXPIRES_COLUMN, PASS_COLUMN = "pass_id", "expires", "pass"
OUTPUT_COLUMNS = (PASS_ID_COLUMN, EXPIRES_COLUMN, PASS_COLUMN)
# Lengths of the citizen ID numbers (CMND: 9 digits, CCCD: 12): a subject id of only digits of these
# lengths is most likely one, and gates publish subject ids in every check-in event.
CITIZEN_ID_LENGTHS = (9, 12)


@dataclass(frozen=True)
class PassRequest:
    """What one pass will carry besides its issuer and validity, checked against the gate's limits."""

    subject_id: str
    initials: str | None
    pass_id: bytes


@dataclass(frozen=True)
class MintedPass:
    request: PassRequest
    text: str  # the "QG1:" text the QR code carries
    expires: int  # epoch seconds, the pass's exp claim


@dataclass(frozen=True)
class Table:
    """A CSV file's header and rows; each row keeps its line number in the file for error messages."""

    source: str
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]


@dataclass(frozen=True)
class Batch:
    table: Table
    requests: list[PassRequest]  # one per row of ``table``, in order


def pass_request(subject_id: str, initials: str | None, pass_id_hex: str | None) -> PassRequest:
    """A checked request; ValueError names the field at fault and never quotes its value.

    Text is normalised to NFC, so initials typed with combining accents (as some keyboards and
    spreadsheets produce) print and count as the same characters as precomposed ones.
    ``pass_id_hex`` None or empty draws a random pass id.
    """
    subject_id = unicodedata.normalize("NFC", subject_id.strip())
    if not 0 < len(subject_id) <= MAX_ID_CHARS:
        raise ValueError(f"subject_id: must be 1 to {MAX_ID_CHARS} characters")
    if subject_id.isdigit() and len(subject_id) in CITIZEN_ID_LENGTHS:
        raise ValueError(
            "subject_id: looks like a citizen ID number (CMND/CCCD); gates publish subject ids, "
            "so use a pseudonymous id instead"
        )
    if initials is not None:
        initials = unicodedata.normalize("NFC", initials.strip())
        if not 0 < len(initials) <= MAX_INITIALS_CHARS:
            raise ValueError(f"initials: must be 1 to {MAX_INITIALS_CHARS} characters")
    return PassRequest(subject_id=subject_id, initials=initials, pass_id=parse_pass_id(pass_id_hex))


def parse_pass_id(pass_id_hex: str | None) -> bytes:
    if pass_id_hex is None or not pass_id_hex.strip():
        return os.urandom(RANDOM_PASS_ID_BYTES)
    try:
        pass_id = bytes.fromhex(pass_id_hex.strip())
    except ValueError:
        raise ValueError("pass_id: not hexadecimal (two hex digits per byte)") from None
    if not 0 < len(pass_id) <= MAX_PASS_ID_BYTES:
        raise ValueError(f"pass_id: must be 1 to {MAX_PASS_ID_BYTES} bytes")
    return pass_id


def expiry_after_days(now: float, valid_days: int) -> int:
    """The last second of the Vietnamese calendar day ``valid_days`` after today.

    Passes end at a day's end, not at the minute they were minted, so the date printed on a card is
    exactly the last day it opens the gate.
    """
    if not 0 < valid_days <= MAX_VALID_DAYS:
        raise ValueError(f"valid days must be 1 to {MAX_VALID_DAYS}")
    last_day = dt.datetime.fromtimestamp(now, VIETNAM_TIME).date() + dt.timedelta(days=valid_days)
    next_midnight = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), VIETNAM_TIME)
    return int(next_midnight.timestamp()) - 1


def display_date(epoch_s: float) -> str:
    """``epoch_s`` as the Vietnamese calendar date, dd/mm/yyyy (as Vietnamese documents write dates).

    ValueError (which the CLI reports as a message) for an instant no calendar date can show, such as
    10**12 or 1e300: a card or a CSV row must never carry a made-up date, and must never crash either.
    """
    try:
        day = dt.datetime.fromtimestamp(epoch_s, VIETNAM_TIME).date()
    except (OverflowError, ValueError, OSError):
        raise ValueError(f"expiry {epoch_s!r} is not a date that can be printed") from None
    return f"{day.day:02d}/{day.month:02d}/{day.year:04d}"  # strftime's %Y does not pad years below 1000


def mint_pass(key: IssuerKey, issuer: str, request: PassRequest, *, now: float, valid_days: int) -> MintedPass:
    expires = expiry_after_days(now, valid_days)
    text = mint_qrgate_pass(
        key, issuer, pass_id=request.pass_id, subject_id=request.subject_id,
        iat=int(now), exp=expires, initials=request.initials,
    )
    return MintedPass(request=request, text=text, expires=expires)


def read_table(path: Path, required_columns: Iterable[str]) -> Table:
    """The CSV at ``path``; ValueError if it is not UTF-8 CSV with a header holding ``required_columns``.

    Rows whose cells are all empty (spreadsheets export them after the data) are dropped.
    """
    source = str(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        try:
            reader = csv.DictReader(f, restval="")
            columns = [name.strip() for name in reader.fieldnames or ()]
            reader.fieldnames = columns
            rows = []
            for cells in reader:
                if None in cells:
                    raise ValueError(f"{source} line {reader.line_num}: more cells than the header has columns")
                if any(value.strip() for value in cells.values()):
                    rows.append((reader.line_num, cells))
        except UnicodeDecodeError:
            raise ValueError(f"{source}: not UTF-8 text; save it from the spreadsheet as \"CSV UTF-8\"") from None
        except csv.Error as exc:
            raise ValueError(f"{source} line {reader.line_num}: not valid CSV ({exc})") from None
    if not columns:
        raise ValueError(f"{source}: empty file, expected a header row")
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise ValueError(f"{source}: column(s) named twice in the header: {', '.join(duplicates)}")
    missing = [name for name in required_columns if name not in columns]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {', '.join(missing)}; the header has: {', '.join(columns)}"
        )
    return Table(source=source, columns=columns, rows=rows)


def read_batch(path: Path) -> Batch:
    """Pass requests from a ward office's CSV; ValueError on the first bad row or a repeated pass id."""
    table = read_table(path, REQUIRED_COLUMNS)
    requests: list[PassRequest] = []
    seen_ids: dict[bytes, int] = {}
    for line, cells in table.rows:
        try:
            request = pass_request(cells["subject_id"], cells["initials"], cells.get(PASS_ID_COLUMN))
        except ValueError as exc:
            raise ValueError(f"{table.source} line {line}: {exc}") from None
        if request.pass_id in seen_ids:
            raise ValueError(f"{table.source} line {line}: pass_id repeats the one on line {seen_ids[request.pass_id]}")
        seen_ids[request.pass_id] = line
        requests.append(request)
    if not requests:
        raise ValueError(f"{table.source}: no rows below the header")
    return Batch(table=table, requests=requests)


def passes_csv(batch: Batch, minted: Sequence[MintedPass]) -> str:
    """The batch's CSV with each row's pass id, expiry date and pass text filled in."""
    columns = batch.table.columns + [name for name in OUTPUT_COLUMNS if name not in batch.table.columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for (_, cells), minted_pass in zip(batch.table.rows, minted, strict=True):
        writer.writerow(cells | {
            PASS_ID_COLUMN: minted_pass.request.pass_id.hex(),
            EXPIRES_COLUMN: display_date(minted_pass.expires),
            PASS_COLUMN: minted_pass.text,
        })
    return out.getvalue()
