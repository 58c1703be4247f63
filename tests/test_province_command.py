"""``qrgate-province command`` and ``command-key`` (province/commands/command.py, command_key.py) against the real
broker and PostgreSQL: a gate's real uplink with the real command handler answers; the outcome is printed, the exit
status says done or not, the command and its answer are in the audit log; no answer is an error naming the gate."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqtt_helpers import uplink_for, wait_until
from qrgate import wire
from qrgate.outbox import Outbox
from qrgate.remote.auth import CommandAuthenticator, OperatorKeys
from qrgate.remote.dispatch import CommandHandler
from qrgate.remote.nonces import NonceStore
from qrgate.uplink import Uplink
from qrgate_provisioning.errors import ProvinceError
from qrgate_provisioning.province.accounts import Accounts
from qrgate_provisioning.province.command_signing import load_operator_key, operator_keys_file
from qrgate_provisioning.province.commands import command, command_key
from qrgate_provisioning.province.db import Database
from qrgate_provisioning.province.settings import DatabaseSettings
from qrgate_tools.broker import MosquittoBroker

GATE = "gate-cli-1"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qrgate-province")
    subparsers = parser.add_subparsers(dest="command", required=True)
    command.add_parser(subparsers)
    command_key.add_parser(subparsers)
    return parser.parse_args(list(argv))


class GateTarget:
    """What a gate's service would answer, in memory (the broker, the uplink and the handler are real)."""

    def command_status(self) -> dict[str, object]:
        return {"pending": 0, "site_id": "market-1"}

    def command_self_test(self) -> dict[str, object]:
        return {"ok": True, "checks": []}

    def command_reload_trust(self) -> dict[str, object]:
        return {"failed": "no signed lists on this gate"}

    def command_flush_outbox(self) -> dict[str, object]:
        return {"pending": 0}

    def command_restart(self) -> dict[str, object]:
        return {"exit_status": 75}


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "ops.key"
    assert command_key.run(parse("command-key", "new", str(path), "--kid", "ops-1")) == 0
    (tmp_path / "operators.json").write_text(operator_keys_file([load_operator_key(path)]))
    return path


@pytest.fixture
def gate(tmp_path: Path, broker: MosquittoBroker, key_file: Path) -> Iterator[Uplink]:
    auth = CommandAuthenticator(GATE, OperatorKeys.load(tmp_path / "operators.json"),
                                NonceStore(tmp_path / "nonces.sqlite"))
    with Outbox(tmp_path / "outbox.sqlite") as outbox, \
            uplink_for(outbox, broker, device_id=GATE, commands=CommandHandler(auth, GateTarget()).handle) as uplink:
        wait_until(lambda: uplink.stats.connected, 10, "the gate connected")
        yield uplink
    logging.getLogger("qrgate").setLevel(logging.NOTSET)


