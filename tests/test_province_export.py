"""The export to the national system (province.export) on a real PostgreSQL, against a local HTTPS receiver
(http.server over TLS with certificates made here, mutual TLS) that fails and recovers: 500s, connections dropped
before and after it stored a batch, answers too late, a crash of the exporting process mid-batch, a transaction
that commits late, events that arrive days late. In the end the receiver, counting by event id, has every
check-in exactly once as new, every retried batch had the same id and the same bytes, and every batch it got is
valid against docs/national-export.schema.json. A certificate the client does not trust, and a 401, are refused
with the cause named."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError

from export_helpers import Receiver, checkins, migrated_database, settings_for, store
from mqtt_helpers import Pki, make_pki, wait_until
from qrgate import wire
from qrgate_provisioning.consumer.postgres_store import PostgresStore
from qrgate_provisioning.consumer.store import CHECKIN_COLUMNS, checkin_row
from qrgate_provisioning.errors import ProvinceError
from qrgate_provisioning.province.commands import export as export_command
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.export import export_run
from qrgate_provisioning.province.export_settings import ExportSettings


@pytest.fixture(name="pki")
def pki_fixture(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", client_cn="qrgate-province")


@pytest.fixture(name="database")
def database_fixture(province_dsn: str) -> Iterator[Database]:
    with migrated_database(province_dsn) as database:
        yield database


def batch_rows(database: Database) -> list[tuple[object, ...]]:
    with database.connection() as connection:
        return connection.execute("SELECT seq, state, count, attempts, body IS NULL, duplicate FROM export_batches "
                                  "ORDER BY seq").fetchall()


def assert_each_once(receiver: Receiver, stored: set[str]) -> None:
    assert receiver.problems == []
    assert set(receiver.new_events) == stored
    assert set(receiver.new_events.values()) == {1}, "a check-in was received twice as new"
    assert receiver.seqs == list(range(1, len(receiver.seqs) + 1))


def test_every_check_in_arrives_once_through_500s_drops_and_late_answers(database: Database, province_dsn: str,
                                                                         pki: Pki, tmp_path: Path):
    stored = store(province_dsn, checkins(50))
    script = ["500", "drop_after", "ok", "late", "drop_before", "500", "ok", "drop_after"]
    receiver = Receiver(pki, script)
    try:
        report = export_run(database, settings_for(receiver, pki, tmp_path))
        assert (report.caught_up, report.error, report.batches, report.records) == (True, None, 8, 50)
        assert report.retries == 6  # every failure of the script was retried
        assert report.duplicates == 3  # drop_after twice and late: the receiver had stored them
        assert_each_once(receiver, stored)
        rows = batch_rows(database)
        assert [(r[1], r[4]) for r in rows] == [("acked", True)] * 8  # the bytes are not kept once acknowledged
        assert sum(int(r[2]) for r in rows) == 50  # type: ignore[call-overload]

        # a gate offline for five days delivers old check-ins after the newer ones went out: they still go
        late = store(province_dsn, checkins(4, start=100, time_offset_s=-5 * 86400))
        again = export_run(database, settings_for(receiver, pki, tmp_path))
        assert (again.caught_up, again.batches, again.records) == (True, 1, 4)
        assert_each_once(receiver, stored | late)
        assert export_run(database, settings_for(receiver, pki, tmp_path)).batches == 0  # nothing new: nothing sent
    finally:
        receiver.close()


def test_a_transaction_that_commits_late_cannot_slip_behind_the_export(database: Database, province_dsn: str,
                                                                       pki: Pki, tmp_path: Path):
    # (opened first: opening a store runs CREATE INDEX IF NOT EXISTS, which waits for the open transaction)
    other_consumer = PostgresStore(province_dsn)
    receiver = Receiver(pki)
    settings = settings_for(receiver, pki, tmp_path)
    try:
        early, later_events = checkins(1), checkins(3, start=10)
        with psycopg.connect(province_dsn) as slow:  # a consumer whose transaction stays open
            slow.execute(f"INSERT INTO checkins ({CHECKIN_COLUMNS}) VALUES ({', '.join(['%s'] * 16)})",
                         checkin_row(early[0][0], early[0][1], wire.iso_utc(time.time())))
            assert other_consumer.store(later_events, time.time()) == 3  # commits after the slow one began
            later = {event.event_id for event, _raw in later_events}
            held = export_run(database, settings)
            assert (held.caught_up, held.batches) == (True, 0)  # the open transaction holds the horizon back
            assert receiver.requests == 0
        report = export_run(database, settings)  # committed now
        assert (report.batches, report.records) == (1, 4)
        assert_each_once(receiver, later | {early[0][0].event_id})
        [body] = receiver.batches.values()
        assert json.loads(body)["records"][0]["event_id"] == early[0][0].event_id  # it went first: stored first
    finally:
        receiver.close()
        other_consumer.close()


CHILD = """
import sys
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.export import export_run
from qrgate_provisioning.province.export_settings import ExportSettings
from qrgate_provisioning.province.settings import DatabaseSettings
with Database(DatabaseSettings(dsn=sys.argv[1]), max_connections=2) as database:
    export_run(database, ExportSettings.model_validate_json(sys.argv[2]))
