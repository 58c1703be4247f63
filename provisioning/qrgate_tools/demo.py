"""The demo gate: a whole check-in point on one machine.

It starts its own Mosquitto on a free loopback port and mints a demo issuer with its passes. Then it runs
the real daemon (``GateService``) on the synthetic gate scene with gpiozero's mock pins, judging DCCs by
the built-in validation rules (Vietnam's 2021-22 policy): a genuine positive test or dose 1 of 2 is red. A subscriber on
the broker plays the provincial backend. The terminal shows the LEDs and buzzer, each verdict and each
event that reaches the subscriber, and a summary at the end. Nothing here is a stand-in for the
daemon's own code: the demo only builds the inputs and watches the outputs.
"""

from __future__ import annotations

import base64
import json
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import paho.mqtt.client as mqtt
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from qrgate import wire
from qrgate.config import GateConfig
from qrgate.decision import Action
from qrgate.feedback import Outcome
from qrgate.frames.synthetic import Medium, SyntheticGate, Visit
from qrgate.gate import Presentation
from qrgate.service import GateService

from .broker import MosquittoBroker
from .terminal_view import FeedbackView

DAY_S = 86_400
_MARK = {Outcome.ACCEPTED: "✔", Outcome.IDENTIFIED: "◐", Outcome.REJECTED: "✘"}


@dataclass(frozen=True, slots=True)
class DemoVisitor:
    label: str  # what the visitor holds, for the display; never a name
    payload: str
    expected: str  # the verdict reason the gate should show
    medium: Medium = "phone"


def demo_visitors(trust_dir: Path, now: float) -> list[DemoVisitor]:
    """Mint a demo issuer and write its trust anchors into ``trust_dir``; return the visitor queue."""
    from cryptography.hazmat.primitives import serialization

    from qrgate_provisioning.dcc_test_issuer import dcc_rule_cases, dcc_test_set
    from qrgate_provisioning.keys import IssuerKey, new_issuer_key, trust_entry, trust_file
    from qrgate_provisioning.mint import mint_qrgate_pass

    trust_dir.mkdir(parents=True, exist_ok=True)
    dcc = dcc_test_set(now)
    for issuer in dcc.trusted:
        assert issuer.certificate is not None  # a DCC issuer signs with a certificate
        name = f"dcc-{issuer.alg.lower()}-{issuer.kid.hex()}.pem"
        (trust_dir / name).write_bytes(issuer.certificate.public_bytes(serialization.Encoding.PEM))
    province_ed = new_issuer_key("VN-DEMO", "EdDSA")
    province_es = new_issuer_key("VN-DEMO", "ES256")
    stranger = new_issuer_key("XX-UNKNOWN", "EdDSA")
    (trust_dir / "qrgate-issuers.json").write_text(
        trust_file([trust_entry(province_ed, formats=["qrgate"]), trust_entry(province_es, formats=["qrgate"])])
    )
    iat, exp = int(now) - 3600, int(now) + 30 * DAY_S

    def qrgate_pass(key: IssuerKey, pass_number: int, initials: str) -> str:
        return mint_qrgate_pass(
            key, key.issuer, pass_id=pass_number.to_bytes(8, "big"),
            subject_id=base64.b32encode(pass_number.to_bytes(10, "big")).decode().rstrip("="),
            iat=iat, exp=exp, initials=initials,
        )

    twice = qrgate_pass(province_ed, 1009, "T.V.H")
    # Genuine and in force, signed by a trusted issuer: only the validation rules refuse these two.
    rule_cases = dcc_rule_cases(dcc.trusted[1], now)
    return [
        DemoVisitor("vaccine passport HC1, PS256", dcc.passes["valid_ps256"], "accepted"),
        DemoVisitor("qrgate pass, Ed25519, printed card", qrgate_pass(province_ed, 1001, "N.T.A"), "accepted", "paper"),
        DemoVisitor("vaccine passport HC1, ES256", dcc.passes["valid_es256"], "accepted"),
        DemoVisitor("a plain URL", "https://example.com/menu", "not_a_pass"),
        DemoVisitor("expired vaccine passport", dcc.passes["expired"], "expired"),
        DemoVisitor("qrgate pass, ES256", qrgate_pass(province_es, 1002, "L.M"), "accepted"),
        DemoVisitor("forged vaccine passport", dcc.passes["forged"], "bad_signature"),
        DemoVisitor("pass from an unknown issuer", qrgate_pass(stranger, 1003, "P.Q"), "unknown_issuer", "paper"),
        DemoVisitor("test certificate HC1, positive result", rule_cases["test_positive"], "test_positive"),
        DemoVisitor("vaccine passport HC1, dose 1 of 2", rule_cases["vaccination_incomplete"],
                    "vaccination_incomplete"),
        DemoVisitor("qrgate pass, printed card", twice, "accepted", "paper"),
        DemoVisitor("the same person again", twice, "accepted", "paper"),
    ]


