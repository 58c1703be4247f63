"""The SSH link to one gate: commands, small files written atomically, large files over SFTP.

Why asyncssh (rather than running the ``ssh`` binary or paramiko): it is asyncio-native, so a batch drives many
gates at once from one thread with a plain concurrency limit; it is actively maintained; it checks host keys
itself against a known_hosts file or a callback (so a fingerprint read off the device can be pinned, and an
unknown or changed key is refused with a message that says which); and it has an SFTP client for the
wheelhouse, with resumable puts to a temporary name.

Every command runs as root on the target: directly when the login user is root, else through ``sudo -n``
(never a password prompt: a missing sudo rule is a clear failure). Commands are logged (at debug level) by
their argument lists, which never hold a secret; what goes over stdin (file contents) is never logged. A
connection that drops mid-step raises ``TargetLost``: writes go to a temporary name in the same directory,
are synced, then renamed over the target, so a cut leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shlex
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.utils import CryptographyDeprecationWarning

from .checklist import HostKeyRefused, ProvisionError, TargetLost

with warnings.catch_warnings():
    # asyncssh still names DSA types at import time, which cryptography >= 43 flags as deprecated.
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
# Host key algorithms tried, in order, when no known_hosts entry names one: the fingerprint a technician reads
# off a Pi is normally its ed25519 key's (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`).
DEFAULT_HOST_KEY_ALGS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")
MAX_CHANNELS = 6  # commands in flight on one connection
_MISSING = 3  # exit status of the read helper for a file that does not exist


@dataclass(frozen=True, slots=True)
class SshOptions:
    """How to reach and trust a target. Exactly one trust source applies: a pinned fingerprint, else the
    known_hosts file (``accept_new`` adds a host that is not in it yet; a changed key is always refused)."""

    user: str
    port: int = 22
    key_files: tuple[str, ...] = ()  # empty: asyncssh's defaults (~/.ssh/id_*, the agent)
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    host_key_fingerprint: str | None = None  # "SHA256:..."
    accept_new_host_key: bool = False
    connect_timeout_s: float = CONNECT_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class Result:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass
class _HostKeyCheck(asyncssh.SSHClient):
    """asyncssh's host key callback: every key is checked here, so a refusal can say why."""

    host: str
    port: int
    options: SshOptions
    refusal: str = ""
    accepted_new: str = ""  # the known_hosts line added under accept_new_host_key
    _known: asyncssh.SSHKnownHosts | None = field(default=None, repr=False)

    def known_keys(self) -> list[asyncssh.SSHKey]:
        path = Path(self.options.known_hosts or "~/.ssh/known_hosts").expanduser()
        if not path.exists():
            return []
        self._known = asyncssh.read_known_hosts(str(path))
        return list(self._known.match(self.host, "", self.port)[0])

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        offered = key.get_fingerprint("sha256")
        kind = key.get_algorithm()
        if self.options.host_key_fingerprint:
            if offered == self.options.host_key_fingerprint:
                return True
            self.refusal = (f"{self.host}'s {kind} host key is {offered}, not the {self.options.host_key_fingerprint} "
                            "given with --host-key-fingerprint: refused (is it the right device?)")
            return False
        known = self.known_keys()
        if any(candidate == key for candidate in known):
            return True
        where = self.options.known_hosts or "~/.ssh/known_hosts"
        if known:
            fingerprints = ", ".join(k.get_fingerprint("sha256") for k in known)
            self.refusal = (f"{self.host}'s host key CHANGED: {where} has {fingerprints}, the server offered {kind} "
                            f"{offered}: refused. A re-imaged SD card has a new key: check it on the device "
                            f"(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then ssh-keygen -R {self.host}")
            return False
        if self.options.accept_new_host_key:
            self.accepted_new = _known_hosts_line(self.host, self.port, key)
            return True
        self.refusal = (f"{self.host} is not in {where}; it offered {kind} {offered}. Check that fingerprint on the "
                        "device (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and give it with "
                        "--host-key-fingerprint, or accept it with --accept-new-host-key")
        return False


def _known_hosts_line(host: str, port: int, key: asyncssh.SSHKey) -> str:
    name = host if port == 22 else f"[{host}]:{port}"
    kind, data = key.export_public_key("openssh").decode().split()[:2]
    return f"{name} {kind} {data}\n"


