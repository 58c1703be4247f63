"""Tracing a case (province.trace) on a real PostgreSQL: the visits and the co-present passes of a seeded case,
checked against the same definition computed here in plain Python from the seeded list (near-misses just outside
the window, another place at the same time, rejected check-ins, the person's own other pass); the audit line
written before the trace; the CSV and JSON; and the ``trace`` command."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from export_helpers import migrated_database
from qrgate import wire
from qrgate_provisioning.consumer.postgres_store import PostgresStore
from qrgate_provisioning.errors import ProvinceError
from qrgate_provisioning.province import trace
from qrgate_provisioning.province.accounts import Accounts
from qrgate_provisioning.province.commands import trace as trace_command
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.trace import TraceResult, audited_trace

T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)
START, END = T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=6)
PRESENCE = {"accepted", "identified"}


@dataclass(frozen=True)
class Seed:
    """One seeded check-in, as the test knows it."""

    event_id: str
    site: str
    time: dt.datetime
    verdict: str
    pass_id: str | None
    subject_id: str | None
    device: str = "gate-1"
    direction: str = "in"


@pytest.fixture(name="database")
def database_fixture(province_dsn: str) -> Iterator[Database]:
    with migrated_database(province_dsn) as database:
        yield database


def store(dsn: str, seeds: list[Seed]) -> None:
    events = []
    for number, seed in enumerate(seeds, 1):
        event = wire.CheckinEvent(
            event_id=seed.event_id, seq=number, device_id=seed.device, site_id=seed.site, gate="main",
            direction=seed.direction, time=wire.iso_utc(seed.time.timestamp()), clock_synced=True,  # type: ignore[arg-type]
            verdict=seed.verdict, reason="accepted" if seed.verdict != "rejected" else "expired",  # type: ignore[arg-type]
            format="qrgate", pass_id=seed.pass_id, subject_id=seed.subject_id)
        events.append((event, event.to_json()))
    writer = PostgresStore(dsn)
    try:
        assert writer.store(events, T0.timestamp() + 86400) == len(events)
    finally:
        writer.close()


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def the_case() -> list[Seed]:
    """The case (subject S-case, passes P-case and P-case-2) and the people around it."""
    return [
        Seed("v1", "market", T0, "accepted", "P-case", "S-case"),
        Seed("v2", "market", T0 + minutes(50), "accepted", "P-case", "S-case", direction="out"),
        Seed("v3", "bus-station", T0 + minutes(180), "accepted", "P-case", "S-case"),
        Seed("v-rejected", "bus-station", T0 + minutes(240), "rejected", "P-case", None),  # not a visit
        Seed("v-before", "market", START - minutes(1), "accepted", "P-case", "S-case"),  # before the window
        Seed("v-other-pass", "hospital", T0 + minutes(120), "accepted", "P-case-2", "S-case"),  # same person
        Seed("own-at-market", "market", T0 - minutes(3), "accepted", "P-case-3", "S-case"),  # same person again
        Seed("x1-a", "market", T0 + minutes(5), "accepted", "P-x1", "S-x1"),  # 5 min after v1
        Seed("x1-b", "market", T0 + minutes(55), "accepted", "P-x1", "S-x1"),  # 5 min after v2
        Seed("x2-edge", "market", T0 + minutes(15), "accepted", "P-x2", "S-x2"),  # exactly 15 min: counted
        Seed("x3-near", "market", T0 + minutes(15) + dt.timedelta(seconds=1), "accepted", "P-x3", "S-x3"),
        Seed("x4-elsewhere", "bus-station", T0 + minutes(5), "accepted", "P-x4", "S-x4"),  # same time, not there
        Seed("x5-rejected", "market", T0 + minutes(10), "rejected", "P-x5", None),  # turned away: not present
        Seed("x6-identified", "market", T0 + minutes(45), "identified", "P-x6", None),  # named by its pass
        Seed("x7-nobody", "market", T0 + minutes(1), "identified", None, None),  # names nobody
        Seed("x8-a", "bus-station", T0 + minutes(180 - 14), "accepted", "P-x8", "S-x8"),
        Seed("x8-near", "bus-station", T0 + minutes(180 + 16), "accepted", "P-x8", "S-x8"),
        Seed("x9-near", "market", T0 - minutes(20), "accepted", "P-x9", "S-x9"),
        Seed("x10-hospital", "hospital", T0 + minutes(121), "accepted", "P-x10", "S-x10"),  # P-case-2's visit
    ]


def expected(seeds: list[Seed], *, pass_id: str | None = None, subject_id: str | None = None,
             window_min: int = 15) -> tuple[list[str], set[tuple[str, str, str, float]]]:
    """The definition, in plain Python: (visit event ids by time, {(person, their event, visit, minutes apart)})."""
    present = [s for s in seeds if s.verdict in PRESENCE]
    visits = sorted((s for s in present if START <= s.time < END
                     and (s.pass_id == pass_id if pass_id is not None else s.subject_id == subject_id)),
                    key=lambda s: s.time)
    own_passes = {v.pass_id for v in visits} | {pass_id}
    own_subjects = {v.subject_id for v in visits} | {subject_id}
    contacts = set()
    for visit in visits:
        for other in present:
            if other.site != visit.site or (other.pass_id is None and other.subject_id is None):
                continue
            if (other.pass_id is not None and other.pass_id in own_passes) or \
                    (other.subject_id is not None and other.subject_id in own_subjects):
                continue
            apart = abs((other.time - visit.time).total_seconds()) / 60
            if apart <= window_min:
                person = other.subject_id if other.subject_id is not None else other.pass_id
                contacts.add((str(person), other.event_id, visit.event_id, round(apart, 6)))
    return [v.event_id for v in visits], contacts


def found(result: TraceResult) -> tuple[list[str], set[tuple[str, str, str, float]]]:
    return ([v.event_id for v in result.visits],
            {(c.person, c.event_id, c.visit_event_id, round(c.minutes_apart, 6)) for c in result.contacts})


def test_a_trace_by_subject_finds_the_visits_and_the_co_present_computed_independently(database: Database,
                                                                                       province_dsn: str):
    seeds = the_case()
    store(province_dsn, seeds)
    with database.connection() as connection:
        result = trace.trace(connection, subject_id="S-case", start=START, end=END)
    want_visits, want_contacts = expected(seeds, subject_id="S-case")
    assert found(result) == (want_visits, want_contacts)
    # the definition's edges, spelled out: what must and must not be there
    assert want_visits == ["own-at-market", "v1", "v2", "v-other-pass", "v3"]
    assert result.contact_people() == ["P-x6", "S-x1", "S-x10", "S-x2", "S-x8"]
    assert {"x3-near", "x4-elsewhere", "x5-rejected", "x7-nobody", "x8-near", "x9-near"}.isdisjoint(
        {c.event_id for c in result.contacts})
    visit = result.visits[1]
    assert (visit.site_id, visit.device_id, visit.gate, visit.direction, visit.time) == \
        ("market", "gate-1", "main", "in", T0)
    assert [v.time for v in result.visits] == sorted(v.time for v in result.visits)


def test_a_trace_by_pass_leaves_out_the_persons_other_passes(database: Database, province_dsn: str):
    seeds = the_case()
    store(province_dsn, seeds)
    with database.connection() as connection:
        result = trace.trace(connection, pass_id="P-case", start=START, end=END, window_min=15)
    assert found(result) == expected(seeds, pass_id="P-case")
    assert [v.event_id for v in result.visits] == ["v1", "v2", "v3"]
    # P-case-3 was at the market 3 minutes before v1, but carries the case's own subject id: not a contact
    assert "own-at-market" not in {c.event_id for c in result.contacts}
    with database.connection() as connection:
        wider = trace.trace(connection, pass_id="P-case", start=START, end=END, window_min=20)
    assert found(wider) == expected(seeds, pass_id="P-case", window_min=20)
    assert "x9-near" in {c.event_id for c in wider.contacts}  # 20 minutes before v1


def test_many_random_check_ins_match_the_plain_definition(database: Database, province_dsn: str):
    chance = random.Random(15)
    seeds = [Seed(f"e{n:04d}", chance.choice(["market", "school", "bus-station"]),
                  START + dt.timedelta(seconds=chance.randrange(0, 7 * 3600)),
                  chance.choice(["accepted", "accepted", "identified", "rejected"]),
                  f"P{chance.randrange(40)}", chance.choice([None, f"S{chance.randrange(30)}"]))
             for n in range(400)]
    store(province_dsn, seeds)
    for subject in ("S1", "S7", "S22"):
        with database.connection() as connection:
            result = trace.trace(connection, subject_id=subject, start=START, end=END, window_min=10)
        assert found(result) == expected(seeds, subject_id=subject, window_min=10)
    with database.connection() as connection:
        result = trace.trace(connection, pass_id="P3", start=START, end=END, window_min=10)
    assert found(result) == expected(seeds, pass_id="P3", window_min=10)
    assert result.contacts  # 400 check-ins in 7 hours at 3 places: somebody was near


def test_the_trace_is_written_to_the_audit_log_before_it_runs(database: Database, province_dsn: str):
    store(province_dsn, the_case())
    accounts = Accounts(database, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    result = audited_trace(database, accounts, "lan", subject_id="S-case", start=START, end=END, window_min=15,
                           remote="10.0.0.7", detail={"via": "dashboard"})
    assert len(result.visits) == 5
    [entry] = accounts.audit_entries(actor="lan")
    assert (entry.action, entry.remote) == ("trace", "10.0.0.7")
    assert entry.detail == {"pass_id": None, "subject_id": "S-case", "from": "2024-05-01T07:00:00.000Z",
                            "to": "2024-05-01T14:00:00.000Z", "window_min": 15, "via": "dashboard"}
    with pytest.raises(ProvinceError, match="exactly one"):  # refused before anything is written
        audited_trace(database, accounts, "lan", pass_id="P-case", subject_id="S-case", start=START, end=END)
    with pytest.raises(ProvinceError, match="time zone"):
        audited_trace(database, accounts, "lan", pass_id="P-case", start=START.replace(tzinfo=None), end=END)
    assert len(accounts.audit_entries(actor="lan")) == 1


def test_csv_and_json_carry_the_visits_and_contacts_and_defuse_formulas(database: Database, province_dsn: str):
    seeds = [*the_case(), Seed("x-formula", "market", T0 + minutes(2), "accepted", "=HYPERLINK(1)", None)]
    store(province_dsn, seeds)
    with database.connection() as connection:
        result = trace.trace(connection, pass_id="P-case", start=START, end=END)
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert [r["event_id"] for r in rows if r["record"] == "visit"] == ["v1", "v2", "v3"]
    contact_rows = [r for r in rows if r["record"] == "contact"]
    assert len(contact_rows) == len(result.contacts) and len(result.contacts) > 0
    assert {r["person"] for r in contact_rows} == {"S-x1", "S-x2", "P-x6", "'=HYPERLINK(1)", "S-x8"}
    edge = next(r for r in contact_rows if r["event_id"] == "x2-edge")
    assert (edge["visit_event_id"], edge["minutes_apart"], edge["time"]) == ("v1", "15.00", "2024-05-01T08:15:00.000Z")
    document = json.loads(result.to_json())
    assert document["query"] == {"pass_id": "P-case", "subject_id": None, "from": "2024-05-01T07:00:00.000Z",
                                 "to": "2024-05-01T14:00:00.000Z", "window_min": 15}
    assert [v["event_id"] for v in document["visits"]] == ["v1", "v2", "v3"]
    assert document["contact_people"] == result.contact_people()
    assert len(document["contacts"]) == len(result.contacts)


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog="qrgate-province")
    trace_command.add_parser(built.add_subparsers(dest="command", required=True))
    return built


def test_the_trace_command_writes_the_file_and_the_audit_line(database: Database, province_dsn: str,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    store(province_dsn, the_case())
    output = tmp_path / "case.json"
    # local times (Asia/Ho_Chi_Minh, UTC+7): 14:00 to 21:00 there is 07:00 to 14:00 UTC
    args = parser().parse_args(["trace", "--subject", "S-case", "--from", "2024-05-01T14:00", "--to",
                                "2024-05-01T21:00", "--format", "json", "--output", str(output), "--actor", "lan",
                                "--dsn", province_dsn])
    assert args.run(args) == 0
    assert output.stat().st_mode & 0o777 == 0o600
    document = json.loads(output.read_bytes())
    assert [v["event_id"] for v in document["visits"]] == ["own-at-market", "v1", "v2", "v-other-pass", "v3"]
    assert "5 visit(s)" in capsys.readouterr().err
    [entry] = Accounts(database, hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)).audit_entries()
    assert (entry.actor, entry.action, entry.detail["subject_id"], entry.detail["via"]) == \
        ("lan", "trace", "S-case", "cli")
    assert entry.detail["os_user"] and entry.detail["from"] == "2024-05-01T07:00:00.000Z"


def test_the_trace_command_refuses_a_bad_query(province_dsn: str):
    with pytest.raises(SystemExit):  # --pass and --subject together: argparse refuses
        parser().parse_args(["trace", "--pass", "a", "--subject", "b", "--from", "2024-05-01", "--to", "2024-05-02",
                             "--actor", "lan"])
    args = parser().parse_args(["trace", "--pass", "a", "--from", "1 May", "--to", "2024-05-02", "--actor", "lan",
                                "--dsn", province_dsn])
    with pytest.raises(ProvinceError, match="--from: '1 May' is not an ISO 8601"):
        args.run(args)
