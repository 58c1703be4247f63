"""Tracing a case: every visit of one pass (or one pseudonymous subject) in a time window, and who else was at the
same place within ±N minutes of each visit; as CSV or JSON for the health service.

Only presence counts: an ``accepted`` or ``identified`` check-in put the person through the gate; a ``rejected``
one did not (the person was turned away, or someone showed a bad code), so it is neither a visit nor a contact.

A visit is one check-in of the person, in ``[start, end)``. A contact is a check-in of somebody else at the same
place (``site_id``) whose time is within ``window_min`` minutes of a visit, both bounds included; one row per
(visit, their check-in), with the minutes apart. "Somebody else" is named by their subject id, else their pass id
(a check-in with neither names nobody and is left out); the person's own other passes are not contacts of theirs
(a trace by pass also leaves out every check-in that carries the subject ids of that pass's visits, and a trace
by subject every pass id of that subject's visits).

Both queries are range scans: the visits on (pass_id, time) or (subject_id, time), each visit's contacts on
(site_id, time), the indexes ``SCHEMA`` adds. A trace is a look into people's movements: ``audited_trace`` writes
the query to the audit log before it runs (an unaudited trace never happens), and the result is never stored.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from ..errors import ProvinceError

if TYPE_CHECKING:
    import psycopg

    from .accounts import Accounts
    from .db import Database

SCHEMA = """
-- trace: one person's check-ins in a time window, by pass or by pseudonymous subject
CREATE INDEX IF NOT EXISTS checkins_pass_time ON checkins (pass_id, time) WHERE pass_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS checkins_subject_time ON checkins (subject_id, time) WHERE subject_id IS NOT NULL;
-- trace: who was at a place around a moment (the registry adds the same index for a place's page)
CREATE INDEX IF NOT EXISTS checkins_site_time ON checkins (site_id, time);
"""

PRESENCE_VERDICTS = ("accepted", "identified")  # a check-in that put its bearer through the gate
MAX_WINDOW_MIN = 24 * 60
MAX_SPAN = dt.timedelta(days=366)

_VISIT_COLUMNS = "event_id, site_id, device_id, gate, direction, time, pass_id, subject_id"
_CSV_HEADER = ("record", "person", "pass_id", "subject_id", "site_id", "device_id", "gate", "direction", "time",
               "visit_event_id", "visit_time", "minutes_apart", "event_id")


@dataclass(frozen=True, slots=True)
class Visit:
    """One check-in of the traced person."""

    event_id: str
    site_id: str
    device_id: str
    gate: str
    direction: str
    time: dt.datetime
    pass_id: str | None
    subject_id: str | None


@dataclass(frozen=True, slots=True)
class Contact:
    """Somebody else's check-in at a visit's place within the window of that visit."""

    person: str  # their subject id, else their pass id
    person_kind: Literal["subject", "pass"]
    event_id: str
    pass_id: str | None
    subject_id: str | None
    site_id: str
    device_id: str
    gate: str
    direction: str
    time: dt.datetime
    visit_event_id: str
    visit_time: dt.datetime
    minutes_apart: float


@dataclass(frozen=True, slots=True)
class TraceResult:
    """The visits (by time) and their contacts (by visit, then time) of one trace query."""

    pass_id: str | None
    subject_id: str | None
    start: dt.datetime
    end: dt.datetime
    window_min: int
    visits: tuple[Visit, ...]
    contacts: tuple[Contact, ...]

    def contact_people(self) -> list[str]:
        """Everybody co-present at least once, each once, sorted."""
        return sorted({contact.person for contact in self.contacts})

    def to_csv(self) -> str:
        """One table: a ``visit`` row per visit, then a ``contact`` row per contact. Cells that a spreadsheet would
        run as a formula are quoted (a pass id is whatever a QR code said)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_CSV_HEADER)
        traced = self.subject_id if self.subject_id is not None else self.pass_id
        for v in self.visits:
            writer.writerow(_cells(("visit", traced, v.pass_id, v.subject_id, v.site_id, v.device_id, v.gate,
                                    v.direction, _iso(v.time), "", "", "", v.event_id)))
        for c in self.contacts:
            writer.writerow(_cells(("contact", c.person, c.pass_id, c.subject_id, c.site_id, c.device_id, c.gate,
                                    c.direction, _iso(c.time), c.visit_event_id, _iso(c.visit_time),
                                    f"{c.minutes_apart:.2f}", c.event_id)))
        return out.getvalue()

    def to_json(self) -> bytes:
        """The query, the visits and the contacts, times in UTC ISO 8601."""
        document = {
            "query": {"pass_id": self.pass_id, "subject_id": self.subject_id, "from": _iso(self.start),
                      "to": _iso(self.end), "window_min": self.window_min},
            "visits": [{"event_id": v.event_id, "site_id": v.site_id, "device_id": v.device_id, "gate": v.gate,
                        "direction": v.direction, "time": _iso(v.time), "pass_id": v.pass_id,
                        "subject_id": v.subject_id} for v in self.visits],
            "contacts": [{"person": c.person, "person_kind": c.person_kind, "event_id": c.event_id,
                          "pass_id": c.pass_id, "subject_id": c.subject_id, "site_id": c.site_id,
                          "device_id": c.device_id, "gate": c.gate, "direction": c.direction,
                          "time": _iso(c.time), "visit_event_id": c.visit_event_id,
                          "visit_time": _iso(c.visit_time), "minutes_apart": round(c.minutes_apart, 3)}
                         for c in self.contacts],
            "contact_people": self.contact_people(),
        }
        return json.dumps(document, ensure_ascii=False, indent=1).encode()


