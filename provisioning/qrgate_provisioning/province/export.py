"""The export to the national system: check-ins pushed in batches over HTTPS, with retries, resumable from the
last acknowledged batch, and nothing ever sent twice as new.

**Order.** Batches follow one total order of the check-ins that a late event can never slip behind. Event time
cannot be it: a gate that was offline for days uploads old events after newer ones were exported. ``received_at``
(the consumer's clock) or a serial number cannot either: both are taken when a row is inserted, not when its
transaction commits, so a consumer's slow transaction (or a second consumer's) can commit a row *behind* one that
was already visible and exported. The order is ``(ingest_xid, event_id)``: ``ingest_xid`` is the id of the
transaction that stored the row (a column added to ``checkins``, defaulting to ``pg_current_xact_id()``), and a
batch takes only rows whose transaction id is below ``pg_snapshot_xmin(pg_current_snapshot())``, the oldest
transaction still running. Every transaction below that horizon has ended, and every future one gets a higher
id, so once the horizon has passed a position, no row can ever appear before it. (A transaction left open
anywhere in the database holds the export back, never makes it skip: a delay, not a loss.) Rows stored before this
column existed have ``ingest_xid`` 0 and go first, by event id.

**Fixed batches.** A batch is made once, in one transaction under an advisory lock: its records are the next
``batch_size`` rows after the previous batch's last one, its id a random UUID, and its exact bytes are kept in
``export_batches`` until it is acknowledged. A retry, after a 5xx, a timeout, a dropped connection or this
process's crash, sends the same id with the same bytes, so the receiver recognises it (``Idempotency-Key`` and
the envelope's ``batch_id``); the next batch is made only once this one is acknowledged.

**Answers.** 200/201 with ``{"batch_id": <ours>, "accepted": n}`` acknowledges (with ``"duplicate": true``: the
receiver had it already); 409 ("already have it") acknowledges too; 408, 429 and 5xx are retried with exponential
backoff (``Retry-After`` honoured); any other 4xx, a redirect, or a certificate the client does not trust is a
permanent error, named, and stops the run (the batch stays pending and is sent first next time). The schema of
what is sent: ``export_schema``.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import random
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

from qrgate import __version__

from ..errors import ProvinceError
from .export_schema import RECORD_COLUMNS, encode, envelope, record
from .export_settings import ExportSettings

if TYPE_CHECKING:
    import psycopg

    from .db import Database

    _Connection = psycopg.Connection[tuple[object, ...]]

SCHEMA = """
DO $$
BEGIN
    -- the export's order (see export.py): the storing transaction's id; rows older than the column get 0
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'checkins' AND column_name = 'ingest_xid') THEN
        ALTER TABLE checkins ADD COLUMN ingest_xid xid8 NOT NULL DEFAULT '0';
        ALTER TABLE checkins ALTER COLUMN ingest_xid SET DEFAULT pg_current_xact_id();
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS checkins_export_order ON checkins (ingest_xid, event_id);
CREATE TABLE IF NOT EXISTS export_batches (
    batch_id       uuid PRIMARY KEY,
    seq            bigint NOT NULL UNIQUE,
    first_xid      xid8 NOT NULL,
    first_event_id text NOT NULL,
    last_xid       xid8 NOT NULL,
    last_event_id  text NOT NULL,
    count          integer NOT NULL,
    oldest_time    timestamptz NOT NULL,
    newest_time    timestamptz NOT NULL,
    state          text NOT NULL CHECK (state IN ('pending', 'acked', 'expired')),
    body           bytea,
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    accepted       integer,
    duplicate      boolean,
    created_at     timestamptz NOT NULL,
    acked_at       timestamptz
);
"""

_LOCK = 0x71726765  # "qrge": pg_advisory_xact_lock key of making a batch
_RETRIED_STATUSES = {408, 429}
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch as stored: its id, place in the sequence, size and the exact bytes to send."""

    batch_id: str
    seq: int
    count: int
    body: bytes


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What one run did. ``error`` is the temporary failure it gave up on after its retries (None: none)."""

    batches: int  # batches acknowledged in this run
    records: int  # check-ins in them
    duplicates: int  # of those batches, how many the receiver already had (a 409, or a 200 saying duplicate)
    retries: int
    caught_up: bool
    error: str | None = None


class _Retry(Exception):
    def __init__(self, message: str, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.wait_s = wait_s


def export_run(database: Database, settings: ExportSettings, *, max_batches: int | None = None,
               sleep: Callable[[float], None] = time.sleep) -> ExportReport:
    """Send batches until caught up (no check-in left behind the horizon), ``max_batches`` are acknowledged, or a
    batch fails ``max_retries`` times more. Raises ProvinceError on a permanent error."""
    import psycopg

    endpoint = Endpoint(settings)
    try:
        return _run(database, settings, endpoint, max_batches, sleep)
    except psycopg.Error as exc:
        raise ProvinceError(f"export: PostgreSQL: {exc}") from exc


def _run(database: Database, settings: ExportSettings, endpoint: Endpoint, max_batches: int | None,
         sleep: Callable[[float], None]) -> ExportReport:
    batches = records = duplicates = retries = 0
    while max_batches is None or batches < max_batches:
        with database.connection() as connection:
            batch = next_batch(connection, settings)
        if batch is None:
            return ExportReport(batches, records, duplicates, retries, caught_up=True)
        for attempt in range(settings.max_retries + 1):
            try:
                duplicate, accepted = endpoint.send(batch)
            except _Retry as failure:
                _failed(database, batch, str(failure))
                log.warning("export: batch %d not delivered (try %d): %s", batch.seq, attempt + 1, failure)
                if attempt == settings.max_retries:
                    return ExportReport(batches, records, duplicates, retries, caught_up=False,
                                        error=f"batch {batch.seq} ({batch.batch_id}): {failure}")
                retries += 1
                sleep(_backoff(settings, attempt, failure.wait_s))
            except ProvinceError as failure:
                _failed(database, batch, str(failure))
                raise
            else:
                _acked(database, batch, accepted, duplicate)
                batches, records, duplicates = batches + 1, records + batch.count, duplicates + duplicate
                log.info("export: batch %d (%d check-ins) acknowledged%s", batch.seq, batch.count,
                         " (the receiver had it already)" if duplicate else "")
                break
    return ExportReport(batches, records, duplicates, retries, caught_up=False)


def next_batch(connection: _Connection, settings: ExportSettings) -> Batch | None:
    """The batch to send now: the pending one, else a new one after the last (None when there is nothing new)."""
    connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
    latest = connection.execute(
        "SELECT batch_id::text, seq, count, body, state, last_xid::text, last_event_id, "
        "last_xid >= pg_snapshot_xmax(pg_current_snapshot()) FROM export_batches ORDER BY seq DESC LIMIT 1").fetchone()
    if latest is not None and latest[4] == "pending":
        return Batch(str(latest[0]), int(cast(int, latest[1])), int(cast(int, latest[2])),
                     bytes(cast(bytes, latest[3])))
    if latest is not None and latest[7]:
        # Only a database restored from a dump into a new cluster (pg_dump, not pg_upgrade) has transaction ids
        # below ones it already stored: new check-ins would sort before the exported ones and never be sent.
        epoch = (int(str(latest[5])) >> 32) + 1
        raise ProvinceError("export: this database's transaction ids are behind the last exported check-in's (was "
                            "it restored from a dump into a new cluster?), so new check-ins would never be exported; "
                            f"stop the server and advance its transaction id epoch (pg_resetwal --epoch={epoch}), "
                            "then export again")
    after = "AND (ingest_xid, event_id) > (%(xid)s::text::xid8, %(event)s)" if latest is not None else ""
    rows = connection.execute(
        f"SELECT ingest_xid::text, {RECORD_COLUMNS} FROM checkins "
        f"WHERE ingest_xid < pg_snapshot_xmin(pg_current_snapshot()) {after} "
        "ORDER BY ingest_xid, event_id LIMIT %(limit)s",
        {"xid": latest[5] if latest else None, "event": latest[6] if latest else None, "limit": settings.batch_size},
    ).fetchall()
    if not rows:
        return None
    batch_id, seq = str(uuid.uuid4()), (int(cast(int, latest[1])) + 1 if latest else 1)
    now = dt.datetime.now(dt.UTC)
    times = [cast(dt.datetime, row[6]) for row in rows]
    body = encode(envelope(batch_id, seq, settings.source, now, [record(row[1:]) for row in rows]))
    connection.execute(
        "INSERT INTO export_batches (batch_id, seq, first_xid, first_event_id, last_xid, last_event_id, count, "
        "oldest_time, newest_time, state, body, created_at) VALUES (%s, %s, %s::text::xid8, %s, %s::text::xid8, %s, "
        "%s, %s, %s, 'pending', %s, %s)",
        (batch_id, seq, rows[0][0], rows[0][1], rows[-1][0], rows[-1][1], len(rows), min(times), max(times), body,
         now))
    return Batch(batch_id, seq, len(rows), body)


def exported_position(connection: _Connection) -> tuple[str, str] | None:
    """``(ingest_xid, event_id)`` of the last check-in the national system acknowledged; None: none yet. A check-in
    after it in the export order has not been exported."""
    if connection.execute("SELECT to_regclass('export_batches')").fetchone() == (None,):
        return None
    row = connection.execute("SELECT last_xid::text, last_event_id FROM export_batches WHERE state = 'acked' "
                             "ORDER BY seq DESC LIMIT 1").fetchone()
    return (str(row[0]), str(row[1])) if row else None


def expire_batches(connection: _Connection, cutoff: dt.datetime) -> int:
    """Drop the kept bytes of pending batches whose check-ins are all older than ``cutoff`` (retention: the law says
    how long the data may be kept, and that includes a copy waiting for an endpoint that is down)."""
    if connection.execute("SELECT to_regclass('export_batches')").fetchone() == (None,):
        return 0
    return connection.execute("UPDATE export_batches SET state = 'expired', body = NULL, last_error = "
                              "'expired by retention before it was acknowledged' "
                              "WHERE state = 'pending' AND newest_time < %s", (cutoff,)).rowcount


class Endpoint:
    """The national system's intake: one HTTPS POST per try, over a verified TLS connection (mutual TLS and a
    bearer token where configured)."""

    def __init__(self, settings: ExportSettings) -> None:
        if settings.endpoint is None:
            raise ProvinceError("the export has no endpoint: set export.endpoint (an https:// URL) in the config")
        parts = urlsplit(settings.endpoint)
        self.host, self.port = cast(str, parts.hostname), parts.port or 443
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout_s = settings.timeout_s
        try:
            self.context = ssl.create_default_context(cafile=settings.ca_file)
            if settings.cert_file is not None:
                self.context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ProvinceError(f"export: cannot load the TLS files (ca_file, cert_file, key_file): {exc}") from exc
        self.token = _read_token(settings.token_file) if settings.token_file is not None else None

    def send(self, batch: Batch) -> tuple[bool, int]:
        """POST one batch: (whether the receiver already had it, how many records it accepted)."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": batch.batch_id,
                   "User-Agent": f"qrgate-province/{__version__}"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=self.context)
        try:
            connection.request("POST", self.path, body=batch.body, headers=headers)
            response = connection.getresponse()
            answer = response.read(64 * 1024)
            return self._answer(batch, response.status, response.reason, answer, response.getheader("Retry-After"))
        except ssl.SSLCertVerificationError as exc:
            raise ProvinceError(f"export: the endpoint {self.host}:{self.port} presented a TLS certificate this "
                                f"service does not trust ({exc.verify_message}); set export.ca_file to the CA that "
                                "signed it, or check the endpoint") from exc
        except TimeoutError as exc:
            raise _Retry(f"no answer within {self.timeout_s:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(f"connection to {self.host}:{self.port} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            connection.close()

    def _answer(self, batch: Batch, status: int, reason: str, answer: bytes,
                retry_after: str | None) -> tuple[bool, int]:
        if status == 409:
            return True, batch.count
        if status in (200, 201):
            try:
                acknowledgement = json.loads(answer)
                acked_id, accepted = acknowledgement["batch_id"], int(acknowledgement.get("accepted", batch.count))
                duplicate = acknowledgement.get("duplicate", False) is True
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise ProvinceError(f"export: the endpoint answered HTTP {status} without an acknowledgement "
                                    f"(JSON with batch_id): {_excerpt(answer)}") from exc
            if acked_id != batch.batch_id:
                raise ProvinceError(f"export: the endpoint acknowledged batch {acked_id!r}, not {batch.batch_id}")
            return duplicate, accepted
        if status >= 500 or status in _RETRIED_STATUSES:
            raise _Retry(f"HTTP {status} {reason}: {_excerpt(answer)}", _seconds(retry_after))
        raise ProvinceError(f"export: the endpoint refused batch {batch.seq} ({batch.batch_id}) with HTTP {status} "
                            f"{reason}: {_excerpt(answer)}")


def _acked(database: Database, batch: Batch, accepted: int, duplicate: bool) -> None:
    with database.connection() as connection:
        connection.execute("UPDATE export_batches SET state = 'acked', body = NULL, attempts = attempts + 1, "
                           "accepted = %s, duplicate = %s, acked_at = now() WHERE batch_id = %s",
                           (accepted, duplicate, batch.batch_id))
    if accepted != batch.count:
        log.warning("export: batch %d: the endpoint accepted %d of its %d check-ins", batch.seq, accepted,
                    batch.count)


def _failed(database: Database, batch: Batch, error: str) -> None:
    with database.connection() as connection:
        connection.execute("UPDATE export_batches SET attempts = attempts + 1, last_error = %s WHERE batch_id = %s",
                           (error[:2000], batch.batch_id))


def _backoff(settings: ExportSettings, attempt: int, asked_s: float | None) -> float:
    # Exponential, with jitter so that provinces failing together do not retry in step; at least what the
    # receiver asked for (Retry-After), never more than the cap.
    wait = min(settings.backoff_max_s, settings.backoff_s * 2.0 ** attempt) * random.uniform(0.5, 1.0)
    return min(settings.backoff_max_s, max(wait, asked_s or 0.0))


def _seconds(retry_after: str | None) -> float | None:
    try:
        return float(retry_after) if retry_after is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


def _excerpt(answer: bytes) -> str:
    text = answer.decode("utf-8", "replace").strip().replace("\n", " ")
    return (text[:200] + "...") if len(text) > 200 else (text or "(no body)")


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvinceError(f"export: cannot read the bearer token file {path}: {exc}") from exc
    if not token:
        raise ProvinceError(f"export: the bearer token file {path} is empty")
    return token
