"""The registry of places and gates: what "places not complying" is computed against.

A place is a venue the directives name (bus station, market, hospital, factory, restaurant, ward office...),
with its commune/ward and district, whether it must have a gate, and its opening hours. A gate is a device that
belongs to one place, with its name there and its direction (``in``, ``out`` or ``both``: a ``both`` gate takes
each person's direction from their last passage at the place). Check-ins belong to a place by their ``site_id``,
which is the place's id (the gate's ``device.site_id``).

Places come from a CSV (``registry_csv``, all or nothing) or one by one (``upsert_place``); gates from
provisioning, ``qrgate-province registry assign``, or the CSV's ``gates`` column. A gate may move to another
place; nothing here deletes a place or a gate (a place that closed is still in last month's reports).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from qrgate.config import ID_PATTERN

from ..errors import ProvinceError
from .opening_hours import OpeningHours

if TYPE_CHECKING:
    import psycopg

    from .db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS places (
    place_id      text PRIMARY KEY,
    name          text NOT NULL,
    kind          text NOT NULL,
    commune       text NOT NULL,
    district      text NOT NULL,
    address       text NOT NULL,
    gate_required boolean NOT NULL,
    opening_hours text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS places_area ON places (district, commune);
CREATE TABLE IF NOT EXISTS gates (
    device_id  text PRIMARY KEY,
    place_id   text NOT NULL REFERENCES places (place_id),
    gate_name  text NOT NULL,
    direction  text NOT NULL CHECK (direction IN ('in', 'out', 'both')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS gates_place ON gates (place_id);
-- A place's page reads one place's check-ins of a day (per hour, people inside now): without this index each
-- page view would scan every check-in of the day in the province.
CREATE INDEX IF NOT EXISTS checkins_site_time ON checkins (site_id, time);
"""