def trace(connection: psycopg.Connection[tuple[object, ...]], *, pass_id: str | None = None,
          subject_id: str | None = None, start: dt.datetime, end: dt.datetime, window_min: int = 15) -> TraceResult:
    """The visits of one pass or one subject (exactly one of the two) in ``[start, end)`` and their contacts within
    ±``window_min`` minutes. ``start`` and ``end`` must carry their time zone."""
    column, person = _who(pass_id, subject_id)
    _check_window(start, end, window_min)
    rows = connection.execute(
        f"SELECT {_VISIT_COLUMNS} FROM checkins WHERE {column} = %(person)s AND verdict = ANY(%(presence)s) "
        "AND time >= %(start)s AND time < %(end)s ORDER BY time, event_id",
        {"person": person, "presence": list(PRESENCE_VERDICTS), "start": start, "end": end},
    ).fetchall()
    visits = tuple(Visit(*cast("tuple[str, str, str, str, str, dt.datetime, str | None, str | None]", row))
                   for row in rows)
    contacts = _contacts(connection, visits, window_min,
                         own_passes={v.pass_id for v in visits if v.pass_id} | ({pass_id} if pass_id else set()),
                         own_subjects={v.subject_id for v in visits if v.subject_id}
                         | ({subject_id} if subject_id else set()))
    return TraceResult(pass_id, subject_id, start, end, window_min, visits, contacts)


def audited_trace(database: Database, accounts: Accounts, actor: str, *, pass_id: str | None = None,
                  subject_id: str | None = None, start: dt.datetime, end: dt.datetime, window_min: int = 15,
                  remote: str | None = None, detail: dict[str, object] | None = None) -> TraceResult:
    """``trace``, written first to the audit log (action ``trace``: who asked, for which id, which window, from
    where; ``detail`` adds the caller's own keys, e.g. the OS user of the command line). If the audit line cannot
    be written, nothing is traced."""
    import psycopg

    _who(pass_id, subject_id)
    _check_window(start, end, window_min)
    try:
        accounts.audit(actor, "trace", {"pass_id": pass_id, "subject_id": subject_id, "from": _iso(start),
                                        "to": _iso(end), "window_min": window_min, **(detail or {})}, remote)
        with database.connection() as connection:
            return trace(connection, pass_id=pass_id, subject_id=subject_id, start=start, end=end,
                         window_min=window_min)
    except psycopg.Error as exc:
        raise ProvinceError(f"trace: PostgreSQL: {exc}") from exc


def _contacts(connection: psycopg.Connection[tuple[object, ...]], visits: Sequence[Visit], window_min: int, *,
              own_passes: set[str], own_subjects: set[str]) -> tuple[Contact, ...]:
    if not visits:
        return ()
    # The visits go back in as arrays: one query, each visit joined to a range of the (site_id, time) index.
    rows = connection.execute(
        "SELECT c.pass_id, c.subject_id, c.event_id, c.site_id, c.device_id, c.gate, c.direction, c.time, "
        "v.event_id, v.time, abs(extract(epoch FROM c.time - v.time))::float8 / 60 "
        "FROM unnest(%(ids)s::text[], %(sites)s::text[], %(times)s::timestamptz[]) AS v (event_id, site_id, time) "
        "JOIN checkins c ON c.site_id = v.site_id AND c.time >= v.time - %(window)s AND c.time <= v.time + %(window)s "
        "WHERE c.verdict = ANY(%(presence)s) AND (c.subject_id IS NOT NULL OR c.pass_id IS NOT NULL) "
        "AND (c.pass_id IS NULL OR NOT c.pass_id = ANY(%(own_passes)s)) "
        "AND (c.subject_id IS NULL OR NOT c.subject_id = ANY(%(own_subjects)s)) "
        "ORDER BY v.time, v.event_id, c.time, c.event_id",
        {"ids": [v.event_id for v in visits], "sites": [v.site_id for v in visits],
         "times": [v.time for v in visits], "window": dt.timedelta(minutes=window_min),
         "presence": list(PRESENCE_VERDICTS), "own_passes": sorted(own_passes), "own_subjects": sorted(own_subjects)},
    ).fetchall()
    contacts = []
    for row in rows:
        their_pass, their_subject = cast("str | None", row[0]), cast("str | None", row[1])
        person, kind = (their_subject, "subject") if their_subject is not None else (their_pass, "pass")
        contacts.append(Contact(cast(str, person), cast('Literal["subject", "pass"]', kind), str(row[2]), their_pass,
                                their_subject, str(row[3]), str(row[4]), str(row[5]), str(row[6]),
                                cast(dt.datetime, row[7]), str(row[8]), cast(dt.datetime, row[9]),
                                float(cast(float, row[10]))))
    return tuple(contacts)


def _who(pass_id: str | None, subject_id: str | None) -> tuple[str, str]:
    if (pass_id is None) == (subject_id is None):
        raise ProvinceError("a trace is of one pass id or one subject id: give exactly one of the two")
    if pass_id is not None:
        return "pass_id", pass_id
    return "subject_id", cast(str, subject_id)


def _check_window(start: dt.datetime, end: dt.datetime, window_min: int) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ProvinceError("a trace's start and end must carry their time zone")
    if end <= start:
        raise ProvinceError("a trace's end must come after its start")
    if end - start > MAX_SPAN:
        raise ProvinceError(f"a trace covers at most {MAX_SPAN.days} days (retention keeps far less anyway)")
    if not 0 <= window_min <= MAX_WINDOW_MIN:
        raise ProvinceError(f"the contact window is 0 to {MAX_WINDOW_MIN} minutes, not {window_min}")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cells(row: Sequence[str | None]) -> list[str]:
    # A leading = + - @ (or tab, CR) makes a spreadsheet evaluate the cell: quote it (OWASP CSV injection).
    return ["'" + cell if cell and cell[0] in "=+-@\t\r" else (cell or "") for cell in row]
