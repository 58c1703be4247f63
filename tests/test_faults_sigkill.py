"""Fault: the daemon is killed with SIGKILL at random points, again and again, and restarted each
time. Every check-in that got a green (or red) light must arrive at the far end.

The gate shows its light only after the outbox append committed (gate.py), so every event that ever
was in the outbox is one a visitor may have been shown; the test reads the outbox's SQLite file
between kills, with the daemon dead, and collects every event ever committed. A final clean run
drains what is left, and a far-end subscriber (persistent session, QoS 1, subscribed before the
first run) counts: sent, received, unique, duplicates, missing. The real daemon (``python -m
qrgate.cli run``) on a looping synthetic scene with mock pins; a real Mosquitto on loopback.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_helpers import write_daemon_config, write_trust_anchors
from mqtt_helpers import Subscriber, wait_until
from qrgate import wire
from qrgate_provisioning.consumer import Consumer, SqliteStore
from qrgate_provisioning.mint import mint_qrgate_pass
from qrgate_tools.broker import MosquittoBroker

DEVICE_ID = "gate-kill-01"
KILLS = 20
SEED = 20260401
CHECKINS = wire.checkin_topic(DEVICE_ID)


def write_visitors(tmp_path: Path) -> tuple[Path, Path]:
    """Trust anchors and a script of 24 distinct codes: valid passes (green) and web links (red)."""
    trust = tmp_path / "trust"
    key = write_trust_anchors(trust)
    now = int(time.time())
    visits = []
    for n in range(24):
        payload = (mint_qrgate_pass(key, "VN-HN", n.to_bytes(8, "big"), f"s{n}", now - 60, now + 3600) if n % 2 == 0
                   else f"https://example.com/visitor/{n}")
        visits.append({"payload": payload, "dwell_s": 0.3, "gap_s": 0.15, "medium": "paper" if n % 4 < 2 else "phone"})
    script = tmp_path / "visitors.json"
    script.write_text(json.dumps(visits))
    return trust, script


def write_config(tmp_path: Path, name: str, port: int, trust: Path, script: Path | None, mqtt_extra: str) -> Path:
    camera_path = f'path = "{script}"\nloop = true' if script else ""  # no script: the held test card
    return write_daemon_config(
        tmp_path / name, device_id=DEVICE_ID, site_id="market-1", camera=camera_path, trust=trust,
        outbox=tmp_path / "outbox.sqlite", port=port, mqtt_extra=mqtt_extra, service="stop_flush_s = 10",
    )


class Daemon:
    """``qrgate run`` as systemd would run it, READY=1 read from a real notify socket."""

    def __init__(self, config: Path, notify_path: Path) -> None:
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if notify_path.exists():
            notify_path.unlink()
        self.notify.bind(str(notify_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
        self.process = subprocess.Popen([sys.executable, "-m", "qrgate.cli", "run", "--config", str(config)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.notify.settimeout(timeout)
        while True:
            message = self.notify.recv(4096).decode()
            if "READY=1" in message.split("\n"):
                return

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.notify.close()

    def terminate(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=30)
        self.notify.close()
        return self.process.returncode, err


def read_outbox(path: Path) -> dict[int, tuple[str, bytes, bool]]:
    """seq -> (event id, payload, delivered) of every row, read with the daemon dead."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, event_id, payload, delivered IS NOT NULL FROM events").fetchall()
    return {seq: (event_id, bytes(payload), bool(delivered)) for seq, event_id, payload, delivered in rows}


def pending_now(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM events WHERE delivered IS NULL").fetchone()[0]


MODES = {
    "puback": "",
    "end_to_end_ack": "end_to_end_ack = true\nack_timeout_s = 2.0",
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_every_checkin_shown_survives_twenty_sigkills(tmp_path: Path, mode: str) -> None:
    rng = random.Random(SEED)
    trust, script = write_visitors(tmp_path)
    with MosquittoBroker(tmp_path / "broker") as broker:
        scanning = write_config(tmp_path, "scanning.toml", broker.port, trust, script, MODES[mode])
        draining = write_config(tmp_path, "draining.toml", broker.port, trust, None, MODES[mode])
        far_end = Subscriber(broker.host, broker.port, [CHECKINS], client_id="far-end", persistent=True).start()
        province = None
        if mode == "end_to_end_ack":
            province = SqliteStore(tmp_path / "province.sqlite")
            consumer = Consumer(province, host=broker.host, port=broker.port, client_id="province-1").start()
            assert consumer.wait_subscribed(5)
        committed: dict[int, tuple[str, bytes]] = {}
        outbox = tmp_path / "outbox.sqlite"
        try:
            for _ in range(KILLS):
                daemon = Daemon(scanning, tmp_path / "notify.sock")
                try:
                    daemon.wait_ready()
                    time.sleep(rng.uniform(0.2, 1.5))
                finally:
                    daemon.kill()
                for seq, (event_id, payload, _) in read_outbox(outbox).items():
                    assert committed.setdefault(seq, (event_id, payload)) == (event_id, payload), f"seq {seq} changed"

            daemon = Daemon(draining, tmp_path / "notify.sock")
            daemon.wait_ready()
            wait_until(lambda: pending_now(outbox) == 0, 60, "the final run to deliver everything")
            returncode, err = daemon.terminate()
            assert returncode == 0, err
            final = read_outbox(outbox)
            for seq, (event_id, payload, _) in final.items():
                assert committed.setdefault(seq, (event_id, payload)) == (event_id, payload), f"seq {seq} changed"
            assert all(delivered for _, _, delivered in final.values())

            sent = dict(committed.values())
            wait_until(lambda: sent.keys() <= {e.event_id for e in far_end.checkins()}, 15,
                       "every check-in at the far end")
        finally:
            far_end.close()
            if province is not None:
                consumer.stop()
                province.close()

    messages = far_end.on(CHECKINS)
    received = [wire.CheckinEvent.from_json(m.payload) for m in messages]
    unique = {event.event_id for event in received}
    counts = {"mode": mode, "kills": KILLS, "sent": len(sent), "received": len(received), "unique": len(unique),
              "duplicates": len(received) - len(unique), "missing": len(sent.keys() - unique)}
    print(json.dumps(counts))
    assert counts["missing"] == 0
    assert unique == sent.keys()  # nothing arrives that was not committed first
    assert sorted(committed) == list(range(1, len(committed) + 1))  # seq gap-free across 21 processes
    assert len(sent) == len(committed)  # event ids unique
    # a duplicate is the same event
    assert all(m.payload == sent[wire.CheckinEvent.from_json(m.payload).event_id] for m in messages)
    assert len(committed) >= KILLS  # the runs did scan: check-ins were made between the kills
    if province is not None:
        assert consumer.stats.stored == len(sent)
