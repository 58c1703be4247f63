"""Board pin profiles: which GPIO drives the gate's green LED, red LED, buzzer and relay.

A profile is data, a TOML file under ``hardware/profiles/`` that a technician can read next to
``hardware/wiring.md``. Pins use BCM (Broadcom GPIO) numbers, as gpiozero does; every output also
names its physical pin on the 40-pin J8 header, and that number is checked against the BCM number
so a typo in one of the two is caught before anyone wires the wrong pin.

Where the profiles live: ``$QRGATE_HARDWARE_DIR/profiles/`` when that variable is set (an installed
package, a profile directory under /etc), else ``hardware/profiles/`` of the source checkout this
module sits in.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpiozero.pins.pi import PiBoardInfo
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import BoardProfileError

HARDWARE_DIR_ENV = "QRGATE_HARDWARE_DIR"
OUTPUT_NAMES = ("green", "red", "buzzer", "relay")
_REMOVABLE_OUTPUTS = frozenset({"relay"})  # the visitor must always see and hear the answer
_PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _j8_header_pins() -> dict[int, int]:
    """BCM number -> physical J8 pin, from gpiozero's board data rather than a hand-typed table.

    The 40-pin J8 header is identical on every Pi since the B+ (Pi 2, 3, 4, 5, Zero, Zero 2 W), so
    any 40-pin revision gives the map; a02082 is the Pi 3 Model B, MockFactory's default.
    """
    header = PiBoardInfo.from_revision(0xA02082).headers["J8"]
    pins: dict[int, int] = {}
    for number, info in header.pins.items():
        if info.name.startswith("GPIO"):
            pins[int(info.name[4:])] = number
    return pins


J8_PIN_OF_BCM: Mapping[int, int] = _j8_header_pins()


class OutputPin(BaseModel):
    """One output of the gate and how it is wired."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bcm: int = Field(ge=0, le=27, description="GPIO number in BCM (Broadcom) numbering, as gpiozero uses it: 0..27.")
    header_pin: int = Field(
        ge=1, le=40, description="Physical pin on the 40-pin J8 header that carries this GPIO; must match bcm."
    )
    active_low: bool = Field(
        False, description="True when the part switches on with the pin LOW (most relay modules); LEDs and buzzer are "
                           "active-high."
    )
    part: str = Field("", description="What is connected, for the technician (part, series resistor, driver "
                                      "transistor).")

    @model_validator(mode="after")
    def _header_matches_bcm(self) -> OutputPin:
        expected = J8_PIN_OF_BCM[self.bcm]
        if self.header_pin != expected:
            raise ValueError(f"header_pin {self.header_pin} does not carry GPIO{self.bcm} (BCM {self.bcm} is J8 pin "
                             f"{expected})")
        return self


