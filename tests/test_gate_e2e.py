"""The whole gate, end to end: synthetic camera -> decode -> verify -> decide -> pins -> outbox -> Mosquitto.

Real parts only: a Mosquitto process on a free loopback port, SQLite on disk, gpiozero's MockFactory,
the daemon's own GateService. The capture loop runs on simulated time (the synthetic scene's
timestamps); the observer waits for each LED/buzzer pattern to finish before the next frame, so
the pin histories are exact and their lengths can be asserted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from qrgate.config import GateConfig
from qrgate.decision import Action
from qrgate.feedback import Outcome
from qrgate.frames.synthetic import SyntheticGate, Visit
from qrgate.gate import Presentation
from qrgate.service import GateService
from qrgate_provisioning.dcc_test_issuer import dcc_test_set
from qrgate_provisioning.keys import new_issuer_key, trust_entry, trust_file
from qrgate_provisioning.mint import mint_qrgate_pass
from qrgate_tools.broker import MosquittoBroker
from qrgate_tools.demo import EventSubscriber

GREEN, RED, BUZZER, RELAY = 17, 27, 22, 5  # hardware/profiles/rpi-gate-v1.toml
PATTERNS = {"accepted_on_s": 0.03, "accepted_beeps": 1, "rejected_on_s": 0.05, "rejected_beeps": 3,
            "beep_s": 0.01, "relay_pulse_s": 0.04}
DAY_S = 86_400


@pytest.fixture
def issued(tmp_path: Path) -> dict[str, str]:
    """Trust anchors in tmp_path/trust and one pass per case the gate must tell apart."""
    from cryptography.hazmat.primitives import serialization

    now = time.time()
    trust = tmp_path / "trust"
    trust.mkdir()
    dcc = dcc_test_set(now)
    for n, issuer in enumerate(dcc.trusted):
        (trust / f"dsc-{n}.pem").write_bytes(issuer.certificate.public_bytes(serialization.Encoding.PEM))
    province = new_issuer_key("VN-HN", "EdDSA")
    stranger = new_issuer_key("VN-XX", "ES256")
    (trust / "qrgate.json").write_text(trust_file([trust_entry(province, formats=["qrgate"])]))

    def qg(key, number: int, exp: int, iat: int | None = None) -> str:
        return mint_qrgate_pass(key, key.issuer, number.to_bytes(8, "big"), f"subject-{number}",
                                int(now) - 60 if iat is None else iat, exp, initials="T.T")

    return {
        "hc1_ps256": dcc.passes["valid_ps256"],
        "hc1_es256": dcc.passes["valid_es256"],
        "hc1_forged": dcc.passes["forged"],
        "qg_valid": qg(province, 1, int(now) + DAY_S),
        "qg_expired": qg(province, 2, int(now) - 3600, iat=int(now) - 86_400),  # beyond the 300 s clock-skew tolerance
        "qg_unknown": qg(stranger, 3, int(now) + DAY_S),
        "url": "https://example.com/",
    }


def gate_config(tmp_path: Path, broker_port: int, **service) -> GateConfig:
    return GateConfig.model_validate({
        "device": {"id": "gate-e2e-01", "site_id": "market-1", "gate": "east", "direction": "in"},
        "trust": {"paths": [str(tmp_path / "trust")]},
        "decision": {"presence_gap_s": 0.8, "repeat_window_s": 12.0},
        "feedback": {"patterns": PATTERNS},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "tls": False, "ca_file": None, "cert_file": None,
                 "key_file": None, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "service": {"stop_flush_s": service.get("stop_flush_s", 10.0)},
    })


def pin_levels(factory: MockFactory, number: int) -> list[int]:
    return [int(entry.state) for entry in factory.pin(number).states]


class PatternWaiter:
    """Observer that holds the capture loop until the pattern it just started has played out."""

    def __init__(self, factory: MockFactory, source: SyntheticGate) -> None:
        self.factory = factory
        self.source = source
        self.seen: list[tuple[int | None, str, Action]] = []
        self._expected = {GREEN: 1, RED: 1, BUZZER: 1, RELAY: 2}  # the active-low relay is claimed high

    def __call__(self, presentation: Presentation) -> None:
        self.seen.append((self.source.truth(presentation.frame.index), presentation.reason, presentation.action))
        changes = {GREEN: 2, BUZZER: 2, RELAY: 2} if presentation.outcome is Outcome.ACCEPTED else {RED: 2, BUZZER: 6}
        for pin, count in changes.items():
            self._expected[pin] += count
        deadline = time.monotonic() + 10
        while any(len(self.factory.pin(pin).states) < count for pin, count in self._expected.items()):
            assert time.monotonic() < deadline, f"pattern did not finish: {self._expected}"
            time.sleep(0.002)


def test_scripted_scene_gives_expected_verdicts_pins_and_one_event_per_presentation(tmp_path, issued):
    script = [
        ("hc1_ps256", "accepted", Action.NEW),
        ("qg_valid", "accepted", Action.NEW),
        ("url", "not_a_pass", Action.NEW),
        ("hc1_forged", "bad_signature", Action.NEW),
        ("qg_valid", "accepted", Action.REPEAT),  # again 7.5 s later, within repeat_window_s: no event
        ("qg_expired", "expired", Action.NEW),
        ("qg_unknown", "unknown_issuer", Action.NEW),
        ("hc1_es256", "accepted", Action.NEW),
        ("qg_valid", "accepted", Action.NEW),  # back 17.5 s after its first check-in: outside the window
    ]
    # Each visit: 1.0 s of empty scene, then the code for 1.5 s; the scene's clock is simulated.
    visits = [Visit(issued[name], dwell_s=1.5, gap_s=1.0, medium="paper" if name.startswith("qg") else "phone")
              for name, _, _ in script]
    factory = MockFactory()
    with MosquittoBroker(tmp_path / "broker") as broker:
        subscriber = EventSubscriber(broker.host, broker.port)
        source = SyntheticGate(visits, realtime=False, seed=3)
        waiter = PatternWaiter(factory, source)
        service = GateService(gate_config(tmp_path, broker.port), source=source, pin_factory=factory,
                              on_outcome=waiter)
        service.run()
        expected_events = sum(1 for _, _, action in script if action is Action.NEW)
        assert subscriber.wait_for(expected_events, timeout_s=15) == expected_events
        time.sleep(0.3)  # a duplicate would arrive right behind the originals
        subscriber.close()

    assert service.stopped_by_eof
    assert waiter.seen == [(index, reason, action) for index, (_, reason, action) in enumerate(script)]

    accepted = sum(1 for _, reason, _ in script if reason == "accepted")
    rejected = len(script) - accepted
    assert pin_levels(factory, GREEN) == [0] + [1, 0] * accepted
    # The relay module is active-low: claimed high (off), then each pulse drives it low.
    assert pin_levels(factory, RELAY) == [0, 1] + [0, 1] * accepted
    assert pin_levels(factory, RED) == [0] + [1, 0] * rejected
    buzzer = pin_levels(factory, BUZZER)
    assert len(buzzer) == 1 + 2 * accepted + 6 * rejected
    assert buzzer == [0] + [1, 0] * (accepted + 3 * rejected)

    events = sorted(subscriber.events.values(), key=lambda event: event.seq)
    assert subscriber.received == expected_events  # nothing published twice
    assert [event.seq for event in events] == list(range(1, expected_events + 1))
    assert [event.reason for event in events] == [reason for _, reason, action in script if action is Action.NEW]
    assert len({event.event_id for event in events}) == expected_events
    assert [event.event_id for event in events] == sorted(event.event_id for event in events)
    for event in events:
        assert ((event.device_id, event.site_id, event.gate, event.direction)
                == ("gate-e2e-01", "market-1", "east", "in"))
        assert (event.subject_id is not None) == (event.verdict == "accepted" and event.format == "qrgate")
    qrgate_ok = [event for event in events if event.format == "qrgate" and event.verdict == "accepted"]
    assert {event.subject_id for event in qrgate_ok} == {"subject-1"}
    # the issuer is reported only once the signature proved it
    assert {event.issuer for event in events if event.format == "dcc" and event.verdict == "accepted"} == {"VN"}
    # No personal data on the wire: the DCC holder's name and birth date stay on the phone.
    wire_text = json.dumps([event.model_dump() for event in events], ensure_ascii=False)
    assert "Nguy" not in wire_text and "1990-01-01" not in wire_text


def test_events_pending_at_stop_are_sent_after_restart_and_never_twice_with_different_ids(tmp_path, issued):
    with MosquittoBroker(tmp_path / "broker") as broker:
        port = broker.port
    # Broker down: the gate still answers and stores; the events wait in the outbox.
    first = [Visit(issued[name], dwell_s=1.0, gap_s=1.0) for name in ("hc1_ps256", "qg_valid", "url")]
    config = gate_config(tmp_path, port, stop_flush_s=0.3)
    service = GateService(config, source=SyntheticGate(first, realtime=False, seed=1), pin_factory=MockFactory())
    service.run()
    assert service.gate.stats.presentations == 3
    from qrgate.outbox import Outbox

    with Outbox(Path(config.outbox.path)) as outbox:
        pending_ids = [row.event_id for row in outbox.pending(100)]
    assert len(pending_ids) == 3

    # Restart with the broker back on the same port: old events first, then the new one.
    with MosquittoBroker(tmp_path / "broker2", port=port) as broker:
        subscriber = EventSubscriber(broker.host, broker.port)
        second = [Visit(issued["hc1_es256"], dwell_s=1.0, gap_s=1.0)]
        service = GateService(gate_config(tmp_path, port), source=SyntheticGate(second, realtime=False, seed=2),
                              pin_factory=MockFactory())
        service.run()
        assert subscriber.wait_for(4, timeout_s=15) == 4
        time.sleep(0.3)
        subscriber.close()
    events = sorted(subscriber.events.values(), key=lambda event: event.seq)
    assert [event.seq for event in events] == [1, 2, 3, 4]
    assert [event.event_id for event in events[:3]] == pending_ids
    assert subscriber.received == 4
    with Outbox(Path(config.outbox.path)) as outbox:
        assert outbox.pending_count() == 0


class VanishingCamera:
    """A synthetic camera that fails like an unplugged one after ``fail_at`` frames, then can be reopened."""

    name = "vanishing"
    live = False  # replays the simulated scene

    def __init__(self, scene: SyntheticGate, fail_at: int) -> None:
        self.scene, self.fail_at = scene, fail_at
        self.starts = 0
        self.frames_dropped = 0

    def start(self) -> None:
        self.starts += 1
        if self.starts == 1:
            self.scene.start()

    def read(self, timeout: float = 1.0):
        if self.starts == 1 and self.scene._next_index == self.fail_at:
            from qrgate.errors import CameraUnavailable

            raise CameraUnavailable("camera 0 stopped delivering frames")
        return self.scene.read(timeout)

    def close(self) -> None:
        pass  # the scene survives a reopen, as a replugged camera would keep filming


def test_a_camera_that_vanishes_mid_run_is_reopened_and_no_check_in_is_lost(tmp_path, issued):
    visits = [Visit(issued[name], dwell_s=1.0, gap_s=1.0) for name in ("hc1_ps256", "qg_valid", "url")]
    scene = SyntheticGate(visits, realtime=False, seed=4)
    camera = VanishingCamera(scene, fail_at=scene.frame_count // 2)
    statuses: list[str] = []

    class RecordingNotifier:
        def ready(self): statuses.append("READY")
        def status(self, text): statuses.append(text)
        def watchdog(self): pass
        def stopping(self): statuses.append("STOPPING")
        @staticmethod
        def watchdog_interval_s(): return None

    with MosquittoBroker(tmp_path / "broker") as broker:
        subscriber = EventSubscriber(broker.host, broker.port)
        service = GateService(gate_config(tmp_path, broker.port), source=camera, pin_factory=MockFactory(),
                              notifier=RecordingNotifier())
        service.run()
        assert subscriber.wait_for(3, timeout_s=15) == 3
        subscriber.close()
    assert camera.starts == 2
    assert any("camera failed: camera 0 stopped delivering frames" in status for status in statuses)
    assert service.gate.stats.presentations == 3
    assert statuses[-1] == "STOPPING"
