"""A gate's checks on a signed command (qrgate.remote.auth) against the province's signing
(qrgate_provisioning.province.command_signing): a good one passes once; unsigned, forged, an unknown key, expired,
not yet valid, too long-lived, replayed (also after a restart) and foreign ones are refused with their outcome."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from qrgate.errors import ConfigError
from qrgate.remote.auth import CommandAuthenticator, CommandRefused, OperatorKeys
from qrgate.remote.nonces import NonceStore
from qrgate.wire import GateCommand, SignedCommand
from qrgate_provisioning.errors import ProvinceError
from qrgate_provisioning.province.command_signing import (
    load_operator_key,
    new_command,
    new_operator_key,
    operator_keys_file,
    sign_command,
)

NOW = 1_800_000_000.0


@pytest.fixture
def setup(tmp_path: Path) -> tuple[object, CommandAuthenticator, Path]:
    key = new_operator_key(tmp_path / "ops.key", "ops-1")
    (tmp_path / "operators.json").write_text(operator_keys_file([key]))
    nonces = NonceStore(tmp_path / "nonces.sqlite")
    auth = CommandAuthenticator("gate-1", OperatorKeys.load(tmp_path / "operators.json"), nonces)
    return key, auth, tmp_path


def refused(auth: CommandAuthenticator, payload: bytes, now: float = NOW) -> str:
    with pytest.raises(CommandRefused) as raised:
        auth.authenticate(payload, now)
    return raised.value.outcome


def test_a_good_command_passes_once_and_its_replay_is_refused_even_after_a_restart(setup) -> None:
    key, auth, tmp_path = setup
    signed = sign_command(key, new_command("status", "gate-1", "lan", now=NOW)).to_json()
    command = auth.authenticate(signed, NOW + 1)
    assert (command.command, command.device_id, command.operator) == ("status", "gate-1", "lan")
    assert refused(auth, signed, NOW + 2) == "replayed"
    restarted = CommandAuthenticator("gate-1", OperatorKeys.load(tmp_path / "operators.json"),
                                     NonceStore(tmp_path / "nonces.sqlite"))
    assert refused(restarted, signed, NOW + 3) == "replayed"


def test_forged_unsigned_unknown_key_and_garbage_are_refused(setup, tmp_path: Path) -> None:
    key, auth, _ = setup
    good = json.loads(sign_command(key, new_command("restart", "gate-1", "lan", now=NOW)).to_json())
    body = base64.urlsafe_b64decode(good["command"] + "==")
    tampered = body.replace(b'"restart"', b'"status"')
    forged = dict(good, command=base64.urlsafe_b64encode(tampered).rstrip(b"=").decode())
    assert refused(auth, json.dumps(forged).encode()) == "bad_signature"
    assert refused(auth, json.dumps(dict(good, signature="")).encode()) == "bad_signature"
    assert refused(auth, json.dumps({"kid": "ops-1", "command": good["command"]}).encode()) == "malformed"
    other = new_operator_key(tmp_path / "other.key", "ops-1")  # same key id, another key: a forger's
    assert refused(auth, sign_command(other, new_command("status", "gate-1", "x", now=NOW)).to_json()) \
        == "bad_signature"
    stranger = new_operator_key(tmp_path / "stranger.key", "ops-9")
    assert refused(auth, sign_command(stranger, new_command("status", "gate-1", "x", now=NOW)).to_json()) \
        == "unknown_key"
    for garbage in [b"", b"\xff\xfe", b"{}", b"[1,2]", b'{"kid":"ops-1","command":"!!!","signature":"!!!"}',
                    b"A" * 100_000]:
        assert refused(auth, garbage) == "malformed"


def test_time_and_target_are_checked_after_the_signature(setup) -> None:
    key, auth, _ = setup
    expired = sign_command(key, new_command("status", "gate-1", "lan", lifetime_s=60, now=NOW - 120)).to_json()
    assert refused(auth, expired) == "expired"
    future = sign_command(key, new_command("status", "gate-1", "lan", now=NOW + 3600)).to_json()
    assert refused(auth, future) == "not_yet_valid"
    foreign = sign_command(key, new_command("status", "gate-2", "lan", now=NOW)).to_json()
    assert refused(auth, foreign) == "wrong_device"
    long_lived = GateCommand(command="status", device_id="gate-1", issued_at=NOW, expires_at=NOW + 86400,
                             nonce="0" * 32, operator="lan")
    assert refused(auth, sign_command(key, long_lived).to_json()) == "lifetime_too_long"
    # a refused command did not burn its nonce: the same nonce, correctly issued, still passes
    fine = long_lived.model_copy(update={"expires_at": NOW + 60})
    assert auth.authenticate(sign_command(key, fine).to_json(), NOW).nonce == "0" * 32


def test_keys_files_and_lifetimes_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "ops.key"
    key = new_operator_key(path, "ops-1")
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_operator_key(path).public_entry() == key.public_entry()
    with pytest.raises(ProvinceError, match="already there"):
        new_operator_key(path, "ops-1")
    path.chmod(0o644)
    with pytest.raises(ProvinceError, match="lets others read it"):
        load_operator_key(path)
    with pytest.raises(ProvinceError, match="at most"):
        new_command("status", "gate-1", "lan", lifetime_s=3600)
    (tmp_path / "bad.json").write_text('{"keys": [{"kid": "x", "public_key": "not base64!"}]}')
    with pytest.raises(ConfigError, match="not an operator key list"):
        OperatorKeys.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="no such file"):
        OperatorKeys.load(tmp_path / "missing.json")
    assert isinstance(SignedCommand.model_json_schema(), dict)
