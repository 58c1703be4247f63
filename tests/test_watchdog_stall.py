"""The watchdog sees a stalled decoder: the real daemon, run as the unit's ExecStart runs it, with systemd's side
played by this test (the notify socket it reads, the watchdog timeout it enforces, the restart it makes).

The stall is real code blocking: a wrapper around ``qrgate.cli`` makes the pipeline's ``read`` wait forever once
a number of frames have been decoded, so both decode workers hang while the camera (the synthetic scene, showing
a static empty gate) keeps delivering frames and the presence gate keeps skipping them. Frames skipped or captured
are not progress: the pings must stop, and the supervisor's watchdog timeout kills and restarts the daemon, which
then pings again.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from daemon_helpers import write_daemon_config, write_trust_anchors

# Wraps the daemon: FramePipeline.read blocks for good after STALL_AFTER decodes (unset: no stall).
STALLING_DAEMON = """
import os, pathlib, sys, threading
from qrgate.decoding import pipeline

stall_after = int(os.environ.get("STALL_AFTER", "0"))
if stall_after:
    marker = pathlib.Path(os.environ["STALL_MARKER"])
    original, lock, never, count = pipeline.FramePipeline.read, threading.Lock(), threading.Event(), [0]

    def read(self, grey):
        with lock:
            count[0] += 1
            stalled = count[0] > stall_after
        if stalled:
            marker.touch()
            never.wait()
        return original(self, grey)

    pipeline.FramePipeline.read = read
from qrgate.cli import main
sys.exit(main(sys.argv[1:]))
"""

WATCHDOG_S = 1.0  # WatchdogSec for this run: pings every 0.5 s while healthy


def _drain(sock: socket.socket) -> list[tuple[float, str]]:
    messages = []
    while True:
        try:
            messages.append((time.monotonic(), sock.recv(4096).decode()))
        except BlockingIOError:
            return messages


def _start(config: Path, notify_path: Path, extra_env: dict[str, str]) -> subprocess.Popen[str]:
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)), **extra_env)
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen([sys.executable, "-c", STALLING_DAEMON, "run", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _supervise(daemon: subprocess.Popen[str], notify: socket.socket, until_s: float) -> tuple[list[tuple[float, str]],
                                                                                               bool]:
    """Play systemd's watchdog for ``until_s``: every message, and whether the daemon went WatchdogSec without a
    ping after its first one (then it is aborted with SIGABRT, as systemd's WatchdogSignal does)."""
    messages: list[tuple[float, str]] = []
    last_ping: float | None = None
    deadline = time.monotonic() + until_s
    while time.monotonic() < deadline:
        assert daemon.poll() is None, daemon.communicate()
        for at, message in _drain(notify):
            messages.append((at, message))
            if message == "WATCHDOG=1":
                last_ping = at
        if last_ping is not None and time.monotonic() - last_ping > WATCHDOG_S:
            daemon.send_signal(signal.SIGABRT)
            daemon.communicate(timeout=30)
            return messages, True
        time.sleep(0.05)
    return messages, False


def test_a_stalled_decoder_stops_the_pings_and_the_watchdog_restarts_the_daemon(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    write_trust_anchors(trust)
    script = tmp_path / "static-scene.json"
    script.write_text(json.dumps([{"payload": "https://example.com/", "gap_s": 3600.0}]))  # an hour of empty gate
    config = write_daemon_config(
        tmp_path / "gate.toml", device_id="gate-watchdog-01", site_id="bus-station-1",
        camera=f'path = "{script}"', trust=trust, outbox=tmp_path / "outbox.sqlite", port=1,
        mqtt_extra="enabled = false", service="status_interval_s = 0.5",
    )
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    marker = tmp_path / "stalled"
    first = _start(config, notify_path, {"STALL_AFTER": "40", "STALL_MARKER": str(marker)})
    try:
        before, aborted = _supervise(first, notify, until_s=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert aborted, "the daemon kept pinging with both decode workers stalled"
    assert marker.exists()  # the stall really happened
    pings = [at for at, message in before if message == "WATCHDOG=1"]
    statuses = [message for _, message in before if message.startswith("STATUS=frames ")]
    assert "READY=1" in [message for _, message in before] and len(pings) >= 1
    # The camera kept delivering and the capture loop kept running (its status went on) while no ping came.
    stalled_at = marker.stat().st_mtime - time.time() + time.monotonic()
    assert all(at <= stalled_at + WATCHDOG_S for at in pings)
    assert len(statuses) >= 2
    assert first.returncode == -signal.SIGABRT

    # Restart=on-failure: the same unit starts again, this time without the stall, and pings steadily.
    second = _start(config, notify_path, {})
    try:
        after, aborted_again = _supervise(second, notify, until_s=4 * WATCHDOG_S + 5)
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
        notify.close()
    assert not aborted_again
    after_pings = [at for at, message in after if message == "WATCHDOG=1"]
    assert "READY=1" in [message for _, message in after]
    assert len(after_pings) >= 4
    assert max(b - a for a, b in itertools.pairwise(after_pings)) <= WATCHDOG_S