@pytest.fixture
def config_file(tmp_path: Path, broker: MosquittoBroker) -> Path:
    path = tmp_path / "province.toml"
    path.write_text(f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n')
    return path


def test_command_key_new_writes_a_private_key_and_prints_what_gates_install(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ops.key"
    assert command_key.run(parse("command-key", "new", str(path), "--kid", "ops-2026")) == 0
    printed = capsys.readouterr()
    assert path.stat().st_mode & 0o777 == 0o600
    (tmp_path / "operators.json").write_text(printed.out)
    assert list(OperatorKeys.load(tmp_path / "operators.json").keys) == ["ops-2026"]
    assert "remote.operator_keys" in printed.err
    assert command_key.run(parse("command-key", "show", str(path))) == 0
    assert capsys.readouterr().out == printed.out
    with pytest.raises(ProvinceError, match="already there"):
        command_key.run(parse("command-key", "new", str(path), "--kid", "other"))
    with pytest.raises(ProvinceError, match="without spaces"):
        command_key.run(parse("command-key", "new", str(tmp_path / "x.key"), "--kid", "two words"))


def test_a_command_is_sent_printed_and_audited(gate: Uplink, key_file: Path, config_file: Path, province_dsn: str,
                                               capsys) -> None:
    common = ("--key", str(key_file), "--actor", "lan", "--config", str(config_file), "--dsn", province_dsn)
    assert command.run(parse("command", GATE, "status", *common)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{GATE}: status: done: status reported\n")
    assert json.loads(out.split("\n", 1)[1]) == {"pending": 0, "site_id": "market-1"}
    assert command.run(parse("command", GATE, "set_log_level", "--arg", "level=LOUD", *common)) == 1
    assert f"{GATE}: set_log_level: bad_argument: level must be one of" in capsys.readouterr().out
    assert command.run(parse("command", GATE, "reload_trust", "--json", *common)) == 1
    assert json.loads(capsys.readouterr().out)["outcome"] == "failed"
    with Database(DatabaseSettings(dsn=province_dsn)) as database:
        entries = Accounts(database).audit_entries(actor="lan")
    entries.reverse()  # oldest first
    assert [entry.action for entry in entries] == ["command", "command_answer"] * 3
    sent, answered = entries[0].detail, entries[1].detail
    assert (sent["device_id"], sent["command"], sent["kid"], sent["via"]) == (GATE, "status", "ops-1", "cli")
    assert sent["os_user"] and sent["nonce"] == answered["nonce"]
    assert [entry.detail["outcome"] for entry in entries[1::2]] == ["done", "bad_argument", "failed"]
    assert entries[2].detail["args"] == {"level": "LOUD"}
    assert gate.stats.commands_answered == 3


def test_no_answer_and_no_subscriber_are_errors_naming_the_gate(broker: MosquittoBroker, key_file: Path,
                                                                config_file: Path, province_dsn: str) -> None:
    silent = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="silent-gate", protocol=mqtt.MQTTv5)
    subscribed: list[object] = []
    silent.on_subscribe = lambda *args: subscribed.append(args)
    silent.connect(broker.host, broker.port)
    silent.loop_start()
    try:
        silent.subscribe(wire.command_topic("gate-silent"), qos=1)
        wait_until(lambda: subscribed, 10, "the silent gate's SUBACK")
        common = ("--key", str(key_file), "--actor", "lan", "--config", str(config_file), "--dsn", province_dsn)
        with pytest.raises(ProvinceError, match=r"no answer from gate gate-silent within 1 s \(offline\?\)"):
            command.run(parse("command", "gate-silent", "status", "--timeout", "1", *common))
        with pytest.raises(ProvinceError, match="gate gate-nobody is not subscribed to its command topic"):
            command.run(parse("command", "gate-nobody", "status", *common))
    finally:
        silent.disconnect()
        silent.loop_stop()
    with Database(DatabaseSettings(dsn=province_dsn)) as database:
        outcomes = [(entry.action, entry.detail.get("outcome")) for entry in Accounts(database).audit_entries()]
    assert outcomes == [("command_answer", "no_answer"), ("command", None)] * 2


def test_without_a_database_it_says_the_command_is_not_audited(gate: Uplink, key_file: Path, config_file: Path,
                                                               capsys) -> None:
    assert command.run(parse("command", GATE, "flush_outbox", "--key", str(key_file), "--actor", "lan",
                             "--config", str(config_file))) == 0
    printed = capsys.readouterr()
    assert "not written to the audit log" in printed.err and f"{GATE}: flush_outbox: done" in printed.out


def test_a_key_others_can_read_and_bad_arguments_are_refused(key_file: Path, config_file: Path) -> None:
    os.chmod(key_file, 0o644)
    with pytest.raises(ProvinceError, match="chmod 600"):
        command.run(parse("command", GATE, "status", "--key", str(key_file), "--actor", "lan",
                          "--config", str(config_file)))
    os.chmod(key_file, 0o600)
    with pytest.raises(ProvinceError, match="KEY=VALUE"):
        command.run(parse("command", GATE, "set_log_level", "--arg", "DEBUG", "--key", str(key_file),
                          "--actor", "lan", "--config", str(config_file)))
    with pytest.raises(ProvinceError, match="at most 600 s"):
        command.run(parse("command", GATE, "status", "--lifetime", "3600", "--key", str(key_file),
                          "--actor", "lan", "--config", str(config_file)))
    with pytest.raises(SystemExit):
        parse("command", GATE, "reboot", "--key", str(key_file), "--actor", "lan")
