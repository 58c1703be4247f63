"""Carrying out an authenticated command, and the answer for every payload that arrives: never raises.

The service implements ``CommandTarget`` with what it already has (its status details, its trust updates, its
uplink); ``set_log_level`` is handled here. Each command is logged once with its operator, outcome and detail
(never a visitor's data: commands carry none). ``restart`` answers first and then asks the service to exit with
EX_TEMPFAIL, which the unit's Restart=on-failure turns into a restart by systemd, not by the daemon itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from ..wire import CommandOutcome, CommandResponse, GateCommand, iso_utc
from .auth import CommandAuthenticator, CommandRefused

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CommandTarget(Protocol):
    """What the gate's service does for a command; each returns what the answer reports."""

    def command_status(self) -> dict[str, object]: ...

    def command_self_test(self) -> dict[str, object]: ...

    def command_reload_trust(self) -> dict[str, object]: ...

    def command_flush_outbox(self) -> dict[str, object]: ...

    def command_restart(self) -> dict[str, object]: ...


class CommandHandler:
    """Authenticates a command payload, carries it out and builds the answer."""

    def __init__(self, authenticator: CommandAuthenticator, target: CommandTarget, *,
                 wall: Callable[[], float] = time.time) -> None:
        self._auth = authenticator
        self._target = target
        self._wall = wall
        self.counts: dict[str, int] = {}  # outcome -> commands, for telemetry and tests

    def handle(self, payload: bytes) -> CommandResponse:
        now = self._wall()
        command: GateCommand | None = None
        try:
            command = self._auth.authenticate(payload, now)
            outcome, detail, result = self._run(command)
        except CommandRefused as refusal:
            command = refusal.command
            outcome, detail, result = refusal.outcome, refusal.detail, {}
        except Exception as exc:  # noqa: BLE001  (a failing command is answered, never kills the uplink's thread)
            outcome, detail, result = "failed", f"{type(exc).__name__}: {exc}", {}
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        level = logging.INFO if outcome == "done" else logging.WARNING
        log.log(level, "command %s from operator %s: %s (%s)", command.command if command else "?",
                command.operator if command else "?", outcome, detail)
        return CommandResponse(device_id=self._auth.device_id, nonce=command.nonce if command else None,
                               command=command.command if command else None, outcome=outcome, detail=detail,
                               result=result, time=iso_utc(self._wall()))

    def _run(self, command: GateCommand) -> tuple[CommandOutcome, str, dict[str, object]]:
        target = self._target
        if command.command == "set_log_level":
            level = command.args.get("level", "").upper()
            if level not in LOG_LEVELS:
                return "bad_argument", f"level must be one of {', '.join(LOG_LEVELS)}", {}
            logging.getLogger("qrgate").setLevel(level)
            return "done", f"log level set to {level}", {"level": level}
        actions: dict[str, tuple[Callable[[], dict[str, object]], str]] = {
            "status": (target.command_status, "status reported"),
            "self_test": (target.command_self_test, "self-test run"),
            "reload_trust": (target.command_reload_trust, "trust lists reloaded"),
            "flush_outbox": (target.command_flush_outbox, "outbox flush started"),
            "restart": (target.command_restart, "restarting after this answer"),
        }
        action, done = actions[command.command]
        result = action()
        failed = result.get("failed")
        if isinstance(failed, str) and failed:
            return "failed", failed, result
        return "done", done, result
