"""GateFeedback and its terminal view on gpiozero's MockFactory: exact pin histories of every pattern.

A MockPin records ``states``: one (timestamp, state) per level change, the first being the level
before the device claimed the pin; ``timestamp`` is the time since the previous change. Patterns
run on gpiozero's threads, so the tests wait for the expected number of changes (with a generous
deadline) and then assert the whole history, which also proves nothing else was written.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from gpiozero import LED
from gpiozero.pins.mock import MockFactory, MockPin
from rich.console import Console

from qrgate.board import BoardProfile, load_board_profile
from qrgate.errors import FeedbackUnavailable
from qrgate.feedback import FeedbackPatterns, GateFeedback, Outcome, default_pin_factory
from qrgate_tools.terminal_view import FeedbackView, OutputStates, render_plain, render_rich

GREEN, RED, BUZZER, RELAY = 17, 27, 22, 5  # rpi-gate-v1
FAST = FeedbackPatterns(accepted_on_s=0.05, rejected_on_s=0.05, beep_s=0.02, relay_pulse_s=0.04)
LONG = FeedbackPatterns(accepted_on_s=10, rejected_on_s=10, beep_s=2, relay_pulse_s=30)  # cancelled, never waited for
DEADLINE_S = 10.0


def levels(pin: MockPin) -> list[bool]:
    return [bool(entry.state) for entry in pin.states]


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def wait_for_changes(pin: MockPin, count: int) -> list[bool]:
    wait_for(lambda: len(pin.states) >= count, f"{count} states on {pin}, have {levels(pin)}")
    return levels(pin)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    mock = MockFactory()
    yield mock
    mock.reset()


@pytest.fixture
def gate_v1() -> BoardProfile:
    return load_board_profile("rpi-gate-v1")


def test_accepted_pattern(factory: MockFactory, gate_v1: BoardProfile) -> None:
    with GateFeedback(gate_v1, pin_factory=factory, patterns=FAST) as feedback:
        feedback.show(Outcome.ACCEPTED)
        assert wait_for_changes(factory.pin(GREEN), 3) == [False, True, False]
        assert wait_for_changes(factory.pin(BUZZER), 3) == [False, True, False]
        # active-low relay: released (high) when claimed, pulled low for the pulse, high again
        assert wait_for_changes(factory.pin(RELAY), 4) == [False, True, False, True]
        assert levels(factory.pin(RED)) == [False]
        # Lower bounds only: each output stayed on at least as long as configured.
        assert factory.pin(GREEN).states[2].timestamp >= FAST.accepted_on_s - 0.001
        assert factory.pin(BUZZER).states[2].timestamp >= FAST.beep_s - 0.001
        assert factory.pin(RELAY).states[3].timestamp >= FAST.relay_pulse_s - 0.001


def test_rejected_pattern(factory: MockFactory, gate_v1: BoardProfile) -> None:
    with GateFeedback(gate_v1, pin_factory=factory, patterns=FAST) as feedback:
        feedback.show(Outcome.REJECTED)
        assert wait_for_changes(factory.pin(RED), 3) == [False, True, False]
        assert wait_for_changes(factory.pin(BUZZER), 7) == [False, True, False, True, False, True, False]
        assert levels(factory.pin(GREEN)) == [False]
        assert levels(factory.pin(RELAY)) == [False, True]  # claimed released, never pulsed
        assert factory.pin(RED).states[2].timestamp >= FAST.rejected_on_s - 0.001
        for beep_end in (2, 4, 6):
            assert factory.pin(BUZZER).states[beep_end].timestamp >= FAST.beep_s - 0.001


def test_show_returns_before_the_pattern_ends(factory: MockFactory, gate_v1: BoardProfile) -> None:
    with GateFeedback(gate_v1, pin_factory=factory, patterns=LONG) as feedback:
        feedback.show(Outcome.ACCEPTED)
        # A 10 s pattern: had show() waited for it, the history would already end in "off".
        assert levels(factory.pin(GREEN)) in ([False], [False, True])
        wait_for(lambda: feedback.green.is_lit, "green lit")
        assert levels(factory.pin(GREEN)) == [False, True]
        feedback.all_off()
        assert levels(factory.pin(GREEN)) == [False, True, False]
        assert levels(factory.pin(RELAY)) == [False, True, False, True]


def test_rejection_cancels_a_running_acceptance(factory: MockFactory, gate_v1: BoardProfile) -> None:
    patterns = FeedbackPatterns(accepted_on_s=10, relay_pulse_s=30, accepted_beeps=0, rejected_on_s=0.05, beep_s=0.02)
    with GateFeedback(gate_v1, pin_factory=factory, patterns=patterns) as feedback:
        feedback.show(Outcome.ACCEPTED)
        wait_for(lambda: feedback.green.is_lit and feedback.relay.is_active, "green lit and relay energised")
        feedback.show(Outcome.REJECTED)
        assert not feedback.green.is_lit  # off before show() returned
        assert levels(factory.pin(GREEN)) == [False, True, False]
        assert levels(factory.pin(RELAY)) == [False, True, False, True]  # fails closed: relay released
        assert wait_for_changes(factory.pin(RED), 3) == [False, True, False]
        assert wait_for_changes(factory.pin(BUZZER), 7) == [False, True, False, True, False, True, False]


def test_the_same_outcome_again_restarts_its_pattern(factory: MockFactory, gate_v1: BoardProfile) -> None:
    with GateFeedback(gate_v1, pin_factory=factory, patterns=LONG) as feedback:
        feedback.show(Outcome.ACCEPTED)
        wait_for(lambda: feedback.green.is_lit, "green lit")
        feedback.show(Outcome.ACCEPTED)
        wait_for(lambda: len(factory.pin(GREEN).states) == 4, "green lit again")
        assert levels(factory.pin(GREEN)) == [False, True, False, True]


@pytest.mark.parametrize(("active_low", "idle", "energised"), [(True, True, False), (False, False, True)])
def test_relay_polarity_is_applied_to_the_physical_pin(
    factory: MockFactory, active_low: bool, idle: bool, energised: bool
) -> None:
    profile = load_board_profile("rpi-gate-v1", relay_active_low=active_low)
    with GateFeedback(profile, pin_factory=factory, patterns=LONG) as feedback:
        relay_pin = factory.pin(RELAY)
        assert feedback.relay.value == 0 and relay_pin.state == idle
        feedback.show(Outcome.ACCEPTED)
        wait_for(lambda: feedback.relay.is_active, "relay energised")
        assert relay_pin.state == energised
        feedback.all_off()
        assert feedback.relay.value == 0 and relay_pin.state == idle


def test_close_switches_off_and_releases_every_pin(factory: MockFactory, gate_v1: BoardProfile) -> None:
    feedback = GateFeedback(gate_v1, pin_factory=factory, patterns=LONG)
    feedback.show(Outcome.ACCEPTED)
    wait_for(lambda: feedback.green.is_lit and feedback.buzzer.is_active, "pattern running")
    feedback.close()
    assert feedback.closed
    for device in (feedback.green, feedback.red, feedback.buzzer, feedback.relay):
        assert device.closed
    off_level = {GREEN: False, RED: False, BUZZER: False, RELAY: True}
    for number, level in off_level.items():
        pin = factory.pin(number)
        assert pin.function == "input"
        assert pin.state == level
    assert levels(factory.pin(GREEN)) == [False, True, False]
    assert levels(factory.pin(BUZZER)) == [False, True, False]
    # Closed: further calls change nothing, and the pins can be claimed again.
    feedback.show(Outcome.REJECTED)
    feedback.all_off()
    feedback.close()
    assert levels(factory.pin(RED)) == [False]
    with GateFeedback(gate_v1, pin_factory=factory, patterns=FAST) as again:
        assert again.green.pin is factory.pin(GREEN)


def test_a_busy_pin_is_named_and_claimed_pins_are_released(factory: MockFactory, gate_v1: BoardProfile) -> None:
    squatter = LED(RED, pin_factory=factory)
    with pytest.raises(FeedbackUnavailable, match=r"GPIO27 \(J8 pin 13\) for the red of board profile 'rpi-gate-v1'"):
        GateFeedback(gate_v1, pin_factory=factory)
    assert factory.pin(GREEN).function == "input"
    LED(GREEN, pin_factory=factory).close()  # the green pin was given back
    squatter.close()


def test_no_beeps_and_no_relay(factory: MockFactory) -> None:
    patterns = FeedbackPatterns(accepted_on_s=0.03, accepted_beeps=0)
    profile = load_board_profile("rpi-traffic-hat")
    with GateFeedback(profile, pin_factory=factory, patterns=patterns) as feedback:
        assert feedback.relay is None
        feedback.show(Outcome.ACCEPTED)
        assert wait_for_changes(factory.pin(profile.green.bcm), 3) == [False, True, False]
        assert levels(factory.pin(profile.buzzer.bcm)) == [False]


def test_default_pin_factory() -> None:
    assert isinstance(default_pin_factory(mock=True), MockFactory)
    assert default_pin_factory(mock=False) is None


def test_patterns_model_is_strict_and_described() -> None:
    assert all(field.description for field in FeedbackPatterns.model_fields.values())
    with pytest.raises(ValueError):
        FeedbackPatterns(accepted_on_s=0)
    with pytest.raises(ValueError):
        FeedbackPatterns(beeps=2)


# --- terminal view -------------------------------------------------------------------------


def render(view: object, *, terminal: bool) -> str:
    console = Console(file=io.StringIO(), force_terminal=terminal, color_system="standard" if terminal else None,
                      width=80)
    console.print(view)
    return console.file.getvalue()


def test_terminal_view_reads_the_devices(factory: MockFactory, gate_v1: BoardProfile) -> None:
    with GateFeedback(gate_v1, pin_factory=factory) as feedback:
        view = FeedbackView(feedback)
        assert OutputStates.read(feedback) == OutputStates(green=False, red=False, buzzer=False, relay=False)
        assert render(view, terminal=False) == "green=off red=off buzzer=off relay=off\n"

        feedback.green.on()
        feedback.buzzer.on()
        states = OutputStates.read(feedback)
        assert states == OutputStates(green=True, red=False, buzzer=True, relay=False)
        text = render_rich(states)
        assert text.plain == "● GREEN  ○ RED  ♪ BUZZER  ▯ RELAY"
        assert [(text.plain[span.start : span.end], str(span.style)) for span in text.spans] == [
            ("● GREEN", "bold green"),
            ("○ RED", "dim"),
            ("♪ BUZZER", "bold yellow"),
            ("▯ RELAY", "dim"),
        ]
        coloured = render(view, terminal=True)
        assert "\x1b[" in coloured and "● GREEN" in coloured and "▯ RELAY" in coloured
        assert render(view, terminal=False) == "green=ON red=off buzzer=ON relay=off\n"

        feedback.all_off()
        feedback.red.on()
        feedback.relay.on()
        assert render_rich(OutputStates.read(feedback)).plain == "○ GREEN  ● RED  · BUZZER  ▮ RELAY"
    assert render(view, terminal=False) == "green=off red=off buzzer=off relay=off\n"  # closed: all released


def test_terminal_view_without_a_relay(factory: MockFactory) -> None:
    with GateFeedback(load_board_profile("rpi-traffic-hat"), pin_factory=factory) as feedback:
        feedback.red.on()
        states = OutputStates.read(feedback)
        assert states.relay is None
        assert render_rich(states).plain == "○ GREEN  ● RED  · BUZZER"
        assert render_plain(states) == "green=off red=ON buzzer=off"


def test_identified_pattern_flashes_green_with_two_beeps(factory: MockFactory, gate_v1: BoardProfile) -> None:
    patterns = FeedbackPatterns(accepted_on_s=0.08, beep_s=0.02, relay_pulse_s=0.04)
    with GateFeedback(gate_v1, pin_factory=factory, patterns=patterns) as feedback:
        feedback.show(Outcome.IDENTIFIED)
        flashes = round(0.08 / (2 * 0.02))  # 2
        assert wait_for_changes(factory.pin(GREEN), 1 + 2 * flashes) == [False] + [True, False] * flashes
        assert wait_for_changes(factory.pin(BUZZER), 5) == [False, True, False, True, False]
        assert wait_for_changes(factory.pin(RELAY), 4) == [False, True, False, True]  # active-low pulse
        assert levels(factory.pin(RED)) == [False]
    assert len(factory.pin(GREEN).states) == 1 + 2 * flashes
    assert len(factory.pin(BUZZER).states) == 5