"""


def test_the_export_resumes_after_its_process_is_killed_mid_batch(database: Database, province_dsn: str, pki: Pki,
                                                                  tmp_path: Path):
    stored = store(province_dsn, checkins(30))
    receiver = Receiver(pki, ["ok", "ok", "hold"])
    settings = settings_for(receiver, pki, tmp_path, timeout_s=30)
    child = subprocess.Popen([sys.executable, "-c", CHILD, province_dsn, settings.model_dump_json()])
    try:
        assert receiver.held.wait(60), "the exporting process never sent its third batch"
        child.send_signal(signal.SIGKILL)  # a crash: batch 3 stored by the receiver, never acknowledged
        child.wait(30)
        assert [(r[0], r[1]) for r in batch_rows(database)] == [(1, "acked"), (2, "acked"), (3, "pending")]
        receiver.release.set()
        report = export_run(database, settings_for(receiver, pki, tmp_path))  # a new exporter
        assert (report.caught_up, report.batches, report.records, report.duplicates) == (True, 3, 16, 1)
        assert_each_once(receiver, stored)
        assert len(receiver.batches) == 5 and receiver.requests == 6  # batch 3 came twice, with the same id
    finally:
        child.kill()
        receiver.close()


def test_a_certificate_the_client_does_not_trust_is_refused_and_named(database: Database, province_dsn: str,
                                                                      pki: Pki, tmp_path: Path):
    store(province_dsn, checkins(3))
    impostor = Receiver(make_pki(tmp_path / "impostor"))  # a server with a certificate of another CA
    try:
        settings = settings_for(impostor, pki, tmp_path)
        with pytest.raises(ProvinceError, match=r"TLS certificate this service does not trust .*export\.ca_file"):
            export_run(database, settings)
        assert impostor.requests == 0 and impostor.batches == {}
        [row] = batch_rows(database)
        assert (row[1], row[3]) == ("pending", 1)  # not retried: a certificate does not get better by waiting
    finally:
        impostor.close()


def test_a_refusal_stops_the_export_named_and_the_batch_goes_first_next_time(database: Database, province_dsn: str,
                                                                             pki: Pki, tmp_path: Path):
    stored = store(province_dsn, checkins(5))
    receiver = Receiver(pki)
    try:
        wrong = tmp_path / "wrong-token"
        wrong.write_text("not-the-token")
        with pytest.raises(ProvinceError, match=r"refused batch 1 \(.*\) with HTTP 401 Unauthorized: .*unknown token"):
            export_run(database, settings_for(receiver, pki, tmp_path, token_file=wrong))
        with database.connection() as connection:
            pending = connection.execute("SELECT batch_id::text, last_error FROM export_batches").fetchone()
        assert pending is not None and "HTTP 401" in str(pending[1])
        report = export_run(database, settings_for(receiver, pki, tmp_path))
        assert (report.batches, report.records) == (1, 5)
        assert list(receiver.batches) == [pending[0]]  # the same batch, not a new one
        assert_each_once(receiver, stored)
    finally:
        receiver.close()


def test_a_receiver_down_for_longer_than_the_retries_leaves_the_batch_pending(database: Database, province_dsn: str,
                                                                              pki: Pki, tmp_path: Path):
    stored = store(province_dsn, checkins(9))
    receiver = Receiver(pki, ["500"] * 3)
    try:
        report = export_run(database, settings_for(receiver, pki, tmp_path, max_retries=2))
        assert (report.caught_up, report.batches) == (False, 0)
        assert report.error is not None and "HTTP 500" in report.error and "database unavailable" in report.error
        assert [(r[0], r[1], r[3]) for r in batch_rows(database)] == [(1, "pending", 3)]
        report = export_run(database, settings_for(receiver, pki, tmp_path), max_batches=1)
        assert (report.caught_up, report.batches, report.records) == (False, 1, 7)  # the cap, not caught up
        assert export_run(database, settings_for(receiver, pki, tmp_path)).records == 2
        assert_each_once(receiver, stored)
    finally:
        receiver.close()


def test_the_settings_refuse_a_clear_text_endpoint_and_half_a_client_certificate(tmp_path: Path):
    with pytest.raises(ValidationError, match="https://"):
        ExportSettings(endpoint="http://national.example/intake")
    with pytest.raises(ValidationError, match="credentials"):
        ExportSettings(endpoint="https://user:secret@national.example/intake")
    with pytest.raises(ValidationError, match="go together"):
        ExportSettings(endpoint="https://national.example/intake", cert_file=tmp_path / "c.pem")
    with pytest.raises(ValidationError, match="batch_size"):
        ExportSettings(batch_size=0)
    assert ExportSettings().batch_size == 500 and ExportSettings().endpoint is None


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog="qrgate-province")
    export_command.add_parser(built.add_subparsers(dest="command", required=True))
    return built


def test_the_export_command_without_an_endpoint_says_what_to_set(province_dsn: str):
    args = parser().parse_args(["export", "--once", "--dsn", province_dsn])
    with pytest.raises(ProvinceError, match=r"set export\.endpoint"):
        args.run(args)


def test_the_export_command_catches_up_once(database: Database, province_dsn: str, pki: Pki, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]):
    stored = store(province_dsn, checkins(10))
    receiver = Receiver(pki, ["500"])
    try:
        settings = settings_for(receiver, pki, tmp_path)
        config = tmp_path / "province.toml"
        config.write_text(f'[database]\ndsn = "{province_dsn}"\n[export]\n' + "".join(
            f"{key} = {json.dumps(str(value) if isinstance(value, Path) else value)}\n"
            for key, value in settings.model_dump(exclude_none=True).items()))
        args = parser().parse_args(["export", "--once", "--config", str(config)])
        assert args.run(args) == 0
        assert "2 batch(es), 10 check-in(s) acknowledged" in capsys.readouterr().out
        wait_until(lambda: len(receiver.batches) == 2, what="both batches")
        assert_each_once(receiver, stored)
    finally:
        receiver.close()


def test_a_database_whose_transaction_ids_went_back_is_refused(database: Database, province_dsn: str, pki: Pki,
                                                              tmp_path: Path):
    store(province_dsn, checkins(3))
    receiver = Receiver(pki)
    try:
        assert export_run(database, settings_for(receiver, pki, tmp_path)).records == 3
        with database.connection() as connection:  # as after a dump restored into a new cluster
            connection.execute("UPDATE export_batches SET last_xid = '8589934600'::xid8")
        store(province_dsn, checkins(2, start=10))
        with pytest.raises(ProvinceError, match=r"restored from a dump.*pg_resetwal --epoch=3"):
            export_run(database, settings_for(receiver, pki, tmp_path))
        assert len(receiver.new_events) == 3
    finally:
        receiver.close()
