"""Configuration: strict model, every problem reported with its line, defaults round-trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qrgate.config import GateConfig
from qrgate.config_file import load_config, parse_config, render_defaults
from qrgate.errors import ConfigError


def test_defaults_render_and_parse_back_to_the_defaults():
    text = render_defaults()
    assert parse_config(text, "defaults.toml") == GateConfig()
    # every field carries a description, so the rendered file documents every key
    assert text.count("\n# ") >= sum(len(type(getattr(GateConfig(), name)).model_fields)
                                     for name in GateConfig.model_fields)


def test_every_field_has_a_description():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)

    walk(GateConfig)


BROKEN = """\
[device]
id = "bad/id"
direction = "sideways"

[camera]
widht = 640

[mqtt]
port = 0
"""


def test_every_problem_is_reported_with_line_and_key():
    with pytest.raises(ConfigError) as caught:
        parse_config(BROKEN, "gate.toml")
    message = str(caught.value)
    assert message.startswith("4 problem(s) in gate.toml:")
    assert "gate.toml:2: device.id: String should match pattern" in message
    assert "gate.toml:3: device.direction: Input should be 'in', 'out' or 'both'" in message
    assert "gate.toml:6: camera.widht: unknown key" in message
    assert "gate.toml:9: mqtt.port: Input should be greater than or equal to 1" in message


def test_toml_syntax_error_names_line_and_column():
    with pytest.raises(ConfigError, match=r"gate.toml: not valid TOML: .*line 1, column 8"):
        parse_config("[device\nid = 1\n", "gate.toml")


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[camera]\nsource = "files"\n', "camera.path is required when camera.source = 'files'"),
        ('[decoder]\nbackend = "zbar"\nfallback = "zbar"\n', "decoder.fallback must differ"),
        ('[mqtt]\ncert_file = "/x.pem"\nkey_file = ""\n', "mqtt.cert_file and mqtt.key_file go together"),
        ('[feedback.patterns]\naccepted_on_s = -1\n',
         "feedback.patterns.accepted_on_s: Input should be greater than 0"),
    ],
)
def test_cross_field_and_nested_problems(text, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        parse_config(text, "gate.toml")


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_example_config_in_firmware_is_valid():
    example = Path(__file__).resolve().parents[1] / "firmware" / "qrgate.example.toml"
    config = load_config(example)
    assert config.camera.source == "picamera2"
    assert config.mqtt.tls


def _qrgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qrgate.cli", *args], check=False, capture_output=True, text=True,
                          timeout=60)


def test_check_config_cli_exit_codes(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BROKEN)
    result = _qrgate("check-config", str(bad))
    assert result.returncode == 1
    assert f"{bad}:6: camera.widht: unknown key" in result.stderr

    good = tmp_path / "good.toml"
    good.write_text(render_defaults())
    result = _qrgate("check-config", "--syntax-only", str(good))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    # Without --syntax-only it also checks the files the defaults name, as run would (test_config_gate.py).
    result = _qrgate("check-config", str(good))
    assert result.returncode == 1 and "trust.paths: /etc/qrgate/trust" in result.stderr


def test_run_refuses_a_bad_config_with_the_same_message(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BROKEN)
    result = _qrgate("run", "--config", str(bad))
    assert result.returncode == 1
    assert f"{bad}:2: device.id: String should match pattern" in result.stderr