Direction = Literal["in", "out", "both"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
_ID = re.compile(ID_PATTERN)
MAX_TEXT = 200  # a name or an address longer than this is a pasted paragraph, not a name
# Control and invisible formatting characters (a zero-width space pasted from a web page makes two names that
# look the same differ); a regular expression because every place read back from the database is checked.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


@dataclass(frozen=True, slots=True)
class Place:
    """A registered venue; ``kind`` is its type (the CSV's ``type`` column: market, hospital...)."""

    place_id: str
    name: str
    kind: str
    commune: str
    district: str
    address: str
    gate_required: bool
    opening_hours: OpeningHours

    def __post_init__(self) -> None:
        _require(f"place id {self.place_id!r}", id_problem(self.place_id))
        for label, value in (("name", self.name), ("type", self.kind), ("commune", self.commune),
                             ("district", self.district)):
            _require(label, text_problem(value, required=True))
        _require("address", text_problem(self.address, required=False))


@dataclass(frozen=True, slots=True)
class Gate:
    """A device at a place: its name there and the direction it checks people."""

    device_id: str
    place_id: str
    gate_name: str
    direction: Direction

    def __post_init__(self) -> None:
        _require(f"device id {self.device_id!r}", id_problem(self.device_id))
        _require(f"place id {self.place_id!r}", id_problem(self.place_id))
        _require("gate name", text_problem(self.gate_name, required=True))
        _require(f"direction {self.direction!r}", direction_problem(self.direction))


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import changed: places new, changed, identical, and gates assigned or moved."""

    created: int
    updated: int
    unchanged: int
    gates_assigned: int


def id_problem(value: str) -> str | None:
    """What is wrong with a place or device id, if anything (the rule of the gate's ``device.site_id``)."""
    if _ID.match(value):
        return None
    return "use letters, digits, '.', '_' or '-' (at most 64, the first a letter or digit)"


def text_problem(value: str, *, required: bool) -> str | None:
    """What is wrong with a name or an address, if anything."""
    if required and not value:
        return "empty"
    if len(value) > MAX_TEXT:
        return f"{len(value)} characters long (at most {MAX_TEXT})"
    if _CONTROL.search(value):
        return "contains a control character"
    return None


def direction_problem(value: str) -> str | None:
    return None if value in DIRECTIONS else f"must be one of {', '.join(DIRECTIONS)}"


def _require(label: str, problem: str | None) -> None:
    if problem is not None:
        raise ProvinceError(f"{label}: {problem}")


def clean_text(value: str) -> str:
    """Text as stored: NFC (a name typed on a Mac arrives decomposed, and would then sort and group apart from
    the same name typed on Windows), runs of white space as one space, trimmed."""
    return " ".join(unicodedata.normalize("NFC", value).split())


class Registry:
    """Places and gates in the province's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- places --------------------------------------------------------------------------------

    def import_csv(self, text: str, source: str = "places.csv") -> ImportResult:
        """Import the places (and gates) of a CSV, all or nothing: ProvinceError lists every bad row at once
        as ``source:line: column: message``, and then nothing is imported. The columns are in ``registry_csv``."""
        from .registry_csv import parse_places_csv

        rows = parse_places_csv(text, source)
        created = updated = unchanged = assigned = 0
        with self.db.connection() as conn:
            existing = {place.place_id: place for place in _select_places(conn, "", ())}
            for row in rows:
                before = existing.get(row.place.place_id)
                if before is None:
                    created += 1
                elif before == row.place:
                    unchanged += 1
                    continue
                else:
                    updated += 1
                _upsert_place(conn, row.place)
            for row in rows:
                for gate in row.gates:
                    assigned += _assign_gate(conn, gate)
        return ImportResult(created, updated, unchanged, assigned)

    def places(self, *, district: str | None = None, commune: str | None = None) -> list[Place]:
        """Every place, or those of one district and/or commune, by district, commune and name."""
        where, params = [], []
        if district is not None:
            where.append("district = %s")
            params.append(clean_text(district))
        if commune is not None:
            where.append("commune = %s")
            params.append(clean_text(commune))
        with self.db.connection() as conn:
            return _select_places(conn, " AND ".join(where), params)

    def place(self, place_id: str) -> Place | None:
        with self.db.connection() as conn:
            found = _select_places(conn, "place_id = %s", (place_id,))
        return found[0] if found else None

    def upsert_place(self, place: Place) -> None:
        """Add the place, or replace what the registry says of it."""
        with self.db.connection() as conn:
            _upsert_place(conn, place)

    def districts(self) -> list[str]:
        with self.db.connection() as conn:
            rows = conn.execute("SELECT DISTINCT district FROM places ORDER BY district").fetchall()
        return [str(row[0]) for row in rows]

    # --- gates ---------------------------------------------------------------------------------

    def gates(self) -> list[Gate]:
        with self.db.connection() as conn:
            return _select_gates(conn, "", ())

    def gates_of(self, place_id: str) -> list[Gate]:
        with self.db.connection() as conn:
            return _select_gates(conn, "place_id = %s", (place_id,))

    def gate(self, device_id: str) -> Gate | None:
        with self.db.connection() as conn:
            found = _select_gates(conn, "device_id = %s", (device_id,))
        return found[0] if found else None

    def assign_gate(self, gate: Gate) -> bool:
        """Put the gate at its place (moving it from another one if need be); True if that changed anything.
        ProvinceError if the place is not registered."""
        with self.db.connection() as conn:
            return _assign_gate(conn, gate)


_PLACE_COLUMNS = "place_id, name, kind, commune, district, address, gate_required, opening_hours"
_GATE_COLUMNS = "device_id, place_id, gate_name, direction"


def _select_places(conn: psycopg.Connection[tuple[object, ...]], where: str,
                   params: Sequence[object]) -> list[Place]:
    sql = f"SELECT {_PLACE_COLUMNS} FROM places" + (f" WHERE {where}" if where else "")
    rows = conn.execute(sql + " ORDER BY district, commune, name, place_id", params).fetchall()
    return [place_of_row(row) for row in rows]


def place_of_row(row: Sequence[object]) -> Place:
    """A ``places`` row, in ``_PLACE_COLUMNS`` order, as a Place."""
    place_id, name, kind, commune, district, address, gate_required, opening_hours = row
    return Place(str(place_id), str(name), str(kind), str(commune), str(district), str(address),
                 bool(gate_required), _opening_hours(str(opening_hours)))


@functools.lru_cache(maxsize=1024)
def _opening_hours(text: str) -> OpeningHours:
    """Parsed once per distinct text: a province's eighteen thousand places share a few dozen."""
    return OpeningHours.parse(text)


def _upsert_place(conn: psycopg.Connection[tuple[object, ...]], place: Place) -> None:
    conn.execute(
        f"INSERT INTO places ({_PLACE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (place_id) DO UPDATE SET name = EXCLUDED.name, kind = EXCLUDED.kind, "
        "commune = EXCLUDED.commune, district = EXCLUDED.district, address = EXCLUDED.address, "
        "gate_required = EXCLUDED.gate_required, opening_hours = EXCLUDED.opening_hours, updated_at = now()",
        (place.place_id, place.name, place.kind, place.commune, place.district, place.address,
         place.gate_required, str(place.opening_hours)),
    )


def _select_gates(conn: psycopg.Connection[tuple[object, ...]], where: str,
                  params: Sequence[object]) -> list[Gate]:
    sql = f"SELECT {_GATE_COLUMNS} FROM gates" + (f" WHERE {where}" if where else "")
    rows = conn.execute(sql + " ORDER BY place_id, gate_name, device_id", params).fetchall()
    return [Gate(str(device), str(place), str(name), direction)  # type: ignore[arg-type]  # CHECKed in SQL
            for device, place, name, direction in rows]


def _assign_gate(conn: psycopg.Connection[tuple[object, ...]], gate: Gate) -> bool:
    if conn.execute("SELECT 1 FROM places WHERE place_id = %s", (gate.place_id,)).fetchone() is None:
        raise ProvinceError(f"gate {gate.device_id}: no place {gate.place_id!r} in the registry (import it first)")
    changed = conn.execute(
        f"INSERT INTO gates ({_GATE_COLUMNS}) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (device_id) DO UPDATE SET place_id = EXCLUDED.place_id, gate_name = EXCLUDED.gate_name, "
        "direction = EXCLUDED.direction, updated_at = now() "
        "WHERE (gates.place_id, gates.gate_name, gates.direction) "
        "IS DISTINCT FROM (EXCLUDED.place_id, EXCLUDED.gate_name, EXCLUDED.direction) RETURNING device_id",
        (gate.device_id, gate.place_id, gate.gate_name, gate.direction),
    ).fetchone()
    return changed is not None
