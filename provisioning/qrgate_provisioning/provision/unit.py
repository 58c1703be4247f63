"""The qrgate unit on the gate: verified, enabled, started and stopped.

On a gate systemd runs it (``systemctl``). Where systemd is not PID 1 (a container, a chroot, the test
machine) or the root is a prefix, the installed unit is still checked with ``systemd-analyze verify`` and
enabled with ``systemctl --root`` (which only writes its symlink), and the provisioner starts the unit's own
command lines itself: ExecStartPre in the foreground, then ExecStart in the background (``setsid``) as the
unit's User= with its Environment=, its pid and output in a run directory under the root. That is the daemon
the unit would run, with the same paths, user and environment, but not its sandbox: only a gate's systemd
applies that (tests/test_unit_hardening.py checks the sandbox itself).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .checklist import ProvisionError
from .context import Context
from .layout import UNIT_NAME

STOP_TIMEOUT_S = 25  # the unit's TimeoutStopSec=20, and a little more


@dataclass(frozen=True, slots=True)
class UnitState:
    enabled: bool
    running: bool
    detail: str


@dataclass(frozen=True, slots=True)
class UnitCommands:
    """What the installed unit runs, read from the file on the gate."""

    start_pre: tuple[tuple[str, ...], ...]
    start: tuple[str, ...]
    user: str
    environment: dict[str, str]


def parse_unit(text: str) -> UnitCommands:
    section, pre, start, user, env = "", [], None, "root", {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section != "[Service]":
            continue
        value = value.strip()
        if key == "ExecStartPre":
            pre.append(tuple(shlex.split(value.lstrip("-@+!"))))
        elif key == "ExecStart":
            start = tuple(shlex.split(value.lstrip("-@+!")))
        elif key == "User":
            user = value
        elif key == "Environment":
            for assignment in shlex.split(value):
                name, _, setting = assignment.partition("=")
                env[name] = setting
    if not start:
        raise ProvisionError("the installed unit has no ExecStart= line")
    return UnitCommands(tuple(pre), start, user, env)


def service_environment(commands: UnitCommands) -> dict[str, str]:
    """The environment systemd gives the unit's processes: a clean one with the user's basics and Environment=."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            "HOME": "/var/lib/qrgate", "USER": commands.user, "LOGNAME": commands.user, **commands.environment}


class Unit:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.remote = ctx.remote
        self.layout = ctx.layout
        self.systemd = bool(ctx.facts.get("systemd")) and not ctx.layout.prefixed

    async def state(self) -> UnitState:
        """Whether the unit is enabled and running (one round trip; a unit not installed is neither)."""
        if self.systemd:
            done = await self.remote.sh(f'systemctl is-enabled --quiet {UNIT_NAME} && echo enabled; '
                                        f'systemctl is-active {UNIT_NAME} || true', check=False, what="the unit")
            words = done.stdout.split()
            return UnitState("enabled" in words, "active" in words, f"systemctl: {words[-1] if words else '?'}")
        script = ('[ -L "$1" ] && echo enabled; [ -f "$2" ] || exit 0; p="$(cat "$2")"; '
                  '[ -r "/proc/$p/cmdline" ] || exit 0; tr "\\0" " " < "/proc/$p/cmdline" | grep -q "qrgate run" && '
                  'echo "pid $p"; exit 0')
        done = await self.remote.sh(script, self.layout.unit_wants, self.layout.pid_file, what="the unit")
        words = done.stdout.split()
        pid = words[words.index("pid") + 1] if "pid" in words else None
        return UnitState("enabled" in words, pid is not None, f"pid {pid}" if pid else "not running")

    async def _pid(self) -> int | None:
        state = await self.state()
        return int(state.detail.split()[1]) if state.running else None

    async def verify(self) -> list[str]:
        """What ``systemd-analyze verify`` says about the installed unit (any line naming it is a problem)."""
        done = await self.remote.sh('command -v systemd-analyze >/dev/null || exit 0; '
                                    'systemd-analyze verify --man=no "$1" 2>&1', self.layout.unit, check=False,
                                    what="systemd-analyze verify")
        problems = [line for line in (done.stdout + done.stderr).splitlines() if UNIT_NAME in line]
        if not done.ok and not problems:
            problems.append(f"exit status {done.exit_status}: {done.stdout.strip()[-300:]}")
        return problems

    async def enable(self, *, reload: bool) -> None:
        if self.systemd:
            if reload:
                await self.remote.run(["systemctl", "daemon-reload"], what="systemctl daemon-reload")
            await self.remote.run(["systemctl", "enable", UNIT_NAME], what="systemctl enable")
            return
        # Offline: the [Install] section's symlink, as systemctl would make it for the next boot.
        done = await self.remote.run(["systemctl", f"--root={self.layout.root}", "enable", UNIT_NAME], check=False,
                                     what="systemctl --root enable")
        if not done.ok:
            target = self.layout.unit if not self.layout.prefixed else f"/etc/systemd/system/{UNIT_NAME}"
            await self.remote.sh('mkdir -p "$(dirname "$2")" && ln -sfn "$1" "$2"', target, self.layout.unit_wants,
                                 what="enabling the unit")

    async def disable(self) -> None:
        if self.systemd:
            await self.remote.run(["systemctl", "disable", UNIT_NAME], check=False, what="systemctl disable")
        await self.remote.run(["rm", "-f", self.layout.unit_wants], what="disabling the unit")

    async def stop(self) -> None:
        if self.systemd:
            await self.remote.run(["systemctl", "stop", UNIT_NAME], what="systemctl stop", timeout=60)
            return
        pid = await self._pid()
        if pid is None:
            return
        script = (f'kill -TERM "$1" 2>/dev/null || exit 0; i=0; while kill -0 "$1" 2>/dev/null; do '
                  f'i=$((i+1)); [ $i -ge {STOP_TIMEOUT_S * 10} ] && {{ kill -KILL "$1"; break; }}; sleep 0.1; done; '
                  'rm -f "$2"')
        await self.remote.sh(script, str(pid), self.layout.pid_file, what="stopping the daemon", timeout=60)

    async def start(self) -> None:
        if self.systemd:  # the unit file may have just changed: systemd reads it again first
            await self.remote.run(["systemctl", "daemon-reload"], what="systemctl daemon-reload")
            await self.remote.run(["systemctl", "start", UNIT_NAME], what="systemctl start", timeout=120)
            return
        text = await self.remote.read(self.layout.unit)
        if text is None:
            raise ProvisionError(f"{self.layout.unit} is not installed")
        commands = parse_unit(text.decode())
        env = service_environment(commands)
        for argv in commands.start_pre:
            await self.remote.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv], as_user=commands.user,
                                  what=f"ExecStartPre {shlex.join(argv)}")
        line = self.remote.command(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *commands.start], root=False,
                                   as_user=commands.user)
        script = f'cd / && setsid {line} > "$2" 2>&1 < /dev/null & echo $! > "$1"'
        await self.remote.sh(script, self.layout.pid_file, self.layout.daemon_log, what="starting the daemon")
