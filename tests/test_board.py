"""Board pin profiles: the shipped TOML files, resolution, validation and config overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from qrgate.board import (
    HARDWARE_DIR_ENV,
    J8_PIN_OF_BCM,
    BoardProfile,
    OutputPin,
    apply_overrides,
    load_board_profile,
    profile_names,
    profiles_dir,
)
from qrgate.errors import BoardProfileError, ConfigError

REPO_PROFILES = Path(__file__).resolve().parents[1] / "hardware" / "profiles"

VALID = """
name = "bench"
description = "test layout"

[green]
bcm = 17
header_pin = 11

[red]
bcm = 27
header_pin = 13

[buzzer]
bcm = 22
header_pin = 15
"""


def write(tmp_path: Path, text: str, name: str = "bench.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_profiles_resolve_to_the_checkout_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HARDWARE_DIR_ENV, raising=False)
    assert profiles_dir() == REPO_PROFILES
    assert {"rpi-gate-v1", "rpi-traffic-hat"} <= set(profile_names())


@pytest.mark.parametrize("name", sorted(path.stem for path in REPO_PROFILES.glob("*.toml")))
def test_every_shipped_profile_loads_and_is_named_after_its_file(name: str) -> None:
    profile = load_board_profile(name)
    assert profile.name == name
    assert profile.description
    for output in profile.outputs().values():
        assert J8_PIN_OF_BCM[output.bcm] == output.header_pin
        assert output.part


def test_reference_gate_layout() -> None:
    profile = load_board_profile("rpi-gate-v1")
    pins = {name: (pin.bcm, pin.header_pin, pin.active_low) for name, pin in profile.outputs().items()}
    assert pins == {
        "green": (17, 11, False),
        "red": (27, 13, False),
        "buzzer": (22, 15, False),
        "relay": (5, 29, True),
    }


def test_traffic_hat_matches_gpiozero_traffichat_pins() -> None:
    # gpiozero's TrafficHat: lights on BOARD18 (red), BOARD15 (green), buzzer on BOARD29.
    profile = load_board_profile("rpi-traffic-hat")
    assert (profile.red.header_pin, profile.green.header_pin, profile.buzzer.header_pin) == (18, 15, 29)
    assert profile.relay is None
    assert list(profile.outputs()) == ["green", "red", "buzzer"]


def test_j8_map_agrees_with_the_printed_pinout() -> None:
    # A few pins from the Raspberry Pi's documented 40-pin header.
    assert J8_PIN_OF_BCM[2] == 3
    assert J8_PIN_OF_BCM[14] == 8
    assert J8_PIN_OF_BCM[17] == 11
    assert J8_PIN_OF_BCM[21] == 40
    assert sorted(J8_PIN_OF_BCM) == list(range(28))


def test_path_and_hardware_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, VALID)
    assert load_board_profile(path).name == "bench"
    assert load_board_profile(str(path)).green.bcm == 17

    (tmp_path / "profiles").mkdir()
    write(tmp_path / "profiles", VALID, "bench.toml")
    monkeypatch.setenv(HARDWARE_DIR_ENV, str(tmp_path))
    assert profiles_dir() == tmp_path / "profiles"
    assert profile_names() == ["bench"]
    assert load_board_profile("bench").buzzer.bcm == 22


def test_missing_profile_names_the_file_and_lists_what_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HARDWARE_DIR_ENV, raising=False)
    with pytest.raises(BoardProfileError) as caught:
        load_board_profile("no-such-board")
    message = str(caught.value)
    assert str(REPO_PROFILES / "no-such-board.toml") in message
    assert "rpi-gate-v1" in message
    assert HARDWARE_DIR_ENV in message
    assert isinstance(caught.value, ConfigError)


def test_a_bare_name_cannot_escape_the_profiles_directory() -> None:
    with pytest.raises(BoardProfileError, match="not a profile name"):
        load_board_profile("Gate V1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name = [", "not valid TOML"),
        (VALID + "\n[relay]\nbcm = 5\nheader_pin = 29\nactiv_low = true\n", "relay.activ_low: unknown key"),
        (VALID.replace("bcm = 17", "bcm = 28"), "green.bcm: Input should be less than or equal to 27"),
        (VALID.replace("header_pin = 11", "header_pin = 12"),
         "green: Value error, header_pin 12 does not carry GPIO17 (BCM 17 is J8 pin 11)"),
        (VALID.replace("bcm = 27\nheader_pin = 13", "bcm = 17\nheader_pin = 11"),
         "GPIO17 is used by both green and red"),
        (VALID.replace("[buzzer]\nbcm = 22\nheader_pin = 15\n", ""), "buzzer: Field required"),
    ],
)
def test_invalid_profiles_name_the_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BoardProfileError) as caught:
        load_board_profile(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_override_moves_a_pin_and_derives_its_header_pin() -> None:
    profile = load_board_profile("rpi-gate-v1", {"relay": 6, "buzzer": 23})
    assert (profile.relay.bcm, profile.relay.header_pin, profile.relay.active_low) == (6, 31, True)
    assert (profile.buzzer.bcm, profile.buzzer.header_pin) == (23, 16)
    assert profile.green.bcm == 17


def test_override_removes_the_relay_and_changes_its_polarity() -> None:
    assert load_board_profile("rpi-gate-v1", {"relay": None}).relay is None
    assert load_board_profile("rpi-gate-v1", relay_active_low=False).relay.active_low is False


def test_adding_a_relay_needs_its_polarity() -> None:
    with pytest.raises(BoardProfileError, match="has no relay; set relay_active_low too"):
        load_board_profile("rpi-traffic-hat", {"relay": 17})
    profile = load_board_profile("rpi-traffic-hat", {"relay": 17}, relay_active_low=True)
    assert (profile.relay.bcm, profile.relay.header_pin, profile.relay.active_low) == (17, 11, True)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"relay": 17}, "GPIO17 is used by both green and relay"),
        ({"green": None}, "pins.green: only the relay can be removed"),
        ({"amber": 23}, "pins.amber: unknown output"),
        ({"red": 30}, "pins.red: 30 is not a BCM GPIO number"),
        ({"red": True}, "pins.red: True is not a BCM GPIO number"),
    ],
)
def test_bad_overrides_are_named(overrides: dict[str, int | None], expected: str) -> None:
    with pytest.raises(BoardProfileError, match=expected):
        load_board_profile("rpi-gate-v1", overrides)


def test_apply_overrides_returns_a_new_profile() -> None:
    original = load_board_profile("rpi-gate-v1")
    moved = apply_overrides(original, {"green": 26})
    assert moved.green.bcm == 26 and original.green.bcm == 17


@pytest.mark.parametrize("model", [BoardProfile, OutputPin])
def test_every_field_is_described(model: type) -> None:
    assert all(field.description for field in model.model_fields.values())
    assert model.model_config["extra"] == "forbid"
