"""The reference consumer: the province's end of check-in delivery, and the morning's summary.

Subscription. Every gate's check-ins through an MQTT 5 shared subscription
(``$share/<group>/qrgate/v1/device/+/checkin``): the broker hands each message to one member of
the group, so more instances share the load and the others carry on when one stops. The session is
persistent (clean start off, a session expiry interval, QoS 1, a client id stable per instance), so
the broker keeps what arrives for an instance while it is away.

Storage, exactly once. Each event is stored idempotently by its event id, in SQLite (WAL,
``synchronous=FULL``, ``INSERT OR IGNORE``) or PostgreSQL (``ON CONFLICT DO NOTHING``), in batches:
whatever arrived while the previous batch committed goes into the next transaction (group commit:
one fsync per batch, no added latency). Only after that commit does the consumer acknowledge:

- to the broker: its PUBACK (paho's ``manual_ack``), so a consumer that dies before committing gets
  the messages again when it reconnects;
- to each device: one ``wire.CheckinAck`` per device and batch, with the event ids just committed
  (new ones and duplicates alike), on ``wire.ack_topic(device)`` at QoS 1. A gate with end-to-end
  acks keeps each event until this arrives, and sends it again when it does not.

A PUBACK is sent only on the connection the message came on: after a reconnect the broker sends
the unacknowledged messages again under the same packet ids, and a PUBACK for an old copy could
acknowledge a different message that reused the id. The new copies are stored (as duplicates: a
no-op) and acknowledged then.

Bad input. A payload that is not a valid check-in, or whose device id differs from its topic's, is
counted, logged with the topic and the schema error (never the payload) and acknowledged to the
broker (a redelivery cannot repair it) but never to the device. Logs hold counts and device ids,
never pass or subject ids.

Summary. ``daily_summary`` counts, per site, the check-ins of one local day (by the time the gate
decided), accepted and rejected, and the devices seen: what the authorities read every morning
(``qrgate-issuer consumer summary``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import queue
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from qrgate import wire
from qrgate.errors import ConsumerError, QrgateError

log = logging.getLogger(__name__)

DEFAULT_GROUP = "qrgate-consumers"
BATCH_MAX = 500  # messages per transaction; also the Receive Maximum asked of the broker
_STORE_RETRY_MAX_S = 30.0  # a failing database is retried with backoff up to this wait
_STATS_LOG_INTERVAL_S = 60.0


def shared_checkins(group: str) -> str:
    """The shared subscription to every device's check-ins for consumer group ``group``."""
    if not group or any(c in group for c in "/+#"):
        raise ConsumerError(f"consumer group {group!r} cannot be a topic level")
    return f"$share/{group}/{wire.ALL_CHECKINS}"


@dataclass(frozen=True, slots=True)
class SiteDay:
    """One site's line in the daily summary."""

    site_id: str
    checkins: int
    accepted: int
    rejected: int
    devices_seen: tuple[str, ...]


class EventStore(Protocol):
    """Where the consumer keeps check-ins: idempotent by event id, durable when ``store`` returns."""

    def store(self, events: Sequence[tuple[wire.CheckinEvent, bytes]], received_at: float) -> int:
        """Insert the events not stored yet, in one transaction; returns how many were new."""
        ...

    def daily_summary(self, start_utc: dt.datetime, end_utc: dt.datetime) -> list[SiteDay]:
        """Per site, the check-ins decided in ``[start_utc, end_utc)``."""
        ...

    def close(self) -> None: ...


def _row(event: wire.CheckinEvent, raw: bytes, received_at: str) -> tuple[object, ...]:
    return (
        event.event_id, event.device_id, event.seq, event.site_id, event.gate, event.direction, event.time,
        event.clock_synced, event.verdict, event.reason, event.format, event.issuer, event.pass_id,
        event.subject_id, received_at, raw.decode("utf-8"),
    )