class EventSubscriber:
    """The backend's side: every check-in of every device, de-duplicated by event id."""

    def __init__(self, host: str, port: int) -> None:
        self.events: dict[str, wire.CheckinEvent] = {}
        self.received = 0
        self.order: deque[wire.CheckinEvent] = deque(maxlen=12)
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="qrgate-demo-backend",
                                   protocol=mqtt.MQTTv5)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("the demo subscriber could not subscribe to the local broker")

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                    _props: object) -> None:
        client.subscribe(wire.ALL_CHECKINS, qos=1)

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        event = wire.CheckinEvent.from_json(bytes(message.payload))  # paho types it bytes | bytearray
        with self._lock:
            self.received += 1
            if event.event_id not in self.events:
                self.events[event.event_id] = event
                self.order.append(event)

    def wait_for(self, count: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.events) >= count:
                    break
            time.sleep(0.05)
        with self._lock:
            return len(self.events)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@dataclass
class DemoLog:
    """What the display shows; written by the capture loop's observer, read by the renderer."""

    lines: deque[str] = field(default_factory=lambda: deque(maxlen=12))
    mismatches: list[str] = field(default_factory=list)


class DemoSummary(TypedDict):
    visitors: int
    presentations: int
    accepted: int
    rejected: int
    events_stored: int
    events_published: int
    events_received: int
    duplicates_received: int
    lost: int
    mismatches: list[str]  # visitors whose verdict was not the expected one
    seconds: float


def run_demo(*, headless: bool, as_json: bool, camera: str = "synthetic", realtime: bool | None = None,
             console: Console | None = None) -> DemoSummary:
    """Run the whole demo and return its summary."""
    console = console or Console()
    interactive = not headless and console.is_terminal
    realtime = (not headless) if realtime is None else realtime
    with tempfile.TemporaryDirectory(prefix="qrgate-demo-") as tmp:
        root = Path(tmp)
        broker = MosquittoBroker(root / "broker").start()
        try:
            return _run_with_broker(broker, root, headless=headless, as_json=as_json, camera=camera,
                                    realtime=realtime, interactive=interactive, console=console)
        finally:
            broker.stop()


