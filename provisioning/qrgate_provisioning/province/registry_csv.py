"""Reading the registry's CSV: one place a row, every problem reported at once with its line.

Columns (the header names them, in any order, any case)::

    place_id,name,type,commune,district,address,gate_required,opening_hours[,gates]

- ``place_id``: the id the place's gates carry as ``device.site_id`` (letters, digits, ``.``, ``_``, ``-``);
- ``type``: what the place is (bus_station, market, hospital, factory, restaurant, office...);
- ``gate_required``: yes/no, true/false, 1/0, có/không;
- ``opening_hours``: ``06:00-22:00``, ``06:00-11:00,13:00-17:00``, ``18:00-02:00`` or ``24/7`` (opening_hours.py);
- ``gates`` (optional): the place's gates, ``DEVICE:DIRECTION[:NAME]`` separated by ``;`` (or ``,``), e.g.
  ``GATE-01:in;GATE-02:out:Cổng sau``. Listing a gate assigns (or moves) it; a gate not listed is left as it is,
  since provisioning assigns gates too and an old spreadsheet must not unassign them.

The file is UTF-8, with or without the byte-order mark Excel writes ("CSV UTF-8"). Excel set to Vietnamese
regional settings separates fields with ``;``: the header line says which separator the file uses.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass

from ..errors import ProvinceError
from .opening_hours import OpeningHours
from .registry import DIRECTIONS, Gate, Place, clean_text, id_problem, text_problem

REQUIRED_COLUMNS = ("place_id", "name", "type", "commune", "district", "address", "gate_required",
                    "opening_hours")
OPTIONAL_COLUMNS = ("gates",)
_TRUE = frozenset({"yes", "y", "true", "1", "có", "co"})
_FALSE = frozenset({"no", "n", "false", "0", "không", "khong"})
MAX_ERRORS = 200  # beyond this the operator has the wrong file, and a longer list helps nobody


@dataclass(frozen=True, slots=True)
class PlaceRow:
    """One valid row: the place and the gates its ``gates`` cell assigns to it."""

    line: int
    place: Place
    gates: tuple[Gate, ...]


def parse_places_csv(text: str, source: str) -> list[PlaceRow]:
    """Every row of the CSV, validated; ProvinceError with one ``source:line: column: message`` line per problem
    (all of them, up to MAX_ERRORS) if any row is bad."""
    text = text.removeprefix("\ufeff")
    first_line = text.split("\n", 1)[0]
    if not first_line.strip():
        raise ProvinceError(f"{source}:1: the file is empty; its first line must name the columns: "
                            f"{','.join(REQUIRED_COLUMNS)}[,gates]")
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    errors: list[str] = []
    header = [clean_text(name).lower() for name in next(reader)]
    columns = _check_header(header, source, errors)
    if errors:
        raise ProvinceError("\n".join(errors))
    rows: list[PlaceRow] = []
    place_lines: dict[str, int] = {}
    device_lines: dict[str, int] = {}
    while True:
        line = reader.line_num + 1  # the record's first line (a quoted cell may span several)
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(f"{source}:{line}: {exc}")
            break
        if not any(cell.strip() for cell in cells):
            continue  # a blank line, or a row of empty cells a spreadsheet left behind
        if len(cells) != len(header):
            errors.append(f"{source}:{line}: {len(cells)} fields, but the header names {len(header)}")
            continue
        row_errors: list[str] = []
        row = _parse_row(dict(zip(columns, cells, strict=True)), line, row_errors)
        errors += [f"{source}:{line}: {message}" for message in row_errors]
        if row is None:
            continue
        first = place_lines.setdefault(row.place.place_id, line)
        if first != line:
            errors.append(f"{source}:{line}: place_id: {row.place.place_id} is already on line {first}")
        for gate in row.gates:
            first = device_lines.setdefault(gate.device_id, line)
            if first != line:
                errors.append(f"{source}:{line}: gates: {gate.device_id} is already listed on line {first}")
        in_row = [gate.device_id for gate in row.gates]
        errors += [f"{source}:{line}: gates: {device} is listed twice" for device in sorted(set(in_row))
                   if in_row.count(device) > 1]
        rows.append(row)
        if len(errors) >= MAX_ERRORS:
            errors.append(f"{source}: stopped after {MAX_ERRORS} problems")
            break
    if errors:
        raise ProvinceError(f"{source}: nothing imported, {len(errors)} problem(s):\n" + "\n".join(errors))
    return rows


def _check_header(header: list[str], source: str, errors: list[str]) -> list[str]:
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    for name in header:
        if name not in known:
            errors.append(f"{source}:1: unknown column {name!r}; the columns are {', '.join(known)}")
    seen = set()
    for name in header:
        if name in seen:
            errors.append(f"{source}:1: column {name!r} appears twice")
        seen.add(name)
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        errors.append(f"{source}:1: missing column(s) {', '.join(missing)}")
    return header


def _parse_row(cells: dict[str, str], line: int, errors: list[str]) -> PlaceRow | None:
    values = {name: clean_text(value) for name, value in cells.items()}

    id_wrong = id_problem(values["place_id"])
    problems = {"place_id": f"{values['place_id']!r}: {id_wrong}" if id_wrong else None}
    for column in ("name", "type", "commune", "district", "address"):
        problems[column] = text_problem(values[column], required=column != "address")
    errors += [f"{column}: {problem}" for column, problem in problems.items() if problem is not None]
    gate_required = _boolean(values["gate_required"], errors)
    hours: OpeningHours | None = None
    try:
        hours = OpeningHours.parse(values["opening_hours"])
    except ProvinceError as exc:
        errors.append(f"opening_hours: {exc}")
    gates = _gates(values.get("gates", ""), values["place_id"], errors)
    if errors or gate_required is None or hours is None:
        return None
    place = Place(values["place_id"], values["name"], values["type"], values["commune"], values["district"],
                  values["address"], gate_required, hours)
    return PlaceRow(line, place, tuple(gates))


def _boolean(value: str, errors: list[str]) -> bool | None:
    word = unicodedata.normalize("NFC", value).lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    errors.append(f"gate_required: {value!r} is not yes/no (also true/false, 1/0, có/không)")
    return None


def _gates(cell: str, place_id: str, errors: list[str]) -> list[Gate]:
    gates = []
    for entry in (part.strip() for part in re.split(r"[;,\n]", cell)):
        if not entry:
            continue
        device_id, _, rest = entry.partition(":")
        direction, _, name = rest.partition(":")
        device_id, direction, name = device_id.strip(), direction.strip().lower(), name.strip()
        if direction not in DIRECTIONS:
            errors.append(f"gates: {entry!r}: write DEVICE:DIRECTION[:NAME] with DIRECTION one of "
                          f"{', '.join(DIRECTIONS)}")
            continue
        problem = id_problem(device_id) or text_problem(name, required=False)
        if problem is not None:
            errors.append(f"gates: {entry!r}: {problem}")
        elif not errors:  # a Gate needs a valid place id, which is reported under place_id
            gates.append(Gate(device_id, place_id, name or device_id, direction))  # type: ignore[arg-type]
    return gates
