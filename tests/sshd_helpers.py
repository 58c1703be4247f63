"""A real OpenSSH server on a free loopback port, for the provisioning tests (tests/test_provision_*.py).

Everything it needs lives in one temp directory: its host key, the technician's test key, the authorised keys
file (``AuthorizedKeysFile`` points there, with ``StrictModes no`` since the directory is pytest's), a
``known_hosts`` line for the laptop side, the pid file and the log. ``UsePAM no``: no PAM stack is configured
for this sshd, and public keys are the only authentication offered. It runs as root (privilege separation and
logging in as another user need it) and lets root log in with a key (``prohibit-password``): the provisioner
needs root on the target, and this machine has no sudo for an unprivileged user (see test_provision_gate.py).

sshd insists on its privilege-separation directory, /run/sshd (compiled in); when it is missing it is created
(the Debian package's unit creates it at every start too). Nothing else outside the temp directory is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qrgate_tools.broker import free_loopback_port

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PRIVSEP_DIR = Path("/run/sshd")
_READY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: Path

    def public_line(self) -> str:
        return self.public.read_text().strip()


def make_key(path: Path) -> SshKey:
    """A fresh ed25519 key pair (no passphrase) at ``path`` and ``path.pub``."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return SshKey(path, path.with_name(path.name + ".pub"))


def fingerprint(public_key: Path) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it (and as a technician reads it off the device)."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


class Sshd:
    """``sshd -D -e`` on 127.0.0.1:port with a config of its own; ``client_key`` may log in as any user."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_loopback_port()
        self.host_key = make_key(workdir / "ssh_host_ed25519_key")
        self.client_key = make_key(workdir / "technician_ed25519")
        self.authorized_keys = workdir / "authorized_keys"
        self.authorized_keys.write_text(self.client_key.public_line() + "\n")
        self.authorized_keys.chmod(0o644)  # read as the user logging in
        self.known_hosts = workdir / "known_hosts"
        key_type, key_data = self.host_key.public_line().split()[:2]
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {key_type} {key_data}\n")
        self.host_key_fingerprint = fingerprint(self.host_key.public)
        self.log = workdir / "sshd.log"
        self.pid_file = workdir / "sshd.pid"
        self.config = workdir / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {self.host_key.private}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "MaxSessions 30",
            "MaxStartups 30:30:60",
            f"Subsystem sftp {SFTP_SERVER}",
            "LogLevel INFO",
            "",
        ]))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Sshd:
        if not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=log,
                                             stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.host}:{self.port}: {self.log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener): killing them cuts the link."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def cut_connections(self) -> int:
        """SIGKILL every connection's sshd process, as a dropped link would end them; returns how many."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        if self._process is None:
            return
        self.cut_connections()
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._process = None

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