class BoardProfile(BaseModel):
    """The gate's outputs on one board layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Short name of the layout, e.g. 'rpi-gate-v1'.")
    description: str = Field("", description="What the layout is and which boards it fits.")
    green: OutputPin = Field(description="Green LED: the pass is accepted.")
    red: OutputPin = Field(description="Red LED: the code is rejected.")
    buzzer: OutputPin = Field(description="Active buzzer (on/off, its own oscillator), usually through a transistor.")
    relay: OutputPin | None = Field(None, description="Optional relay for a door strike or turnstile; absent when not "
                                                      "fitted.")

    @model_validator(mode="after")
    def _each_pin_once(self) -> BoardProfile:
        users: dict[int, str] = {}
        for name in OUTPUT_NAMES:
            output = getattr(self, name)
            if output is None:
                continue
            if output.bcm in users:
                raise ValueError(f"GPIO{output.bcm} is used by both {users[output.bcm]} and {name}")
            users[output.bcm] = name
        return self

    def outputs(self) -> dict[str, OutputPin]:
        """The fitted outputs by name (the relay only when present)."""
        return {name: pin for name in OUTPUT_NAMES if (pin := getattr(self, name)) is not None}


# Where an installed gate keeps hardware/ (firmware/README.md installs it there): a wheel installed
# into /opt/qrgate/venv has no checkout beside it.
INSTALLED_HARDWARE_DIR = Path("/usr/share/qrgate/hardware")


def profiles_dir() -> Path:
    """The directory bare profile names resolve in: $QRGATE_HARDWARE_DIR, this checkout, or /usr/share/qrgate."""
    override = os.environ.get(HARDWARE_DIR_ENV)
    if override:
        return Path(override) / "profiles"
    checkout = Path(__file__).resolve().parents[2] / "hardware" / "profiles"
    if checkout.is_dir() or not INSTALLED_HARDWARE_DIR.is_dir():
        return checkout
    return INSTALLED_HARDWARE_DIR / "profiles"


def profile_names() -> list[str]:
    """Names of the profiles available as bare names, sorted."""
    directory = profiles_dir()
    if not directory.is_dir():
        return []
    return sorted(path.stem for path in directory.glob("*.toml"))


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".toml"):
        return Path(name_or_path)
    if not _PROFILE_NAME.match(text):
        raise BoardProfileError(f"{text!r}: not a profile name (lower-case letters, digits, '-' and '_') nor a path to "
                                "a .toml file")
    return profiles_dir() / f"{text}.toml"


def load_board_profile(
    name_or_path: str | Path,
    pin_overrides: Mapping[str, int | None] | None = None,
    relay_active_low: bool | None = None,
) -> BoardProfile:
    """Load a profile by bare name (``hardware/profiles/<name>.toml``) or path, then apply overrides.

    ``pin_overrides`` maps output names (green, red, buzzer, relay) to BCM numbers; ``None`` removes
    the relay. An overridden pin's header_pin is derived from its BCM number. ``relay_active_low``
    replaces the relay's polarity. Every problem raises BoardProfileError naming the file and field.
    """
    path = _resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        available = ", ".join(profile_names()) or "none"
        raise BoardProfileError(
            f"{path}: no such board profile (available in {profiles_dir()}: {available}; set {HARDWARE_DIR_ENV} to "
            "look elsewhere)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BoardProfileError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BoardProfileError(f"{path}: not valid TOML: {exc}") from None
    profile = _validate(data, str(path))
    if pin_overrides or relay_active_low is not None:
        profile = apply_overrides(profile, pin_overrides or {}, relay_active_low, source=f"{path} with overrides")
    return profile


def apply_overrides(
    profile: BoardProfile,
    pin_overrides: Mapping[str, int | None],
    relay_active_low: bool | None = None,
    *,
    source: str = "pin overrides",
) -> BoardProfile:
    """A copy of ``profile`` with outputs moved to other BCM pins, the relay removed or its polarity changed."""
    data: dict[str, Any] = profile.model_dump()
    for name, bcm in pin_overrides.items():
        if name not in OUTPUT_NAMES:
            raise BoardProfileError(f"{source}: pins.{name}: unknown output (known: {', '.join(OUTPUT_NAMES)})")
        if bcm is None:
            if name not in _REMOVABLE_OUTPUTS:
                raise BoardProfileError(f"{source}: pins.{name}: only the relay can be removed")
            data[name] = None
            continue
        if isinstance(bcm, bool) or not isinstance(bcm, int) or bcm not in J8_PIN_OF_BCM:
            raise BoardProfileError(f"{source}: pins.{name}: {bcm!r} is not a BCM GPIO number (0..27)")
        if data[name] is None:
            # A relay added by override has no polarity in the profile, and guessing wrong leaves the
            # door strike energised whenever the gate is idle: the technician must say which it is.
            if relay_active_low is None:
                raise BoardProfileError(
                    f"{source}: pins.{name}: profile {profile.name!r} has no {name}; set relay_active_low too"
                )
            data[name] = {"bcm": bcm, "header_pin": J8_PIN_OF_BCM[bcm], "part": "added by configuration"}
        else:
            data[name] = {**data[name], "bcm": bcm, "header_pin": J8_PIN_OF_BCM[bcm]}
    if relay_active_low is not None and data["relay"] is not None:
        data["relay"] = {**data["relay"], "active_low": relay_active_low}
    return _validate(data, source)


def _validate(data: dict[str, Any], source: str) -> BoardProfile:
    try:
        return BoardProfile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            dotted = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = "unknown key (check the spelling)" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{source}: {dotted}: {message}")
        raise BoardProfileError("\n".join(problems)) from None
