"""A private Mosquitto broker on loopback, for the demo and the tests.

It renders its own ``mosquitto.conf`` into a work directory and runs ``/usr/sbin/mosquitto`` on it,
so it never touches the system broker's configuration, port or persistence. The listener binds
127.0.0.1 only: this broker is for one machine's own processes, never for a site network.
``MosquittoBroker.from_config_file`` instead runs a configuration rendered elsewhere as it is (the
tests start the site and provincial broker configurations that way, with loopback parameters).
"""

from __future__ import annotations

import getpass
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qrgate.errors import QrgateError


class BrokerError(QrgateError):
    """A local Mosquitto broker started by qrgate (demo, tests) failed to start."""


_INSTALL_HINT = "install mosquitto (apt-get install mosquitto)"
_READY_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
# An automatically chosen port can be taken by another process between our probe and
# mosquitto's bind; a fresh port is tried this many times before giving up.
_PORT_ATTEMPTS = 3
_RUNNING_LINE = re.compile(rb"mosquitto version \S+ running")


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """The TLS listener's files. ``require_certificate`` makes clients present a certificate
    signed by ``ca_file`` (mutual TLS), as a site broker for gates does; its CN is then the
    client's username."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


def find_mosquitto() -> str:
    """Path of the mosquitto executable; Debian installs it in /usr/sbin, often off a user's PATH."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerError(f"mosquitto not found on PATH or in /usr/sbin: {_INSTALL_HINT}")
    return found


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_loopback_port() -> int:
    """A loopback port that is free now and lies below the kernel's ephemeral range.

    Why not ``bind(0)``: that hands out a port from the ephemeral range, and a client that keeps
    reconnecting to a stopped broker on such a port can be given that very port as its own source
    port; TCP then connects the socket to itself (simultaneous open), the client reads back its
    own CONNECT, and the port stays taken so the broker cannot come back on it. Seen in CI as
    "Unrecognised command 16" followed by "Address already in use" on restart. The kernel never
    picks a source port outside the ephemeral range, so a port below it cannot self-connect.
    """
    low, _high = _ephemeral_range()
    floor = 10000 if low > 12000 else 1024
    ceiling = low - 1 if low - 1 > floor else 65535
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(floor, ceiling)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MosquittoBroker:
    """One mosquitto process listening on ``127.0.0.1:port``.

    ``start()`` returns once mosquitto reports running and its port answers; ``stop()`` shuts down cleanly
    (SIGTERM), ``kill()`` does not (SIGKILL, for fault tests), ``restart()`` comes back on the same
    port. Anonymous clients are allowed unless a password file or TLS client certificates are
    required. ``extra_config`` is appended verbatim to the rendered configuration.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        acl_file: Path | None = None,
        password_file: Path | None = None,
        tls: BrokerTls | None = None,
        persistence: bool = False,
        extra_config: str = "",
    ) -> None:
        self.workdir = Path(workdir)
        self.host = "127.0.0.1"
        self._auto_port = port is None
        self.port = port or 0
        self.acl_file = acl_file
        self.password_file = password_file
        self.tls = tls
        self.persistence = persistence
        self.extra_config = extra_config
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self._output_path = self.workdir / "mosquitto.out"  # stderr: errors before the log file opens
        self._renders_config = True
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_config_file(cls, config_path: Path, *, port: int, log_path: Path,
                         host: str = "127.0.0.1") -> MosquittoBroker:
        """A broker that runs ``config_path`` exactly as it is (a site or provincial broker
        configuration rendered by ``qrgate_provisioning.brokerconf``), never rewriting it.

        ``host``/``port`` must be a listener of that configuration and ``log_path`` its
        ``log_dest file``: readiness is read from them. The other options of the constructor
        do not apply; the configuration says everything.
        """
        config_path = Path(config_path).resolve()
        broker = cls(config_path.parent, port=port)
        broker.host = host
        broker.config_path = config_path
        broker.log_path = Path(log_path)
        broker._output_path = config_path.with_suffix(".out")
        broker._renders_config = False
        return broker

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def render_config(self) -> str:
        lines = [
            "# Rendered by qrgate_tools.broker for a private loopback broker; edits are overwritten.",
            f"listener {self.port} {self.host}",
            "allow_anonymous "
            f"{'false' if self.password_file or (self.tls and self.tls.require_certificate) else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to the 'mosquitto' user, which cannot read a private
            # work directory (pytest's tmp_path is 0700): stay the user that owns the files.
            lines.append(f"user {getpass.getuser()}")
        if self.acl_file is not None:
            lines.append(f"acl_file {Path(self.acl_file).resolve()}")
        if self.password_file is not None:
            lines.append(f"password_file {Path(self.password_file).resolve()}")
        if self.tls is not None:
            lines += [
                f"cafile {Path(self.tls.ca_file).resolve()}",
                f"certfile {Path(self.tls.cert_file).resolve()}",
                f"keyfile {Path(self.tls.key_file).resolve()}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
            if self.tls.require_certificate:
                # The certificate is the credential: its CN becomes the username ACLs see (%u).
                lines.append("use_identity_as_username true")
        if self.extra_config:
            lines.append(self.extra_config.rstrip("\n"))
        return "\n".join(lines) + "\n"

    def start(self) -> MosquittoBroker:
        """Start mosquitto and wait until it accepts connections; BrokerError (with its log) if not."""
        if not self.running:
            self._start(may_change_port=self._auto_port)
        return self

    def _start(self, *, may_change_port: bool) -> None:
        executable = find_mosquitto()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(_PORT_ATTEMPTS if may_change_port else 1):
            if not self.port:
                self.port = free_loopback_port()
            try:
                self._launch(executable)
                return
            except BrokerError as error:
                if not may_change_port or "Address already in use" not in str(error):
                    raise
                last_error = error
                self.port = 0
        raise last_error

    def _launch(self, executable: str) -> None:
        if self._renders_config:
            self.config_path.write_text(self.render_config())
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self._output_path, "wb") as output:
            self._process = subprocess.Popen(
                [executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the demo's terminal UI must not kill the broker first
            )
        # Ready = mosquitto logged that it runs (its listeners are open) and the port answers. The
        # port alone is not proof: another process may hold it while mosquitto is failing to bind.
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise BrokerError(f"mosquitto exited with status {code} on start:\n{self.log_tail()}")
            if self._logged_running(log_start) and self._port_answers():
                return
            time.sleep(0.05)
        self.kill()
        raise BrokerError(
            f"mosquitto did not accept connections on {self.host}:{self.port} within {_READY_TIMEOUT_S:.0f} "
            f"s:\n{self.log_tail()}"
        )

    def _logged_running(self, offset: int) -> bool:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return _RUNNING_LINE.search(log.read()) is not None
        except FileNotFoundError:
            return False

    def _port_answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM and wait: mosquitto saves persistence and closes sessions cleanly."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)  # a paused broker would not act on SIGTERM
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as in a power cut, without saving anything."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def pause(self) -> None:
        """SIGSTOP: a hung broker. Connections stay open and data queues in the kernel, unanswered."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``: the broker reads what queued up meanwhile."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads the options its manual marks as reloadable (the ACL file among
        them) and keeps its clients and bridges connected."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port and configuration."""
        self.stop()
        self._start(may_change_port=False)

    def log_tail(self, lines: int = 20) -> str:
        parts = []
        for path in (self._output_path, self.log_path):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                parts.append("\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(mosquitto wrote no log)"

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
