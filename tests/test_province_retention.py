"""Retention (province.retention) on a real PostgreSQL: check-ins past the limit are purged in batches and recent
ones kept; the report's counts per local day and of the never exported, checked against the seeded list and a
real export to a local HTTPS receiver; a dry run deletes nothing; an unsent export batch of purged check-ins is
expired and the export moves on; every run is recorded; and the ``purge`` command."""

from __future__ import annotations

import argparse
import collections
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from export_helpers import Receiver, checkins, migrated_database, settings_for, store
from mqtt_helpers import Pki, make_pki
from qrgate import wire
from qrgate_provisioning.errors import ProvinceError
from qrgate_provisioning.province.commands import purge as purge_command
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.export import export_run
from qrgate_provisioning.province.retention import purge

NOW = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
DAY = 86400.0


@pytest.fixture(name="database")
def database_fixture(province_dsn: str) -> Iterator[Database]:
    with migrated_database(province_dsn) as database:
        yield database


@pytest.fixture(name="pki")
def pki_fixture(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", client_cn="qrgate-province")


def ago(days: float, hours: float = 0) -> float:
    return NOW.timestamp() - days * DAY - hours * 3600


def stored_ids(database: Database) -> set[str]:
    with database.connection() as connection:
        return {str(row[0]) for row in connection.execute("SELECT event_id FROM checkins").fetchall()}


def per_local_day(events: list[tuple[wire.CheckinEvent, bytes]], ids: set[str]) -> dict[dt.date, int]:
    """How many of ``ids`` fall on each local day (Asia/Ho_Chi_Minh), from the seeded events."""
    days: collections.Counter[dt.date] = collections.Counter()
    for event, _raw in events:
        if event.event_id in ids:
            days[dt.datetime.fromisoformat(event.time).astimezone(LOCAL).date()] += 1
    return dict(days)


def test_old_check_ins_go_recent_ones_stay_and_the_never_exported_are_counted(database: Database, province_dsn: str,
                                                                              pki: Pki, tmp_path: Path):
    # exported: three from 40 days ago, two recent
    first = checkins(5, times=[ago(40), ago(40, 1), ago(40, 13), ago(2), ago(0, 1)])
    store(province_dsn, first)
    receiver = Receiver(pki)
    try:
        assert export_run(database, settings_for(receiver, pki, tmp_path)).records == 5
    finally:
        receiver.close()
    # stored after the export (a gate that was offline): two 30 days old, one just past 28 days, one just inside
    second = checkins(4, start=10, times=[ago(30), ago(30, 14), ago(28, 1), ago(27, 23)])
    store(province_dsn, second)
    everything = first + second
    old = {e.event_id for e, _ in everything if dt.datetime.fromisoformat(e.time) < NOW - dt.timedelta(days=28)}
    never_exported = old & {e.event_id for e, _ in second}
    assert (len(old), len(never_exported)) == (6, 3)

    dry = purge(database, 28, now=NOW, dry_run=True)
    assert stored_ids(database) == {e.event_id for e, _ in everything}  # nothing deleted
    assert (dry.dry_run, dry.deleted, dry.never_exported) == (True, 6, 3)
    assert {d.day: d.deleted for d in dry.per_day} == per_local_day(everything, old)

    report = purge(database, 28, now=NOW, batch_size=2)  # three full batches and an empty one
    assert stored_ids(database) == {e.event_id for e, _ in everything} - old
    assert (report.dry_run, report.deleted, report.never_exported, report.expired_batches) == (False, 6, 3, 0)
    assert {d.day: d.deleted for d in report.per_day} == per_local_day(everything, old)
    assert {d.day: d.never_exported for d in report.per_day if d.never_exported} == \
        per_local_day(everything, never_exported)
    assert report.cutoff == NOW - dt.timedelta(days=28)
    assert "purged 6 check-in(s) older than 28 day(s)" in report.text() and "never exported: 3" in report.text()

    again = purge(database, 28, now=NOW)
    assert (again.deleted, again.per_day) == (0, ())
    with database.connection() as connection:
        runs = connection.execute("SELECT id, dry_run, deleted, never_exported, days, per_day FROM retention_runs "
                                  "ORDER BY id").fetchall()
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in runs] == [
        (dry.run_id, True, 6, 3, 28), (report.run_id, False, 6, 3, 28), (again.run_id, False, 0, 0, 28)]
    assert runs[1][5] == {d.day.isoformat(): {"deleted": d.deleted, "never_exported": d.never_exported}
                          for d in report.per_day}


