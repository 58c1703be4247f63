"""What the visitor sees and hears: green LED, red LED, buzzer, and the optional gate relay.

Patterns run on gpiozero's own background threads (``blink(..., background=True)``), so ``show()``
returns at once and the capture loop keeps reading frames while the LED is lit. A new outcome
cancels the running one first: the green LED goes dark the moment the red one starts.

Off a Raspberry Pi, ``default_pin_factory(mock=True)`` gives gpiozero's MockFactory, whose pins
record every level change (demo, tests); setting ``GPIOZERO_PIN_FACTORY=mock`` in the environment
does the same for code that passes no factory.
"""

from __future__ import annotations

import enum
import threading
from typing import TypeVar

from gpiozero import LED, Buzzer, DigitalOutputDevice
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory

from .board import BoardProfile, OutputPin, load_board_profile
from .config import FeedbackConfig, PatternConfig
from .errors import FeedbackUnavailable

_Device = TypeVar("_Device", bound=DigitalOutputDevice)


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    # An unsigned ID card read under a policy that admits it: the person is known, the card is not
    # proven. Its own pattern, so a guard can tell it from a verified pass at a glance.
    IDENTIFIED = "identified"


# The timings are a config table; one model serves both the TOML file and the feedback driver.
FeedbackPatterns = PatternConfig


def default_pin_factory(mock: bool) -> Factory | None:
    """gpiozero's MockFactory when ``mock``; otherwise None, which lets gpiozero choose the real pin library."""
    return MockFactory() if mock else None


def configured_profile(feedback: FeedbackConfig) -> BoardProfile:
    """The ``[feedback]`` section's board profile with its pin overrides (no relay unless ``relay`` is on)."""
    pins: dict[str, int | None] = dict(feedback.pins)
    if not feedback.relay:
        pins["relay"] = None
    return load_board_profile(feedback.board, pins, feedback.relay_active_low)


class GateFeedback:
    """The gate's outputs, driven from a board profile. Context manager; ``close()`` is idempotent.

    ``pin_factory`` is gpiozero's seam: None uses gpiozero's default (lgpio on a Pi 5, and whatever
    ``GPIOZERO_PIN_FACTORY`` names), a MockFactory records pin levels instead of driving hardware.
    """

    @classmethod
    def from_config(cls, feedback: FeedbackConfig, pin_factory: Factory | None = None) -> GateFeedback:
        """The outputs a ``[feedback]`` section describes; ``pin_factory`` None: mock pins if it says so, else
        gpiozero's default."""
        if pin_factory is None:
            pin_factory = default_pin_factory(mock=feedback.mock_pins)
        return cls(configured_profile(feedback), pin_factory=pin_factory, patterns=feedback.patterns)

    def __init__(
        self,
        profile: BoardProfile,
        *,
        pin_factory: Factory | None = None,
        patterns: FeedbackPatterns | None = None,
    ) -> None:
        self.profile = profile
        self.patterns = patterns or FeedbackPatterns()
        self._lock = threading.Lock()
        self._closed = False
        self._devices: list[DigitalOutputDevice] = []
        try:
            self._green = self._claim(LED, "green", profile.green, pin_factory)
            self._red = self._claim(LED, "red", profile.red, pin_factory)
            self._buzzer = self._claim(Buzzer, "buzzer", profile.buzzer, pin_factory)
            self._relay = (
                self._claim(DigitalOutputDevice, "relay", profile.relay, pin_factory)
                if profile.relay is not None else None
            )
        except FeedbackUnavailable:
            self._release()
            raise

    def _claim(self, device_class: type[_Device], name: str, pin: OutputPin, pin_factory: Factory | None) -> _Device:
        try:
            device: _Device = device_class(pin.bcm, active_high=not pin.active_low, initial_value=False,
                                           pin_factory=pin_factory)
        # Each pin library (lgpio, RPi.GPIO, pigpio, native) raises its own exception types for a
        # missing chip or a busy line; this runs once at start-up, so catch them all and name the pin.
        except Exception as exc:
            raise FeedbackUnavailable(
                f"cannot claim GPIO{pin.bcm} (J8 pin {pin.header_pin}) for the {name} of board profile "
                f"{self.profile.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        self._devices.append(device)
        return device

    @property
    def green(self) -> LED:
        return self._green

    @property
    def red(self) -> LED:
        return self._red

    @property
    def buzzer(self) -> Buzzer:
        return self._buzzer

    @property
    def relay(self) -> DigitalOutputDevice | None:
        return self._relay

    @property
    def closed(self) -> bool:
        return self._closed

    def show(self, outcome: Outcome) -> None:
        """Start the pattern for ``outcome`` and return at once; a running pattern is cut short first.

        Showing the same outcome again restarts its pattern. A rejection also releases a relay still
        energised by the previous acceptance (the gate fails closed). After ``close()`` this does nothing,
        so a capture loop that is still finishing its last frame cannot crash the shutdown.
        """
        patterns = self.patterns
        with self._lock:
            if self._closed:
                return
            self._off_locked()
            if outcome is Outcome.ACCEPTED:
                self._green.blink(on_time=patterns.accepted_on_s, off_time=0, n=1, background=True)
                if patterns.accepted_beeps:
                    self._buzzer.beep(on_time=patterns.beep_s, off_time=patterns.beep_s, n=patterns.accepted_beeps,
                                      background=True)
                if self._relay is not None:
                    self._relay.blink(on_time=patterns.relay_pulse_s, off_time=0, n=1, background=True)
            elif outcome is Outcome.IDENTIFIED:
                # Green flashing (not steady) with two beeps: admitted, but on an unverified document.
                flashes = max(1, round(patterns.accepted_on_s / (2 * patterns.beep_s)))
                self._green.blink(on_time=patterns.beep_s, off_time=patterns.beep_s, n=flashes, background=True)
                self._buzzer.beep(on_time=patterns.beep_s, off_time=patterns.beep_s, n=2, background=True)
                if self._relay is not None and patterns.identified_opens_relay:
                    self._relay.blink(on_time=patterns.relay_pulse_s, off_time=0, n=1, background=True)
            else:
                self._red.blink(on_time=patterns.rejected_on_s, off_time=0, n=1, background=True)
                if patterns.rejected_beeps:
                    self._buzzer.beep(on_time=patterns.beep_s, off_time=patterns.beep_s, n=patterns.rejected_beeps,
                                      background=True)

    def all_off(self) -> None:
        """Stop any pattern and switch every output off (relay released)."""
        with self._lock:
            if not self._closed:
                self._off_locked()

    def _off_locked(self) -> None:
        # off() also stops and joins the device's blink thread, which wakes from its wait at once.
        for device in self._devices:
            device.off()

    def close(self) -> None:
        """Switch everything off, then release the pins (they return to inputs)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def _release(self) -> None:
        # gpiozero's close() releases a pin in whatever state it was; switch off first so an LED
        # or an energised relay is not left latched by a pin factory that keeps the last level.
        for device in self._devices:
            device.off()
            device.close()
        self._devices.clear()

    def __enter__(self) -> GateFeedback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