def _run_with_broker(broker: MosquittoBroker, root: Path, *, headless: bool, as_json: bool, camera: str,
                     realtime: bool, interactive: bool, console: Console) -> DemoSummary:
    now = time.time()
    visitors = demo_visitors(root / "trust", now)
    config = GateConfig.model_validate({
        "device": {"id": "gate-demo-01", "site_id": "demo-market", "gate": "main", "direction": "in"},
        "camera": {"source": "usb" if camera == "usb" else "synthetic"},
        "trust": {"paths": [str(root / "trust")]},
        "rules": {"baseline": "builtin"},  # the gate's default, said here because the demo's visitors depend on it
        "feedback": {"mock_pins": True},
        "outbox": {"path": str(root / "outbox.sqlite")},
        # The demo's broker listens on loopback only; the real uplink uses mTLS (docs/mqtt.md).
        "mqtt": {"host": broker.host, "port": broker.port, "tls": False, "ca_file": None, "cert_file": None,
                 "key_file": None, "reconnect_min_s": 0.2, "reconnect_max_s": 2.0},
        "service": {"stop_flush_s": 10.0},
    })
    log = DemoLog()
    source: SyntheticGate | None = None
    if camera == "synthetic":
        source = SyntheticGate(
            [Visit(v.payload, medium=v.medium, dwell_s=1.5, gap_s=1.2) for v in visitors],
            width=config.camera.width, height=config.camera.height, fps=config.camera.fps,
            realtime=realtime, seed=config.camera.seed,
        )
    else:
        passes_dir = _write_pass_images(visitors, root / "passes")
        console.print(f"Show these passes to the webcam (on a phone or printed), Ctrl-C to stop: {passes_dir}")
    subscriber = EventSubscriber(broker.host, broker.port)

    def observe(presentation: Presentation) -> None:
        verdict = presentation.verdict
        index = source.truth(presentation.frame.index) if source is not None else None
        label = visitors[index].label if index is not None else "a code"
        if index is not None and presentation.reason != visitors[index].expected:
            log.mismatches.append(
                f"visitor {index + 1}: expected {visitors[index].expected}, got {presentation.reason}")
        repeat = " (repeat: feedback only, no new event)" if presentation.action is Action.REPEAT else ""
        event = f" event seq {presentation.event.seq}" if presentation.event else ""
        line = f"{_MARK[presentation.outcome]} {presentation.reason:22} {verdict.format:7} {label}{event}{repeat}"
        log.lines.append(line)
        if not interactive and not headless:
            console.print(line, highlight=False)

    service = GateService(config, source=source, pin_factory=MockFactory(), on_outcome=observe)
    # A webcam never runs out of frames: Ctrl-C ends the demo the way SIGTERM ends the daemon.
    previous_handler = signal.signal(signal.SIGINT, lambda *_: service.request_stop())
    started = time.monotonic()
    try:
        if interactive:
            with Live(_LiveView(service, log, subscriber, broker), console=console, refresh_per_second=12):
                service.run()
        else:
            service.run()
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        service.close()
    stats = service.gate.stats
    stored = stats.presentations - stats.storage_errors
    received = subscriber.wait_for(stored, timeout_s=10.0)
    duplicates = subscriber.received - received
    subscriber.close()
    summary: DemoSummary = {
        "visitors": len(visitors),
        "presentations": stats.presentations + stats.repeats,
        "accepted": stats.accepted + stats.identified,
        "rejected": stats.rejected,
        "events_stored": stored,
        "events_published": service.uplink.stats.delivered if service.uplink else 0,
        "events_received": received,
        "duplicates_received": duplicates,
        "lost": max(0, stored - received),
        "mismatches": log.mismatches,
        "seconds": round(time.monotonic() - started, 1),
    }
    if as_json:
        print(json.dumps(summary))
    else:
        _print_summary(console, summary)
    return summary


def _write_pass_images(visitors: list[DemoVisitor], directory: Path) -> Path:
    import segno

    directory.mkdir(parents=True, exist_ok=True)
    for number, visitor in enumerate(visitors, start=1):
        name = "".join(c if c.isalnum() else "-" for c in visitor.label).strip("-")
        segno.make_qr(visitor.payload).save(str(directory / f"{number:02d}-{name}.png"), scale=6, border=4)
    return directory


class _LiveView:
    def __init__(self, service: GateService, log: DemoLog, subscriber: EventSubscriber,
                 broker: MosquittoBroker) -> None:
        self._service, self._log, self._subscriber, self._broker = service, log, subscriber, broker
        self._feedback_view = FeedbackView(service.feedback)

    def __rich__(self) -> Group:
        stats = self._service.gate.stats
        header = Text.assemble(
            ("qrgate demo", "bold"), f"  gate {self._service.config.device.id}",
            f"  broker {self._broker.host}:{self._broker.port}",
            f"  frames {stats.frames}  accepted {stats.accepted}  rejected {stats.rejected}",
        )
        verdicts = Table.grid(padding=(0, 1))
        for line in self._log.lines:
            verdicts.add_row(Text(line, style="red" if line.startswith(_MARK[Outcome.REJECTED]) else "green"))
        events = Table.grid(padding=(0, 1))
        for event in list(self._subscriber.order):
            events.add_row(f"seq {event.seq:3}  {event.reason:22} {event.format:7} "
                           f"{event.time}  id {event.event_id[:13]}…")
        return Group(
            header,
            Panel(self._feedback_view, title="gate outputs", expand=False),
            Panel(verdicts, title="verdicts at the gate"),
            Panel(events, title="events received by the backend subscriber"),
        )


def _print_summary(console: Console, summary: DemoSummary) -> None:
    table = Table(title="demo summary", show_header=False)
    figures: Mapping[str, object] = summary  # read by name below
    for key in ("visitors", "presentations", "accepted", "rejected", "events_stored", "events_published",
                "events_received", "duplicates_received", "lost", "seconds"):
        table.add_row(key.replace("_", " "), str(figures[key]))
    console.print(table)
    if summary["mismatches"]:
        console.print("[red]unexpected verdicts:[/red] " + "; ".join(summary["mismatches"]))
