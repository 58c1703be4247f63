"""``qrgate run`` as systemd runs it: a child process, sd_notify over $NOTIFY_SOCKET, SIGTERM to stop.

The notify socket is a real AF_UNIX datagram socket in a temp dir; the daemon runs with its own
config on the synthetic scene (looping) with mock pins, and a real Mosquitto receives its events.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from daemon_helpers import write_daemon_config, write_trust_anchors
from qrgate.outbox import Outbox
from qrgate_provisioning.mint import mint_qrgate_pass
from qrgate_tools.broker import MosquittoBroker
from qrgate_tools.demo import EventSubscriber


def write_config(tmp_path: Path, port: int) -> Path:
    trust = tmp_path / "trust"
    key = write_trust_anchors(trust)
    now = int(time.time())
    passes = [mint_qrgate_pass(key, "VN-HN", bytes([n]) * 8, f"s{n}", now - 60, now + 3600) for n in range(2)]
    script = tmp_path / "visitors.json"
    script.write_text(json.dumps([*passes, {"payload": "https://example.com/", "medium": "paper"}]))
    return write_daemon_config(
        tmp_path / "gate.toml", device_id="gate-daemon-01", site_id="bus-station-1", camera=f'path = "{script}"',
        trust=trust, outbox=tmp_path / "outbox.sqlite", port=port, reconnect_min_s=0.1,
        service="status_interval_s = 0.2",
    )


def receive_all(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_run_notifies_systemd_publishes_and_stops_cleanly_on_sigterm(tmp_path: Path):
    with MosquittoBroker(tmp_path / "broker") as broker:
        config = write_config(tmp_path, broker.port)
        subscriber = EventSubscriber(broker.host, broker.port)
        notify_path = tmp_path / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.setblocking(False)
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="400000")
        env.pop("WATCHDOG_PID", None)
        daemon = subprocess.Popen([sys.executable, "-m", "qrgate.cli", "run", "--config", str(config)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            messages: list[str] = []
            deadline = time.monotonic() + 60
            # The script's 3 visitors check in, then systemd stops the service.
            while time.monotonic() < deadline and subscriber.wait_for(3, timeout_s=0.2) < 3:
                messages += receive_all(notify)
                assert daemon.poll() is None, daemon.communicate()
            messages += receive_all(notify)
            daemon.send_signal(signal.SIGTERM)
            _out, err = daemon.communicate(timeout=30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
        messages += receive_all(notify)
        subscriber.close()
        notify.close()

    assert daemon.returncode == 0, err
    assert "READY=1" in messages
    assert messages.count("READY=1") == 1
    assert any(message.startswith("STATUS=frames ") for message in messages)
    assert "WATCHDOG=1" in messages
    assert messages[-1] == "STOPPING=1"
    # READY only once frames flow: nothing but READY precedes the first status/watchdog.
    assert messages.index("READY=1") < messages.index("WATCHDOG=1")
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        stored = outbox.last_seq
        assert outbox.pending_count() == 0  # flushed before exit
    assert stored >= 3
    assert len(subscriber.events) == stored


def test_run_without_systemd_and_with_a_missing_trust_dir_fails_with_a_clear_message(tmp_path: Path):
    config = write_config(tmp_path, 1)
    config.write_text(config.read_text().replace(str(tmp_path / "trust"), str(tmp_path / "absent")))
    env = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
    result = subprocess.run([sys.executable, "-m", "qrgate.cli", "run", "--config", str(config)],
                            env=env, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot start" in result.stderr and str(tmp_path / "absent") in result.stderr
