"""systemd service notifications (sd_notify): READY, STATUS, WATCHDOG, STOPPING.

systemd-python's ``systemd.daemon.notify`` is used when it is importable. It is an optional extra
because it builds against libsystemd-dev, which a plain ``pip install`` on a Pi often lacks, so
without it this module speaks the protocol itself: one datagram of newline-separated ``KEY=VALUE``
assignments to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (an address starting with ``@`` is in
the Linux abstract namespace). Outside systemd the variable is unset and every call does nothing.

Notifications are a courtesy to the service manager and must never take the gate down: a failure
is logged once and otherwise ignored.
"""

from __future__ import annotations

import logging
import os
import socket
from types import ModuleType

_systemd_daemon: ModuleType | None
try:
    from systemd import daemon

    _systemd_daemon = daemon
except ImportError:
    _systemd_daemon = None

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Tells systemd about the daemon's state; a no-op when not started by systemd (Type=notify)."""

    def __init__(self) -> None:
        self._warned = False
        self._address: str | None = None
        self._socket: socket.socket | None = None
        raw = os.environ.get("NOTIFY_SOCKET")
        if not raw:
            return
        if raw[0] not in "/@":
            # systemd 254+ also accepts vsock: addresses, which only matter inside VMs.
            self._warn_once(f"NOTIFY_SOCKET={raw!r} is not an AF_UNIX address; notifications disabled")
            return
        self._address = "\0" + raw[1:] if raw[0] == "@" else raw
        if _systemd_daemon is None:
            try:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            except OSError as exc:
                self._warn_once(f"cannot create the sd_notify socket: {exc}; notifications disabled")
                self._address = None

    @property
    def enabled(self) -> bool:
        """Whether notifications go anywhere (the daemon runs under systemd with NOTIFY_SOCKET)."""
        return self._address is not None

    def ready(self) -> None:
        """Start-up is complete (for ``Type=notify`` units: systemd starts dependants now)."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """One line shown by ``systemctl status``; newlines would end the assignment, so they become spaces."""
        self._send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        """Keep-alive for ``WatchdogSec=``: send at least every ``watchdog_interval_s() / 2`` seconds."""
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1")

    @staticmethod
    def watchdog_interval_s() -> float | None:
        """The watchdog timeout systemd expects us to honour, in seconds; None when there is none.

        As sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` must be a positive integer, and when
        ``$WATCHDOG_PID`` is set it must be this process (otherwise the watchdog is someone else's).
        """
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = os.environ.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 1_000_000 if value > 0 else None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._address = None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            if self._socket is not None:
                self._socket.sendto(message.encode("utf-8", "replace"), self._address)
            elif _systemd_daemon is not None:
                _systemd_daemon.notify(message)
        except OSError as exc:
            self._warn_once(f"sd_notify {message.split('=', 1)[0]} failed: {exc} (further failures are not logged)")

    def _warn_once(self, text: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(text)
