"""Fault: the site broker stops while the gate is scanning, and starts again later.

The real daemon (``qrgate.service.GateService``) runs on a scripted synthetic scene (simulated
time, so the scene is exact) with mock GPIO pins, its uplink speaking mutual TLS to the rendered
site broker, which bridges to the rendered provincial broker. The broker is stopped right after the
second visitor's check-in is stored and started again after the sixth: the visitors in between
are answered while it is down. At the far end, the province, every check-in must arrive.
"""

from __future__ import annotations

import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from faults import Chain, FarEnd, stored_event_ids
from mqtt_helpers import wait_until
from qrgate.config import GateConfig
from qrgate.frames.synthetic import SyntheticGate, Visit
from qrgate.gate import Presentation
from qrgate.outbox import Outbox
from qrgate.service import GateService
from qrgate_provisioning.keys import new_issuer_key, trust_entry, trust_file
from qrgate_provisioning.mint import mint_qrgate_pass

SITE = "market-1"
GATE = "gate-a"
VISITORS = 8
STOP_AFTER, START_AFTER = 2, 6  # presentations answered before the broker stops / starts again
PATTERNS = {"accepted_on_s": 0.03, "accepted_beeps": 1, "rejected_on_s": 0.05, "rejected_beeps": 1,
            "beep_s": 0.01, "relay_pulse_s": 0.04}


def visitors(trust_dir: Path) -> list[Visit]:
    """Six valid passes and two codes that are not passes, each a different code."""
    trust_dir.mkdir()
    key = new_issuer_key("VN-HN", "EdDSA")
    (trust_dir / "issuers.json").write_text(trust_file([trust_entry(key)]))
    now = int(time.time())
    codes = [mint_qrgate_pass(key, "VN-HN", bytes([n]) * 8, f"subject-{n}", now - 60, now + 3600) for n in range(6)]
    codes[3:3] = ["https://example.com/menu", "WIFI:S:market;T:WPA;P:secret;;"]
    return [Visit(code, dwell_s=1.0, gap_s=1.0) for code in codes]


def gate_config(tmp_path: Path, chain: Chain) -> GateConfig:
    credential = chain.credential(GATE)
    return GateConfig.model_validate({
        "device": {"id": GATE, "site_id": SITE, "gate": "east", "direction": "in"},
        "trust": {"paths": [str(tmp_path / "trust")]},
        "decision": {"presence_gap_s": 0.8, "repeat_window_s": 12.0},
        "feedback": {"patterns": PATTERNS},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        "mqtt": {"host": chain.site.host, "port": chain.site.port, "tls": True, "ca_file": str(chain.pki.ca_file),
                 "cert_file": str(credential.cert), "key_file": str(credential.key),
                 "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "service": {"stop_flush_s": 10.0},
    })


class BrokerOutage:
    """Observer of the capture loop: stops the site broker after presentation ``STOP_AFTER`` and
    starts it again after ``START_AFTER``, checking that the gate saw the outage."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.service: GateService | None = None
        self.events: list[str] = []
        self.pending_during_outage = 0

    def __call__(self, presentation: Presentation) -> None:
        assert presentation.event is not None, f"no event stored for {presentation.reason}"
        self.events.append(presentation.event.event_id)
        uplink = self.service.uplink
        if len(self.events) == STOP_AFTER:
            wait_until(lambda: uplink.stats.pending == 0, 10, "the check-ins before the outage to be delivered")
            self.chain.site.stop()
            wait_until(lambda: not uplink.stats.connected, 10, "the gate to notice the broker is gone")
        elif len(self.events) == START_AFTER:
            self.pending_during_outage = uplink.stats.pending
            self.chain.site.restart()


def test_broker_stopped_while_scanning_then_started_every_checkin_arrives(tmp_path: Path) -> None:
    script = visitors(tmp_path / "trust")
    with Chain(tmp_path, site_id=SITE, sites={SITE: (GATE,)}) as chain:
        chain.wait_for_bridge()
        outage = BrokerOutage(chain)
        service = GateService(gate_config(tmp_path, chain), source=SyntheticGate(script, realtime=False, seed=5),
                              pin_factory=MockFactory(), on_outcome=outage)
        outage.service = service
        with FarEnd.at_province(chain) as far:
            service.run()  # returns at the end of the script, after flushing the outbox
            sent = stored_event_ids(tmp_path / "outbox.sqlite")
            far.wait_for(sent, 20)
            far.settle()
    report = far.report(sent).show("site broker stopped during scanning, then started")
    assert service.stopped_by_eof
    assert outage.events == sent and len(sent) == VISITORS
    assert outage.pending_during_outage == START_AFTER - STOP_AFTER  # answered and stored while the broker was down
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        assert outbox.pending_count() == 0
    assert report.missing == 0
