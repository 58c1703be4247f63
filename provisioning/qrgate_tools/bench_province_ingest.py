"""The province benchmark's ingest section: two (or more) reference consumers sharing the subscription store
check-ins into PostgreSQL, with nothing lost and nothing stored twice.

The consumers are the real thing (``python -m qrgate_provisioning.consumer run --postgres``, one process each,
one client id each, the shared subscription ``$share/qrgate-consumers/...``, end-to-end acknowledgements on).
The broker has the provincial broker's queueing and persistence settings; PostgreSQL has ``fsync`` on, as
production, since the consumers acknowledge after a commit that must be durable, and every table and index of
the province's schema (``Database.migrate``), so each insert pays for the indexes the report and the dashboard
need. Publishers (``bench_publisher``) build every event before the clock starts. The rate is what was stored
over the time from the first publish to the last row committed; the publishers' own rate is printed beside it,
so a publisher that could not keep up is seen. Afterwards every published event id is looked up in the table.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.settings import BrokerSettings, DatabaseSettings
from qrgate_provisioning.province.simulate_gate import fleet_identities

from .bench_common import met
from .bench_province_fleet import PROVINCIAL_QUEUEING
from .bench_publisher import PublisherJob, PublisherResult, run_publisher
from .broker import MosquittoBroker
from .postgres import PostgresServer, create_database

TARGET_RATE = 5000.0  # check-ins per second
_STALL_S = 30.0  # no new row for this long: what is missing is lost


def bench_ingest(*, events: int = 150_000, consumers: int = 2, publishers: int = 1, devices: int = 2000,
                 window: int = 100, rate: float | None = None, server: PostgresServer | None = None,
                 broker_config: str = PROVINCIAL_QUEUEING, backlog: bool = False,
                 out: Callable[[str], None] = print) -> dict[str, object]:
    """``events`` check-ins of ``devices`` gates through ``consumers`` consumers into a fresh database. With
    ``backlog`` the consumers are away (stopped, their sessions kept) while everything is published, as during a
    consumer restart or a database outage, and the clock runs from their return until the queue is drained."""
    per_device = max(1, events // devices)
    events = per_device * devices
    own_server = server is None
    server = server or PostgresServer(fsync=True)
    server_dsn = server.dsn or server.start()
    try:
        dsn = create_database(server_dsn)
        with Database(DatabaseSettings(dsn=dsn)) as database:
            database.migrate()
        with tempfile.TemporaryDirectory(prefix="qrgate-bench-ingest-") as tmp:
            config = broker_config + "\nlog_type subscribe"
            with MosquittoBroker(Path(tmp) / "broker", persistence=True, extra_config=config) as broker:
                return _run(broker, dsn, Path(tmp), events, per_device, consumers, publishers, devices, window,
                            rate, backlog, out)
    finally:
        if own_server:
            server.stop()


def _run(broker: MosquittoBroker, dsn: str, tmp: Path, events: int, per_device: int, consumers: int,
         publishers: int, devices: int, window: int, rate: float | None, backlog: bool,
         out: Callable[[str], None]) -> dict[str, object]:
    import psycopg

    out(f"ingest: {events} check-ins of {devices} gates, {publishers} publisher process(es) x 4 connections "
        f"(window {window}), {'as fast as acknowledged' if rate is None else f'{rate:g}/s'}, into {consumers} "
        "consumer processes sharing the subscription; PostgreSQL fsync on, the province's full schema"
        + ("; the consumers away while it is published, the clock from their return" if backlog else ""))
    procs = [_start_consumer(broker, dsn, number, tmp) for number in range(1, consumers + 1)]
    try:
        _wait_subscribed(broker, consumers)
        if backlog:  # their sessions (and shared subscription) stay at the broker, which queues for them
            for proc in procs:
                _stop_consumer(proc)
        identities = fleet_identities(devices, max(1, devices // 2), prefix="ingest")
        endpoint = BrokerSettings(host=broker.host, port=broker.port)
        context = multiprocessing.get_context("spawn")
        ready, results, start = context.Queue(), context.Queue(), context.Event()
        jobs = [PublisherJob(f"bench-publisher-{n + 1}", endpoint, identities[n::publishers], per_device,
                             window=window, rate=None if rate is None else rate / publishers)
                for n in range(publishers)]
        workers = [context.Process(target=run_publisher, args=(job, ready, start, results), daemon=True)
                   for job in jobs]
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get(timeout=300)
        parts: dict[str, list[int | None]] = {"mosquitto": [broker.pid], "consumers": [proc.pid for proc in procs],
                 "publishers": [worker.pid for worker in workers], "postgres": _postgres_pids(dsn)}
        cpu_before = {name: cpu_seconds(pids) for name, pids in parts.items()}
        start.set()
        clock_from: float | None = None
        if backlog:
            published: list[PublisherResult] = [results.get(timeout=900) for _ in workers]
            clock_from = time.monotonic()
            procs = [_start_consumer(broker, dsn, number, tmp) for number in range(1, consumers + 1)]
            _wait_subscribed(broker, consumers, again=True)  # their database connections are open by then
            parts["consumers"], parts["postgres"] = [proc.pid for proc in procs], _postgres_pids(dsn)
            cpu_before["consumers"], cpu_before["postgres"] = 0.0, cpu_seconds(parts["postgres"])
        samples = _watch_rows(dsn, events)
        cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in parts.items()}
        if not backlog:
            published = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(10)
    finally:
        consumer_stats = [_stop_consumer(proc) for proc in procs]
    errors = [result.error for result in published if result.error]
    if errors:
        raise RuntimeError(f"a publisher failed: {errors[0]}")
    publish_from = min(result.first_publish for result in published)
    first = clock_from if clock_from is not None else publish_from
    last_ack = max(result.last_ack for result in published)
    acknowledged = sum(result.acknowledged for result in published)
    with psycopg.connect(dsn, autocommit=True) as conn:
        check = _check(conn, [event_id for result in published for event_id in result.event_ids])
    stored_at = next((at for at, count in samples if count >= events), samples[-1][0])
    ingest_rate = check["rows"] / (stored_at - first) if stored_at > first else 0.0
    publish_rate = acknowledged / (last_ack - publish_from) if last_ack > publish_from else 0.0
    steady = _steady_rate(samples, events)
    whole = check["lost"] == 0 and check["twice"] == 0 and check["foreign"] == 0
    ok = ingest_rate >= TARGET_RATE and whole
    busy = stored_at - publish_from  # the CPU counts from the first publish (with a backlog: its queueing too)
    out(f"   publishers: {acknowledged} acknowledged by the broker ({sum(r.refused for r in published)} refused) "
        f"in {last_ack - publish_from:.1f} s = {publish_rate:.0f}/s")
    since = "the consumers' return" if backlog else "the first publish"
    out(f"   stored: {check['rows']} rows, {check['distinct']} distinct event ids, in {stored_at - first:.1f} s "
        f"from {since} = {ingest_rate:.0f} check-ins/s (steady {steady:.0f}/s between 10% and 90%) "
        f"[{met(ingest_rate >= TARGET_RATE)}: >= {TARGET_RATE:.0f}/s]")
    out(f"   lost {check['lost']}, stored twice {check['twice']} (rows per event id > 1), same gate and seq twice "
        f"{check['seq_twice']}, rows nobody published {check['foreign']} [{met(whole)}: lost 0, twice 0]")
    shares = ", ".join(f"{name} {seconds / busy * 100:.0f}%" for name, seconds in cpu.items())
    costs = ", ".join(f"{name} {seconds / max(1, check['rows']) * 1e6:.0f} us" for name, seconds in cpu.items())
    out(f"   CPU while ingesting (share of one core; the machine has {os.cpu_count()}): {shares}; "
        f"per check-in: {costs}")
    for number, stats in enumerate(consumer_stats, start=1):
        batches, received = _count(stats, "batches"), _count(stats, "received")
        out(f"   consumer {number}: stored {stats.get('stored')}, redeliveries {stats.get('duplicates')}, "
            f"{batches} transactions (mean batch {received / batches if batches else 0:.0f}), "
            f"{stats.get('acks_sent')} end-to-end acks")
    out("")
    return {"events": events, "backlog": backlog, "consumers": consumers, "publishers": publishers,
            "publish_rate": round(publish_rate),
            "ingest_rate": round(ingest_rate), "steady_rate": round(steady), **check,
            "cpu_per_checkin_us": {name: round(seconds / max(1, check["rows"]) * 1e6) for name, seconds in cpu.items()},
            "consumer_stats": consumer_stats, "met": ok}


def cpu_seconds(pids: list[int | None]) -> float:
    """User + system CPU seconds of these processes so far (those that have ended count nothing)."""
    total = 0.0
    for pid in pids:
        if pid is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _postgres_pids(dsn: str) -> list[int | None]:
    """The postmaster (from its data directory's postmaster.pid) and its children: the backends."""
    directory = dict(part.split("=", 1) for part in dsn.split())["host"]
    postmaster = int((Path(directory) / "data" / "postmaster.pid").read_text().split()[0])
    children: list[int | None] = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return children


def _count(stats: dict[str, object], name: str) -> int:
    value = stats.get(name)
    return value if isinstance(value, int) else 0


def _start_consumer(broker: MosquittoBroker, dsn: str, number: int, tmp: Path) -> subprocess.Popen[bytes]:
    log = open(tmp / f"consumer-{number}.log", "wb")  # noqa: SIM115 - the child writes it; closed with the child
    return subprocess.Popen(
        [sys.executable, "-m", "qrgate_provisioning.consumer", "run", "--postgres", dsn, "--host", broker.host,
         "--port", str(broker.port), "--client-id", f"bench-consumer-{number}", "--session-expiry", "600"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)


def _wait_subscribed(broker: MosquittoBroker, consumers: int, timeout: float = 30.0, again: bool = False) -> None:
    """Until the broker logged every consumer's shared subscription (``log_type subscribe``); ``again``: a second
    time (they came back)."""
    deadline = time.monotonic() + timeout
    times = 2 if again else 1
    while time.monotonic() < deadline:
        text = broker.log_path.read_text(errors="replace") if broker.log_path.exists() else ""
        if all(text.count(f"bench-consumer-{n} 1 $share/") >= times for n in range(1, consumers + 1)):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the consumers did not subscribe within {timeout:.0f} s:\n{broker.log_tail()}")


def _stop_consumer(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    """SIGTERM; the consumer prints its counters as JSON when it ends."""
    proc.terminate()
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    try:
        stats: dict[str, object] = json.loads(output.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"no counters (exit status {proc.returncode})"}
    return stats


def _watch_rows(dsn: str, expected: int) -> list[tuple[float, int]]:
    """(time.monotonic(), rows) every 0.2 s until ``expected`` rows, or none new for ``_STALL_S``."""
    import psycopg

    samples: list[tuple[float, int]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        last_change = time.monotonic()
        while True:
            row = conn.execute("SELECT count(*) FROM checkins").fetchone()
            count = int(row[0]) if row else 0
            now = time.monotonic()
            if not samples or count != samples[-1][1]:
                last_change = now
            samples.append((now, count))
            if count >= expected or now - last_change > _STALL_S:
                return samples
            time.sleep(0.2)


def _steady_rate(samples: list[tuple[float, int]], expected: int) -> float:
    """Rows per second between the samples at 10% and 90% of ``expected``."""
    low = next(((at, n) for at, n in samples if n >= expected * 0.1), None)
    high = next(((at, n) for at, n in samples if n >= expected * 0.9), None)
    if low is None or high is None or high[0] <= low[0]:
        return 0.0
    return (high[1] - low[1]) / (high[0] - low[0])


def _check(conn: object, published: list[str]) -> dict[str, int]:
    """Every published id against the table: lost (published, not stored), stored twice, foreign rows."""
    import psycopg

    assert isinstance(conn, psycopg.Connection)
    conn.execute("CREATE TEMP TABLE published (event_id text PRIMARY KEY)")
    with conn.cursor().copy("COPY published (event_id) FROM STDIN") as copy:
        for event_id in published:
            copy.write_row((event_id,))

    def one(sql: str) -> int:
        row = conn.execute(sql).fetchone()
        return int(row[0]) if row else 0

    return {
        "published": len(published),
        "rows": one("SELECT count(*) FROM checkins"),
        "distinct": one("SELECT count(DISTINCT event_id) FROM checkins"),
        "lost": one("SELECT count(*) FROM published p WHERE NOT EXISTS "
                    "(SELECT 1 FROM checkins c WHERE c.event_id = p.event_id)"),
        "twice": one("SELECT count(*) FROM (SELECT event_id FROM checkins GROUP BY event_id "
                     "HAVING count(*) > 1) AS repeated"),
        "seq_twice": one("SELECT count(*) FROM (SELECT device_id, seq FROM checkins GROUP BY device_id, seq "
                         "HAVING count(*) > 1) AS repeated"),
        "foreign": one("SELECT count(*) FROM checkins c WHERE NOT EXISTS "
                       "(SELECT 1 FROM published p WHERE p.event_id = c.event_id)"),
    }
