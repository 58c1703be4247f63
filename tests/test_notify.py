"""SystemdNotifier against real AF_UNIX datagram sockets, as systemd's notify socket is."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrgate.notify import SystemdNotifier


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_every_notification_is_one_datagram(listener: socket.socket) -> None:
    notifier = SystemdNotifier()
    assert notifier.enabled
    notifier.ready()
    notifier.status("3 events pending, broker up")
    notifier.watchdog()
    notifier.stopping()
    received = [listener.recv(4096) for _ in range(4)]
    assert received == [b"READY=1", b"STATUS=3 events pending, broker up", b"WATCHDOG=1", b"STOPPING=1"]
    notifier.close()
    assert not notifier.enabled


def test_status_is_kept_on_one_line(listener: socket.socket) -> None:
    notifier = SystemdNotifier()
    notifier.status("camera lost\nretrying\r\nin 2 s")
    assert listener.recv(4096) == b"STATUS=camera lost retrying in 2 s"
    notifier.status("Trạm xe buýt")
    assert listener.recv(4096) == "STATUS=Trạm xe buýt".encode()
    notifier.close()


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"qrgate-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = SystemdNotifier()
        notifier.ready()
        assert sock.recv(4096) == b"READY=1"
        notifier.close()


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    notifier.ready()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()
    assert caplog.records == []


def test_failures_never_raise_and_are_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    notifier = SystemdNotifier()
    with caplog.at_level(logging.WARNING, logger="qrgate.notify"):
        notifier.ready()
        notifier.watchdog()
        notifier.status("still here")
    assert len(caplog.records) == 1
    assert "sd_notify READY failed" in caplog.records[0].getMessage()
    notifier.close()


def test_a_non_unix_address_disables_notifications(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with caplog.at_level(logging.WARNING, logger="qrgate.notify"):
        notifier = SystemdNotifier()
        notifier.ready()
    assert not notifier.enabled
    assert len(caplog.records) == 1 and "not an AF_UNIX address" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 30.0),
        ("500000", "self", 0.5),
        ("30000000", "other", None),  # someone else's watchdog
        ("30000000", "not-a-pid", None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    pids = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pids.get(pid or "", pid))):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert SystemdNotifier.watchdog_interval_s() == expected
