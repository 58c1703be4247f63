"""Carrying out commands (qrgate.remote.dispatch): every payload gets an answer with its outcome, the target's
action runs only for an authenticated command, a failing action is answered 'failed', set_log_level is bounded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from qrgate.remote.auth import CommandAuthenticator, OperatorKeys
from qrgate.remote.dispatch import CommandHandler
from qrgate.remote.nonces import NonceStore
from qrgate_provisioning.province.command_signing import new_command, new_operator_key, operator_keys_file, sign_command

NOW = 1_800_000_000.0


class RecordingTarget:
    """A target that does what the service would, in memory, and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def command_status(self) -> dict[str, object]:
        self.calls.append("status")
        return {"pending": 3}

    def command_self_test(self) -> dict[str, object]:
        self.calls.append("self_test")
        return {"ok": True}

    def command_reload_trust(self) -> dict[str, object]:
        self.calls.append("reload_trust")
        return {"failed": "drop directory unreadable"}

    def command_flush_outbox(self) -> dict[str, object]:
        self.calls.append("flush_outbox")
        raise OSError("disk gone")

    def command_restart(self) -> dict[str, object]:
        self.calls.append("restart")
        return {}


@pytest.fixture
def handler(tmp_path: Path):
    key = new_operator_key(tmp_path / "ops.key", "ops-1")
    (tmp_path / "operators.json").write_text(operator_keys_file([key]))
    target = RecordingTarget()
    auth = CommandAuthenticator("gate-1", OperatorKeys.load(tmp_path / "operators.json"),
                                NonceStore(tmp_path / "nonces.sqlite"))
    yield CommandHandler(auth, target, wall=lambda: NOW), target, key
    logging.getLogger("qrgate").setLevel(logging.NOTSET)


def send(handler, key, name: str, device: str = "gate-1", **args: str):
    return handler.handle(sign_command(key, new_command(name, device, "lan", args=args, now=NOW)).to_json())


def test_each_command_runs_its_action_and_is_answered(handler) -> None:
    handler, target, key = handler
    status = send(handler, key, "status")
    assert (status.outcome, status.command, status.result, status.device_id) == ("done", "status", {"pending": 3},
                                                                                 "gate-1")
    assert send(handler, key, "self_test").outcome == "done"
    reload = send(handler, key, "reload_trust")
    assert (reload.outcome, reload.detail) == ("failed", "drop directory unreadable")
    flush = send(handler, key, "flush_outbox")
    assert flush.outcome == "failed" and "disk gone" in flush.detail
    assert send(handler, key, "restart").outcome == "done"
    assert target.calls == ["status", "self_test", "reload_trust", "flush_outbox", "restart"]
    assert handler.counts == {"done": 3, "failed": 2}


def test_set_log_level_is_bounded(handler) -> None:
    handler, target, key = handler
    assert send(handler, key, "set_log_level", level="debug").outcome == "done"
    assert logging.getLogger("qrgate").level == logging.DEBUG
    bad = send(handler, key, "set_log_level", level="TRACE; rm -rf /")
    assert bad.outcome == "bad_argument" and logging.getLogger("qrgate").level == logging.DEBUG
    assert target.calls == []


def test_refused_commands_run_nothing_and_say_why(handler, caplog: pytest.LogCaptureFixture) -> None:
    handler, target, key = handler
    foreign = send(handler, key, "restart", device="gate-2")
    assert (foreign.outcome, foreign.command) == ("wrong_device", "restart")
    garbage = handler.handle(b"\x00not json")
    assert (garbage.outcome, garbage.nonce, garbage.command) == ("malformed", None, None)
    assert target.calls == []
    assert any("wrong_device" in record.getMessage() for record in caplog.records)