class Remote:
    """One SSH connection to a gate, running everything as root."""

    def __init__(self, host: str, connection: asyncssh.SSHClientConnection, *, sudo: bool, user: str) -> None:
        self.host = host
        self.user = user
        self._connection = connection
        self._sudo = sudo
        # sshd allows 10 sessions per connection by default (MaxSessions); the plan's steps run at once.
        self._channels = asyncio.Semaphore(MAX_CHANNELS)

    @classmethod
    async def connect(cls, host: str, options: SshOptions) -> Remote:
        checker = _HostKeyCheck(host, options.port, options)
        known = [] if options.host_key_fingerprint else checker.known_keys()
        algs = list(dict.fromkeys(k.get_algorithm() for k in known)) or list(DEFAULT_HOST_KEY_ALGS)
        try:
            connection = await asyncssh.connect(
                host, options.port, username=options.user, known_hosts=([], [], []),
                client_factory=lambda: checker, server_host_key_algs=algs,
                client_keys=list(options.key_files) or (), connect_timeout=options.connect_timeout_s,
                keepalive_interval=10, keepalive_count_max=3,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyRefused(checker.refusal or f"{host}: host key not verifiable: {exc}") from None
        except asyncssh.PermissionDenied:
            raise ProvisionError(f"{options.user}@{host}: the SSH key was refused (is the technician's public key "
                                 "in the user's ~/.ssh/authorized_keys on the device?)") from None
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise ProvisionError(f"cannot reach {host}:{options.port} over SSH: {exc}") from None
        if checker.accepted_new:
            path = Path(options.known_hosts or "~/.ssh/known_hosts").expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as known_hosts:
                known_hosts.write(checker.accepted_new)
            log.warning("%s: new host key accepted and added to %s", host, path)
        remote = cls(host, connection, sudo=False, user=options.user)
        whoami = await remote.run(["id", "-u"], root=False)
        if whoami.stdout.strip() != "0":
            remote._sudo = True
            probe = await remote.run(["true"], check=False)
            if not probe.ok:
                await remote.close()
                why = (probe.stderr.strip().splitlines() or [f"exit status {probe.exit_status}"])[-1]
                raise ProvisionError(f"{options.user}@{host} is not root and `sudo -n true` failed "
                                     f"({why}): provisioning needs root on the "
                                     "gate (log in as root, or give this user passwordless sudo)")
        return remote

    @property
    def sudo(self) -> bool:
        return self._sudo

    @property
    def host_key(self) -> str:
        key = self._connection.get_server_host_key()
        return key.get_fingerprint("sha256") if key is not None else "?"

    async def close(self) -> None:
        self._connection.close()
        with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
            await asyncio.wait_for(self._connection.wait_closed(), 5)

    def command(self, argv: Sequence[str], *, root: bool = True, as_user: str | None = None,
                env: Mapping[str, str] | None = None) -> str:
        """The shell command line for ``argv``: as ``as_user`` (setpriv: no PAM session, no fork; umask 077) or
        root."""
        words = list(argv)
        if env:
            words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
        if as_user:
            # The unit's UMask=0077: what the service user creates (the outbox, the trust state) is its own only.
            words = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--init-groups", "--", "sh", "-c",
                     'umask 077 && exec "$@"', "sh", *words]
        if root and self._sudo:
            words = ["sudo", "-n", "--", *words]
        return shlex.join(words)

    async def run(self, argv: Sequence[str], *, input: bytes | None = None, root: bool = True,
                  as_user: str | None = None, env: Mapping[str, str] | None = None, check: bool = True,
                  timeout: float | None = 600, what: str = "") -> Result:
        """Run ``argv`` on the target; ``check`` turns a non-zero exit into ProvisionError with its stderr."""
        line = self.command(argv, root=root, as_user=as_user, env=env)
        log.debug("%s$ %s", self.host, line)
        try:
            async with self._channels:
                done = await self._connection.run(line, input=input, encoding=None, check=False, timeout=timeout)
        except asyncssh.TimeoutError:
            raise ProvisionError(f"{self.host}: {what or argv[0]}: no answer within {timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise TargetLost(f"the SSH connection to {self.host} dropped during {what or argv[0]}: {exc}") from None
        stdout = _text(done.stdout)
        stderr = _text(done.stderr)
        status = done.exit_status if done.exit_status is not None else 255
        if done.exit_signal is not None and done.exit_status is None:
            raise TargetLost(f"{self.host}: {what or argv[0]} was killed ({done.exit_signal[0]})")
        result = Result(status, stdout, stderr)
        if check and not result.ok:
            raise ProvisionError(f"{self.host}: {what or shlex.join(argv)} failed (exit {status}): "
                                 f"{(stderr or stdout).strip()[-800:]}")
        return result

    async def sh(self, script: str, *args: str, input: bytes | None = None, check: bool = True,
                 what: str = "", timeout: float | None = 600) -> Result:
        """A POSIX shell script as root, with ``args`` as $1...: paths are never spliced into its text."""
        return await self.run(["sh", "-c", script, "sh", *args], input=input, check=check, what=what,
                              timeout=timeout)

    async def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        line = self.command(["sh", "-c", f'[ -e "$1" ] || exit {_MISSING}; cat -- "$1"', "sh", path])
        try:
            async with self._channels:
                done = await self._connection.run(line, encoding=None, check=False, timeout=120)
        except (OSError, asyncssh.Error) as exc:
            raise TargetLost(f"the SSH connection to {self.host} dropped reading {path}: {exc}") from None
        if done.exit_status == _MISSING:
            return None
        if done.exit_status != 0:
            raise ProvisionError(f"{self.host}: cannot read {path}: {_text(done.stderr).strip()}")
        out = done.stdout or b""
        return out if isinstance(out, bytes) else out.encode()

    async def write(self, path: str, data: bytes, *, mode: int, owner: str, group: str, what: str = "") -> None:
        """Replace ``path`` atomically: a temporary file beside it, owner and mode set, synced, renamed."""
        script = ('set -e; umask 077; t="$1.provision-tmp"; cat > "$t"; chown "$2" "$t"; chmod "$3" "$t"; '
                  'sync "$t"; mv -f "$t" "$1"; sync "$(dirname "$1")"')
        await self.sh(script, path, f"{owner}:{group}", f"{mode:o}", input=data, what=what or f"writing {path}")

    async def upload(self, local: Path, directory: str, *, sha256: str) -> None:
        """Copy a (large) local file into ``directory`` over SFTP, as ``NAME.part`` renamed once complete,
        then check its SHA-256 on the target."""
        remote = f"{directory}/{local.name}"
        try:
            async with self._channels, self._connection.start_sftp_client() as sftp:
                await sftp.put(str(local), remote + ".part")
                if await sftp.exists(remote):
                    await sftp.remove(remote)
                await sftp.posix_rename(remote + ".part", remote)
        except (OSError, asyncssh.Error) as exc:
            if isinstance(exc, asyncssh.SFTPError):
                raise ProvisionError(f"{self.host}: SFTP upload of {local.name} to {directory}: {exc}") from None
            raise TargetLost(f"the SSH connection to {self.host} dropped uploading {local.name}: {exc}") from None
        got = await self.run(["sha256sum", "--", remote], what=f"checking {remote}")
        if got.stdout.split()[0] != sha256:
            raise ProvisionError(f"{self.host}: {remote} arrived damaged (SHA-256 differs); re-run to send it again")

    async def file_states(self, paths: Sequence[str]) -> dict[str, FileState | None]:
        """SHA-256, mode, owner and group of each path (None: missing), in one round trip."""
        script = ('for f; do if [ -f "$f" ]; then printf "%s %s\\n" "$(stat -c "%a %U %G" -- "$f")" '
                  '"$(sha256sum -- "$f" | cut -d" " -f1)"; else echo -; fi; done')
        if not paths:
            return {}
        out = (await self.sh(script, *paths, what="comparing files")).stdout.splitlines()
        states: dict[str, FileState | None] = {}
        for path, line in zip(paths, out, strict=True):
            if line == "-":
                states[path] = None
            else:
                mode, owner, group, digest = line.split()
                states[path] = FileState(digest, int(mode, 8), owner, group)
        return states


@dataclass(frozen=True, slots=True)
class FileState:
    sha256: str
    mode: int
    owner: str
    group: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
