"""What the export's and the retention's tests share: a stand-in for the national system's intake (an HTTPS
server, http.server over TLS with mutual TLS by the test's PKI, in a thread, that stores each new batch, answers
409 to a batch it has, validates every batch against docs/national-export.schema.json, and fails as the test's
script says), the exporter's settings for it, check-ins stored as the consumer stores them, and the database with
the rooms of tracing, export and retention."""

from __future__ import annotations

import collections
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema

from mqtt_helpers import Pki
from qrgate import wire
from qrgate_provisioning.consumer.postgres_store import PostgresStore
from qrgate_provisioning.province import export, retention, trace
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.export_settings import ExportSettings
from qrgate_provisioning.province.settings import DatabaseSettings

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "national-export.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
TOKEN = "national-intake-token"


class Receiver:
    """The national system's intake, for the test: stores each new batch (by batch id), answers 409 to one it has,
    and fails as its script says, one action per request: ok, 500, drop_before (closes without storing or
    answering), drop_after (stores, then closes), late (stores, answers after the client gave up), hold (stores,
    then waits for the test), 401."""

    def __init__(self, pki: Pki, script: list[str] | None = None) -> None:
        self.script = list(script or [])
        self.lock = threading.Lock()
        self.batches: dict[str, bytes] = {}
        self.seqs: list[int] = []
        self.new_events: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.requests = 0
        self.held, self.release = threading.Event(), threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None  # type: ignore[method-assign]  # late answers to a gone client
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        context.load_verify_locations(pki.ca_cert)
        context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: only the province's service may post
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/intake/v1/batches"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers["Content-Length"]))
        with self.lock:
            self.requests += 1
            action = self.script.pop(0) if self.script else "ok"
        if action == "401" or request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.answer(request, 401, {"error": "unknown token"})
        if action == "500":
            return self.answer(request, 500, {"error": "database unavailable"})
        if action == "drop_before":
            request.close_connection = True
            return None
        document = json.loads(body)
        errors = [error.message for error in VALIDATOR.iter_errors(document)]
        if errors or request.headers.get("Idempotency-Key") != document["batch_id"] or \
                document["count"] != len(document["records"]):
            self.problems.append(f"invalid batch: {errors}")
            return self.answer(request, 400, {"error": errors})
        with self.lock:
            known = self.batches.get(document["batch_id"])
            if known is not None and known != body:
                self.problems.append(f"batch {document['batch_id']} sent again with other bytes")
            if known is None:
                self.batches[document["batch_id"]] = body
                self.seqs.append(document["seq"])
                self.new_events.update(record["event_id"] for record in document["records"])
        if action == "drop_after":
            request.close_connection = True
            return None
        if action == "late":
            time.sleep(1.5)  # the client waits 0.5 s
        if action == "hold":
            self.held.set()
            self.release.wait(30)
        if known is not None:
            return self.answer(request, 409, {"error": "already have it"})
        return self.answer(request, 200, {"batch_id": document["batch_id"], "accepted": document["count"]})

    @staticmethod
    def answer(request: BaseHTTPRequestHandler, status: int, document: object) -> None:
        data = json.dumps(document).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()



def settings_for(receiver: Receiver, pki: Pki, tmp_path: Path, **overrides: object) -> ExportSettings:
    """The exporter's settings for ``receiver``: mutual TLS, the bearer token, small batches, quick retries."""
    token_file = tmp_path / "token"
    if not token_file.exists():
        token_file.write_text(TOKEN + "\n")
    fields: dict[str, object] = dict(endpoint=receiver.url, source="VN-TEST", ca_file=pki.ca_cert,
                                     cert_file=pki.client_cert, key_file=pki.client_key, token_file=token_file,
                                     batch_size=7, timeout_s=0.5, max_retries=6, backoff_s=0.01, backoff_max_s=0.05)
    fields.update(overrides)
    return ExportSettings.model_validate(fields)


@contextmanager
def migrated_database(dsn: str) -> Iterator[Database]:
    """The province's database with every room's tables, and those of trace, export and retention (which
    db.SCHEMA_ROOMS may not list yet)."""
    with Database(DatabaseSettings(dsn=dsn), max_connections=3) as database:
        database.migrate()
        with database.connection() as connection:
            for room in (trace, export, retention):
                connection.execute(room.SCHEMA)
        yield database


def checkins(count: int, *, start: int = 0, time_offset_s: float = 0.0,
             times: list[float] | None = None) -> list[tuple[wire.CheckinEvent, bytes]]:
    """``count`` check-ins (a minute apart, the newest ``time_offset_s`` from now; or at ``times``, epoch seconds),
    every fifth rejected, at four places."""
    now = time.time() + time_offset_s
    events = []
    for index, n in enumerate(range(start, start + count)):
        moment = times[index] if times is not None else now - n * 60
        event = wire.CheckinEvent(
            event_id=wire.new_event_id(now), seq=n + 1, device_id=f"gate-{n % 3}", site_id=f"place-{n % 4}",
            gate="main", direction="in" if n % 2 else "out", time=wire.iso_utc(moment), clock_synced=True,
            verdict="rejected" if n % 5 == 0 else "accepted", reason="expired" if n % 5 == 0 else "accepted",
            format="qrgate", pass_id=f"pass-{n}", subject_id=None if n % 5 == 0 else f"subject-{n % 9}")
        events.append((event, event.to_json()))
    return events


def store(dsn: str, events: list[tuple[wire.CheckinEvent, bytes]]) -> set[str]:
    """Store the check-ins as the consumer does (one transaction); their event ids."""
    writer = PostgresStore(dsn)
    try:
        assert writer.store(events, time.time()) == len(events)
    finally:
        writer.close()
    return {event.event_id for event, _raw in events}