_COLUMNS = ("event_id, device_id, seq, site_id, gate, direction, time, clock_synced, verdict, reason, format, "
            "issuer, pass_id, subject_id, received_at, payload")

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkins (
    event_id     TEXT PRIMARY KEY,     -- the de-duplication key
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,     -- per device, gap-free: a gap is an event still on its way
    site_id      TEXT NOT NULL,
    gate         TEXT NOT NULL,
    direction    TEXT NOT NULL,
    time         TEXT NOT NULL,        -- the gate's decision, ISO 8601 UTC with ms: sorts as text
    clock_synced INTEGER NOT NULL,
    verdict      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    format       TEXT NOT NULL,
    issuer       TEXT,
    pass_id      TEXT,
    subject_id   TEXT,
    received_at  TEXT NOT NULL,        -- when this consumer first stored it
    payload      TEXT NOT NULL         -- the JSON as received: fields of later schema versions are kept
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checkins_time ON checkins (time);
CREATE INDEX IF NOT EXISTS checkins_device_seq ON checkins (device_id, seq);
"""


class SqliteStore:
    """The default store: one SQLite file, WAL, every commit fsync'd before anything is acknowledged."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            if self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                raise ConsumerError(f"store {self.path}: the file system does not support WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SQLITE_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConsumerError(f"store {self.path}: cannot open: {exc}") from exc
        self._lock = threading.Lock()

    def store(self, events: Sequence[tuple[wire.CheckinEvent, bytes]], received_at: float) -> int:
        if not events:
            return 0
        stamp = wire.iso_utc(received_at)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany(
                    f"INSERT OR IGNORE INTO checkins ({_COLUMNS}) VALUES ({', '.join('?' * 16)})",
                    [_row(event, raw, stamp) for event, raw in events],
                )
                new = self._db.total_changes - before
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise ConsumerError(f"store {self.path}: events not stored: {exc}") from exc
        return new

    def daily_summary(self, start_utc: dt.datetime, end_utc: dt.datetime) -> list[SiteDay]:
        with self._lock:
            rows = self._db.execute(
                "SELECT site_id, count(*), sum(verdict = 'accepted'), sum(verdict = 'rejected'), "
                "group_concat(DISTINCT device_id) FROM checkins WHERE time >= ? AND time < ? "
                "GROUP BY site_id ORDER BY site_id",
                (wire.iso_utc(start_utc.timestamp()), wire.iso_utc(end_utc.timestamp())),
            ).fetchall()
        return [SiteDay(site, total, accepted, rejected, tuple(sorted(devices.split(","))))
                for site, total, accepted, rejected, devices in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkins (
    event_id     text PRIMARY KEY,
    device_id    text NOT NULL,
    seq          bigint NOT NULL,
    site_id      text NOT NULL,
    gate         text NOT NULL,
    direction    text NOT NULL,
    time         timestamptz NOT NULL,
    clock_synced boolean NOT NULL,
    verdict      text NOT NULL,
    reason       text NOT NULL,
    format       text NOT NULL,
    issuer       text,
    pass_id      text,
    subject_id   text,
    received_at  timestamptz NOT NULL,
    payload      jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS checkins_time ON checkins (time);
CREATE INDEX IF NOT EXISTS checkins_device_seq ON checkins (device_id, seq);
"""


# Placeholders in _COLUMNS order; the casts say what the text parameters are.
_POSTGRES_VALUES = "%s, %s, %s, %s, %s, %s, %s::timestamptz, %s, %s, %s, %s, %s, %s, %s, %s::timestamptz, %s::jsonb"


class PostgresStore:
    """The same table in PostgreSQL (psycopg 3), for a province that runs one; a commit there is
    durable under PostgreSQL's defaults (``synchronous_commit = on``)."""

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ConsumerError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from exc
        self._psycopg = psycopg
        try:
            self._db = psycopg.connect(dsn, autocommit=False)
            with self._db.transaction():
                self._db.execute(_POSTGRES_SCHEMA)
        except psycopg.Error as exc:
            raise ConsumerError(f"PostgreSQL store: cannot open: {exc}") from exc
        self._lock = threading.Lock()

    def store(self, events: Sequence[tuple[wire.CheckinEvent, bytes]], received_at: float) -> int:
        if not events:
            return 0
        stamp = wire.iso_utc(received_at)
        with self._lock:
            try:
                with self._db.transaction(), self._db.cursor() as cursor:
                    cursor.executemany(
                        f"INSERT INTO checkins ({_COLUMNS}) VALUES ({_POSTGRES_VALUES}) ON CONFLICT (event_id) DO NOTHING",
                        [_row(event, raw, stamp) for event, raw in events],
                    )
                    return cursor.rowcount  # psycopg sums the rows executemany inserted
            except self._psycopg.Error as exc:
                raise ConsumerError(f"PostgreSQL store: events not stored: {exc}") from exc

    def daily_summary(self, start_utc: dt.datetime, end_utc: dt.datetime) -> list[SiteDay]:
        with self._lock, self._db.transaction():
            rows = self._db.execute(
                "SELECT site_id, count(*), count(*) FILTER (WHERE verdict = 'accepted'), "
                "count(*) FILTER (WHERE verdict = 'rejected'), array_agg(DISTINCT device_id ORDER BY device_id) "
                "FROM checkins WHERE time >= %s AND time < %s GROUP BY site_id ORDER BY site_id",
                (start_utc, end_utc),
            ).fetchall()
        return [SiteDay(site, total, accepted, rejected, tuple(devices)) for site, total, accepted, rejected, devices in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(sqlite_path: str | Path | None = None, postgres_dsn: str | None = None) -> EventStore:
    """PostgreSQL when a DSN is given, else the SQLite file."""
    if postgres_dsn:
        return PostgresStore(postgres_dsn)
    if sqlite_path is None:
        raise ConsumerError("give a SQLite file or a PostgreSQL DSN for the store")
    return SqliteStore(sqlite_path)


def local_day_bounds(day: dt.date, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants where the local ``day`` in ``zone`` starts and the next one starts."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def daily_summary(store: EventStore, day: dt.date, zone: dt.tzinfo = dt.UTC) -> list[SiteDay]:
    """Per site: the check-ins the gates decided on the local ``day``, accepted, rejected, devices seen."""
    return store.daily_summary(*local_day_bounds(day, zone))


# ---- the consumer ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ConsumerTls:
    ca_file: str | Path
    cert_file: str | Path | None = None
    key_file: str | Path | None = None


@dataclass(slots=True)
class ConsumerStats:
    connected: bool = False
    received: int = 0  # check-in messages, redeliveries included
    stored: int = 0  # new events committed
    duplicates: int = 0  # valid events that were already stored
    malformed: int = 0  # not a check-in, or not from the device its topic names
    acks_sent: int = 0  # CheckinAck messages published to devices
    batches: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class _Message:
    epoch: int  # which connection it came on: PUBACKs go only on that one
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass(slots=True)
class _Batch:
    valid: list[tuple[wire.CheckinEvent, bytes]] = field(default_factory=list)
    acks: dict[str, list[str]] = field(default_factory=dict)  # device id -> event ids
    malformed: int = 0


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _device_of(topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) == 5 and f"{parts[0]}/{parts[1]}" == wire.TOPIC_ROOT and parts[2] == "device" and parts[4] == "checkin":
        return parts[3]
    return None


class Consumer:
    """Stores every gate's check-ins exactly once and acknowledges them after the commit.

    ``start()`` returns at once (paho connects and reconnects in the background); ``stop()``
    finishes the batch in hand, disconnects (the session stays at the broker) and closes nothing it
    was given: the caller owns ``store``.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        host: str,
        port: int,
        client_id: str | None = None,
        group: str = DEFAULT_GROUP,
        tls: ConsumerTls | None = None,
        username: str | None = None,
        password: str | None = None,
        session_expiry_s: int = 7 * 86_400,
        keepalive: int = 30,
        end_to_end_ack: bool = True,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self.store = store
        self.host, self.port = host, port
        self.client_id = client_id or f"qrgate-consumer-{socket.gethostname()}"
        self.topic = shared_checkins(group)
        self._session_expiry_s = session_expiry_s
        self._keepalive = keepalive
        self._end_to_end = end_to_end_ack
        self._batch_max = batch_max
        self._incoming: queue.Queue[_Message] = queue.Queue()
        self._epoch = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = ConsumerStats()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        if tls is not None:
            self._client.tls_set(
                ca_certs=str(tls.ca_file),
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
            )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Consumer":
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = self._batch_max  # the broker never has more unacknowledged with us
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive, clean_start=False,
                                   properties=properties)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="qrgate-consumer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(_STORE_RETRY_MAX_S + 5)
            self._thread = None
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "Consumer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the broker acknowledged the subscription (on this connection) within ``timeout``."""
        return self._subscribed.wait(timeout)

    # --- paho's thread -------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: object, flags: object, reason, _props: object) -> None:
        if reason.is_failure:
            self.stats.last_error = f"broker refused the connection: {reason}"
            log.warning("consumer: %s", self.stats.last_error)
            return
        with self._lock:
            self._epoch += 1
        self.stats.connected = True
        # PUBACKs and acknowledgements are small packets each awaited by the other side: Nagle's
        # algorithm would hold them back for a TCP ACK (measured: end-to-end drain 4x slower).
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(self.topic, qos=wire.QOS)
        log.info("consumer %s connected to %s:%d (session present: %s)", self.client_id, self.host, self.port,
                 getattr(flags, "session_present", None))

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, reasons: list, _props: object) -> None:
        if any(reason.is_failure for reason in reasons):
            self.stats.last_error = f"broker refused the subscription to {self.topic}: {reasons[0]}"
            log.error("consumer: %s", self.stats.last_error)
            return
        self._subscribed.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason, _props: object) -> None:
        self._subscribed.clear()
        self.stats.connected = False
        if not self._stopping.is_set():
            self.stats.last_error = f"connection lost: {reason}"
            log.warning("consumer: connection to %s:%d lost (%s); reconnecting", self.host, self.port, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            epoch = self._epoch
        self._incoming.put(_Message(epoch, message.mid, message.qos, message.topic, bytes(message.payload)))

    # --- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        next_log = time.monotonic() + _STATS_LOG_INTERVAL_S
        while not self._stopping.is_set():
            batch = self._take_batch()
            if batch:
                self._handle(batch)
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + _STATS_LOG_INTERVAL_S
                log.info("consumer: %s", self.stats)

    def _take_batch(self) -> list[_Message]:
        """What has arrived, up to ``batch_max``; waits briefly for the first message only."""
        try:
            batch = [self._incoming.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(batch) < self._batch_max:
            try:
                batch.append(self._incoming.get_nowait())
            except queue.Empty:
                break
        return batch

    def _handle(self, messages: list[_Message]) -> None:
        batch = self._parse(messages)
        new = self._commit(batch)
        if new is None:
            return  # stopping with the batch unstored: unacknowledged, the broker sends it again
        with self._lock:
            epoch = self._epoch
        for message in messages:
            if message.qos and message.epoch == epoch:
                self._client.ack(message.mid, message.qos)
        acks_sent = 0
        if self._end_to_end:
            for device_id, event_ids in batch.acks.items():
                for chunk in _chunks(event_ids, wire.MAX_ACK_EVENT_IDS):
                    ack = wire.CheckinAck(event_ids=chunk, consumer=self.client_id)
                    self._client.publish(wire.ack_topic(device_id), ack.to_json(), qos=wire.QOS)
                    acks_sent += 1
        stats = self.stats
        stats.received += len(messages)
        stats.stored += new
        stats.duplicates += len(batch.valid) - new
        stats.malformed += batch.malformed
        stats.acks_sent += acks_sent
        stats.batches += 1
        log.debug("consumer: batch of %d: %d new, %d duplicates, %d malformed, %d devices",
                  len(messages), new, len(batch.valid) - new, batch.malformed, len(batch.acks))

    def _parse(self, messages: list[_Message]) -> _Batch:
        batch = _Batch()
        for message in messages:
            device_id = _device_of(message.topic)
            try:
                event = wire.CheckinEvent.from_json(message.payload)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "payload"
                log.warning("consumer: not a check-in on %s (%s: %s); dropped", message.topic, where, first["msg"])
                batch.malformed += 1
                continue
            if event.device_id != device_id:
                log.warning("consumer: check-in seq %d on %s names device %r; dropped", event.seq, message.topic,
                            event.device_id)
                batch.malformed += 1
                continue
            batch.valid.append((event, message.payload))
            batch.acks.setdefault(event.device_id, []).append(event.event_id)
        return batch

    def _commit(self, batch: _Batch) -> int | None:
        """Store the batch, retrying with backoff while the database fails; None if stopped first."""
        delay = 0.5
        while True:
            try:
                return self.store.store(batch.valid, time.time())
            except ConsumerError as exc:
                self.stats.last_error = str(exc)
                log.error("consumer: %s; retrying in %.1f s (nothing is acknowledged meanwhile)", exc, delay)
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, _STORE_RETRY_MAX_S)


# ---- the command line -----------------------------------------------------------------------------

def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``consumer run`` and ``consumer summary`` (each sets ``run(args) -> int``)."""
    consumer = subparsers.add_parser(
        "consumer", help="the province's reference consumer of check-ins, and its daily summary",
        description="Store every gate's check-ins exactly once (SQLite or PostgreSQL) and acknowledge them "
        "end to end; print the daily per-site summary.",
    )
    actions = consumer.add_subparsers(dest="action", metavar="ACTION", required=True)

    run = actions.add_parser(
        "run", help="consume check-ins until SIGTERM/SIGINT",
        description="Subscribe to every gate's check-ins with a shared subscription, store each once, "
        "acknowledge after the commit. Several instances with different --client-id share the load.",
    )
    run.add_argument("--host", required=True, help="the provincial broker")
    run.add_argument("--port", type=int, default=8883)
    run.add_argument("--ca-file", help="CA of the broker's certificate (enables TLS)")
    run.add_argument("--cert-file", help="this consumer's client certificate (mutual TLS)")
    run.add_argument("--key-file", help="this consumer's private key")
    run.add_argument("--client-id", help="stable per instance: the broker keeps its session (default: qrgate-consumer-<host name>)")
    run.add_argument("--group", default=DEFAULT_GROUP, help=f"shared-subscription group (default {DEFAULT_GROUP})")
    run.add_argument("--session-expiry", type=int, default=7 * 86_400, metavar="SECONDS",
                     help="how long the broker keeps this consumer's session and queue while it is away (default 7 days)")
    run.add_argument("--no-end-to-end-ack", action="store_true", help="do not acknowledge to the devices")
    _add_store_arguments(run)
    run.set_defaults(run=_run_consumer)

    summary = actions.add_parser(
        "summary", help="per-site check-ins of one day",
        description="Per site: check-ins the gates decided on one local day, accepted, rejected, devices seen.",
    )
    summary.add_argument("--day", type=dt.date.fromisoformat, help="YYYY-MM-DD (default: yesterday in --tz)")
    summary.add_argument("--tz", default="UTC", help="the authorities' time zone, e.g. Asia/Ho_Chi_Minh (default UTC)")
    summary.add_argument("--json", action="store_true", help="one JSON object per site instead of a table")
    _add_store_arguments(summary)
    summary.set_defaults(run=_run_summary)


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=Path("checkins.sqlite"), help="SQLite store (default checkins.sqlite)")
    parser.add_argument("--postgres", metavar="DSN", help="store in PostgreSQL instead, e.g. 'dbname=qrgate host=/run/postgresql'")


def _run_consumer(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    store = open_store(args.db, args.postgres)
    tls = ConsumerTls(args.ca_file, args.cert_file, args.key_file) if args.ca_file else None
    consumer = Consumer(store, host=args.host, port=args.port, client_id=args.client_id, group=args.group, tls=tls,
                        session_expiry_s=args.session_expiry, end_to_end_ack=not args.no_end_to_end_ack)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    consumer.start()
    try:
        stop.wait()
    finally:
        consumer.stop()
        store.close()
    print(json.dumps(asdict(consumer.stats)))
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    try:
        zone = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConsumerError(f"unknown time zone {args.tz!r}") from exc
    day = args.day or (dt.datetime.now(zone).date() - dt.timedelta(days=1))
    store = open_store(args.db, args.postgres)
    try:
        sites = daily_summary(store, day, zone)
    finally:
        store.close()
    if args.json:
        for site in sites:
            print(json.dumps({"day": day.isoformat(), **asdict(site), "devices_seen": list(site.devices_seen)}))
        return 0
    print(f"check-ins on {day.isoformat()} ({args.tz})")
    print(f"{'site':24} {'check-ins':>9} {'accepted':>9} {'rejected':>9} {'devices':>8}")
    for site in sites:
        print(f"{site.site_id:24} {site.checkins:9d} {site.accepted:9d} {site.rejected:9d} {len(site.devices_seen):8d}")
    if not sites:
        print("(none)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qrgate_provisioning.consumer",
                                     description="The qrgate reference consumer (also `qrgate-issuer consumer`).")
    add_parsers(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(["consumer", *(argv if argv is not None else sys.argv[1:])])
    try:
        return int(args.run(args))
    except QrgateError as exc:
        print(f"qrgate consumer: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
