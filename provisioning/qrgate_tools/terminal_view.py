"""The gate's outputs drawn in a terminal, for the demo's live display (and a plain line for logs).

``FeedbackView`` is a rich renderable that reads the gpiozero devices each time it is drawn, so a
``rich.live.Live`` shows the LEDs, buzzer and relay as they change on gpiozero's pattern threads.
On a console that is not a terminal it renders ASCII, e.g. ``green=ON red=off buzzer=off relay=off``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpiozero.exc import GPIODeviceClosed
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from qrgate.feedback import GateFeedback


@dataclass(frozen=True, slots=True)
class OutputStates:
    green: bool
    red: bool
    buzzer: bool
    relay: bool | None  # None: no relay fitted

    @classmethod
    def read(cls, feedback: GateFeedback) -> OutputStates:
        """The current states; all off once the feedback is closed (a live display may outlive it)."""
        try:
            relay = feedback.relay
            return cls(
                green=feedback.green.is_active,
                red=feedback.red.is_active,
                buzzer=feedback.buzzer.is_active,
                relay=None if relay is None else relay.is_active,
            )
        except GPIODeviceClosed:
            return cls(green=False, red=False, buzzer=False, relay=None if feedback.profile.relay is None else False)


# (label, symbol when on, symbol when off, style when on)
_GLYPHS = {
    "green": ("GREEN", "●", "○", "bold green"),
    "red": ("RED", "●", "○", "bold red"),
    "buzzer": ("BUZZER", "♪", "·", "bold yellow"),
    "relay": ("RELAY", "▮", "▯", "bold cyan"),
}


def _fitted(states: OutputStates) -> list[tuple[str, bool]]:
    outputs = [("green", states.green), ("red", states.red), ("buzzer", states.buzzer)]
    if states.relay is not None:
        outputs.append(("relay", states.relay))
    return outputs


def render_rich(states: OutputStates) -> Text:
    """``● GREEN  ○ RED  ♪ BUZZER  ▯ RELAY``, lit outputs in colour, dark ones dimmed."""
    text = Text()
    for index, (name, on) in enumerate(_fitted(states)):
        label, on_symbol, off_symbol, on_style = _GLYPHS[name]
        if index:
            text.append("  ")
        text.append(f"{on_symbol if on else off_symbol} {label}", style=on_style if on else "dim")
    return text


def render_plain(states: OutputStates) -> str:
    """ASCII for logs and pipes: ``green=ON red=off buzzer=off relay=off``."""
    return " ".join(f"{name}={'ON' if on else 'off'}" for name, on in _fitted(states))


class FeedbackView:
    """A rich renderable of the gate's outputs, re-read from the devices every time it is drawn."""

    def __init__(self, feedback: GateFeedback) -> None:
        self._feedback = feedback

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        states = OutputStates.read(self._feedback)
        yield render_rich(states) if console.is_terminal else Text(render_plain(states))