def test_an_unsent_batch_of_purged_check_ins_is_expired_and_the_export_moves_on(database: Database,
                                                                                province_dsn: str, pki: Pki,
                                                                                tmp_path: Path):
    old = store(province_dsn, checkins(3, times=[ago(35), ago(33), ago(31)]))
    receiver = Receiver(pki, ["500"])
    try:
        failed = export_run(database, settings_for(receiver, pki, tmp_path, max_retries=0))
        assert (failed.batches, failed.error is not None) == (0, True)  # one pending batch holding them
        report = purge(database, 28, now=NOW)
        assert (report.deleted, report.never_exported, report.expired_batches) == (3, 3, 1)
        with database.connection() as connection:
            assert connection.execute("SELECT state, body IS NULL FROM export_batches").fetchall() == \
                [("expired", True)]
        recent = store(province_dsn, checkins(2, start=20))
        after = export_run(database, settings_for(receiver, pki, tmp_path))
        assert (after.batches, after.records) == (1, 2)
        assert set(receiver.new_events) == recent and old.isdisjoint(receiver.new_events)
        assert receiver.seqs == [2]  # seq 1 was never delivered: the gap tells the receiver
    finally:
        receiver.close()


def test_a_purge_of_less_than_a_day_is_refused(database: Database):
    with pytest.raises(ProvinceError, match="at least 1 day"):
        purge(database, 0)


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog="qrgate-province")
    purge_command.add_parser(built.add_subparsers(dest="command", required=True))
    return built


def test_the_purge_command_dry_runs_then_purges(database: Database, province_dsn: str,
                                                capsys: pytest.CaptureFixture[str]):
    # relative to the real clock: the command purges as of now
    now = dt.datetime.now(dt.UTC).timestamp()
    events = checkins(4, times=[now - 12 * DAY, now - 11 * DAY, now - 3 * DAY, now - 3600])
    ids = store(province_dsn, events)
    args = parser().parse_args(["purge", "--days", "10", "--dry-run", "--dsn", province_dsn])
    assert args.run(args) == 0
    assert "would purge 2 check-in(s) older than 10 day(s)" in capsys.readouterr().out
    assert stored_ids(database) == ids
    args = parser().parse_args(["purge", "--days", "10", "--dsn", province_dsn])
    assert args.run(args) == 0
    output = capsys.readouterr().out
    assert "purged 2 check-in(s)" in output and "never exported: 2" in output
    assert stored_ids(database) == {e.event_id for e, _ in events[2:]}
    args = parser().parse_args(["purge", "--dsn", province_dsn])  # the default: 28 days
    assert args.run(args) == 0
    assert "purged 0 check-in(s) older than 28 day(s)" in capsys.readouterr().out
    assert len(stored_ids(database)) == 2


def test_a_dry_run_is_recorded_but_touches_no_batch(database: Database, province_dsn: str, tmp_path: Path):
    store(province_dsn, checkins(2, times=[ago(40), ago(39)]))
    impostor = Receiver(make_pki(tmp_path / "other"))
    try:  # a batch left pending (the client refuses the impostor's certificate)
        with pytest.raises(ProvinceError):
            export_run(database, settings_for(impostor, make_pki(tmp_path / "pki"), tmp_path))
    finally:
        impostor.close()
    dry = purge(database, 28, now=NOW, dry_run=True)
    assert (dry.deleted, dry.expired_batches) == (2, 1)
    with database.connection() as connection:
        assert connection.execute("SELECT state FROM export_batches").fetchall() == [("pending",)]
        assert connection.execute("SELECT count(*) FROM checkins").fetchone() == (2,)
