"""A real gate's config must say what it is, with strict types, and ``check-config`` refuses what ``run`` would.

Found from outside: an empty or truncated file passed the check and ran the synthetic demo scene as gate-demo-01,
publishing its test card's events to the province; ``enabled = "off"`` silently turned publishing off; a config
naming a missing CA file, trust directory or board profile passed the check and then failed to start.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon_helpers import write_trust_anchors
from qrgate.config_file import load_config, parse_config
from qrgate.errors import ConfigError
from qrgate.preflight import preflight

GATE = """
[device]
id = "hn-bx-giapbat-g1"
site_id = "hn-bx-giapbat"

[camera]
source = "picamera2"
"""


def qrgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qrgate.cli", *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize("text, missing", [
    ("", ["device.id", "device.site_id", "camera.source"]),
    ("[device]\n", ["device.id", "device.site_id", "camera.source"]),
    ('[device]\nid = "g1"\n', ["device.site_id", "camera.source"]),
    ('[device]\nid = "g1"\nsite_id = "s1"\n', ["camera.source"]),
])
def test_an_empty_or_truncated_file_is_not_a_gate(text: str, missing: list[str]) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "gate.toml")
    message = str(refused.value)
    assert f"{len(missing)} problem(s) in gate.toml" in message
    for key in missing:
        assert f"gate.toml: {key}: missing: a gate's config must name" in message
    assert 'device.mode = "demo"' in message  # says how to run a demo gate on purpose


def test_the_synthetic_scene_is_a_demo_gate_only_when_asked_for() -> None:
    text = GATE.replace('"picamera2"', '"synthetic"')
    with pytest.raises(ConfigError, match=r'gate.toml:7: camera.source: "synthetic" is the demo scene, not a camera'):
        parse_config(text, "gate.toml")
    assert parse_config(text, "gate.toml", demo=True).camera.source == "synthetic"
    demo = text.replace("[device]\n", '[device]\nmode = "demo"\n')
    assert parse_config(demo, "gate.toml").device.mode == "demo"
    assert parse_config("", "demo.toml", demo=True).device.id == "gate-demo-01"  # the built-in identity, asked for


def test_a_named_gate_parses() -> None:
    config = parse_config(GATE, "gate.toml")
    assert (config.device.id, config.device.site_id, config.camera.source) == (
        "hn-bx-giapbat-g1", "hn-bx-giapbat", "picamera2")


@pytest.mark.parametrize("line, key, expected", [
    ('enabled = "off"', "mqtt.enabled", "Input should be a valid boolean"),
    ('port = "8883"', "mqtt.port", "Input should be a valid integer"),
    ("tls = 1", "mqtt.tls", "Input should be a valid boolean"),
    ('reconnect_min_s = "0.5"', "mqtt.reconnect_min_s", "Input should be a valid number"),
])
def test_strings_are_not_booleans_or_numbers(line: str, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(GATE + f"\n[mqtt]\n{line}\n", "gate.toml")
    assert f"gate.toml:10: {key}: {expected}" in str(refused.value)


def test_run_refuses_an_empty_config_and_check_config_says_why(tmp_path: Path) -> None:
    empty = tmp_path / "qrgate.toml"
    empty.write_text("")
    for command in (["check-config", str(empty)], ["run", "--config", str(empty)]):
        result = qrgate(*command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert f"{empty}: device.id: missing" in result.stderr
        assert "camera.source: missing" in result.stderr
        assert "Traceback" not in result.stderr


def _gate_naming(tmp_path: Path, trust: Path, extra: str) -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(GATE + f"""
[trust]
paths = ["{trust}"]

[outbox]
path = "{tmp_path / 'state' / 'outbox.sqlite'}"
{extra}
""")
    return path


def test_check_config_checks_every_file_and_profile_run_needs(tmp_path: Path) -> None:
    path = _gate_naming(tmp_path, tmp_path / "no-trust", f"""
[feedback]
board = "no-such-board"

[mqtt]
ca_file = "{tmp_path / 'missing-ca.pem'}"
cert_file = "{tmp_path / 'missing-device.pem'}"
key_file = "{tmp_path / 'missing-device.key'}"
""")
    problems = preflight(load_config(path))
    assert [problem.split(":", 1)[0] for problem in problems] == ["trust.paths", "feedback.board", "mqtt (TLS files)"]
    assert "no-trust" in problems[0]
    assert "no such board profile" in problems[1]
    assert "missing-ca.pem" in problems[2]

    result = qrgate("check-config", str(path))
    assert result.returncode == 1
    assert f"{path}: 3 problem(s) `qrgate run` would stop at:" in result.stderr
    assert f"{path}: feedback.board: " in result.stderr
    assert qrgate("check-config", "--syntax-only", str(path)).returncode == 0  # the file itself is well-formed
    # and run stops at the first of them, as the check said it would
    run = qrgate("run", "--config", str(path))
    assert run.returncode == 1 and "cannot start" in run.stderr


def test_a_config_whose_files_exist_passes_the_check(tmp_path: Path) -> None:
    trust = tmp_path / "trust"
    write_trust_anchors(trust)
    path = _gate_naming(tmp_path, trust, "\n[mqtt]\nenabled = false\n")
    assert preflight(load_config(path)) == []
    result = qrgate("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK (device hn-bx-giapbat-g1, site hn-bx-giapbat, camera picamera2)" in result.stdout


def test_the_example_config_names_a_real_gate_with_the_safe_settings_on() -> None:
    example = Path(__file__).resolve().parents[1] / "firmware" / "qrgate.example.toml"
    config = load_config(example)
    assert config.device.mode == "gate" and config.camera.source == "picamera2"
    assert config.mqtt.end_to_end_ack is True  # a broker crash after its PUBACK cannot lose an event
    assert config.trust.signers_dir is not None  # signed trust lists, revocations and rule sets accepted
    assert config.mqtt.tls and config.mqtt.cert_file and config.mqtt.key_file  # mutual TLS


def test_a_static_scene_is_still_decoded_often_enough_for_the_watchdog() -> None:
    with pytest.raises(ConfigError, match=r"decoder.decode_every = 300 at camera.fps = 30 decodes a static scene "
                                          r"every 10.0 s; at most 5 s"):
        parse_config(GATE + "fps = 30\n\n[decoder]\ndecode_every = 300\n", "gate.toml")
    assert parse_config(GATE + "fps = 30\n\n[decoder]\ndecode_every = 150\n", "gate.toml").decoder.decode_every == 150
