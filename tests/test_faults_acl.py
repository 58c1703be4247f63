"""Fault: a gate that publishes on another gate's topics, and a gate that listens to other gates'.

The site broker runs its rendered configuration and ACL. A gate set up as ``gate-b`` but holding
``gate-a``'s certificate (a provisioning mix-up) publishes on gate-b's topics: mosquitto answers
each PUBLISH with PUBACK 0x87 "Not authorized" (MQTT v5; under 3.1.1 the refusal would look like
success), and the gate must treat that as not delivered: every event stays in its outbox, the
refusal shows in its stats, and once it holds the right certificate all of them arrive. Meanwhile
a third gate subscribed to every gate's check-ins receives none but its own.
"""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from faults import Chain, FarEnd, gate_uplink, stored_event_ids
from mqtt_helpers import make_event, wait_until
from qrgate import wire
from qrgate.outbox import Outbox

SITE = "market-1"


def test_refused_publishes_stay_in_the_outbox_until_the_gate_may_publish_them(tmp_path: Path) -> None:
    with Chain(tmp_path, site_id=SITE, sites={SITE: ("gate-a", "gate-b", "gate-c")}) as chain:
        chain.wait_for_bridge()
        snooped: list[str] = []
        lock = threading.Lock()
        snoop = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gate-c", protocol=mqtt.MQTTv5)
        snoop.tls_set(**chain.pki.paho_tls(chain.credential("gate-c")))

        def record(_client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
            with lock:
                snooped.append(message.topic)

        snoop.on_message = record
        snoop.connect(chain.site.host, chain.site.port)
        snoop.loop_start()
        subscribed = snoop.subscribe([(wire.ALL_CHECKINS, 1), ("qrgate/v1/device/gate-b/#", 1)])
        assert subscribed[0] == mqtt.MQTT_ERR_SUCCESS

        outbox_path = tmp_path / "outbox.sqlite"
        with FarEnd.at_province(chain) as far, Outbox(outbox_path) as outbox:
            for _ in range(20):
                outbox.append(lambda seq: make_event(seq, "gate-b"))
            mixed_up = gate_uplink(outbox, "gate-b", chain.site, chain.pki, chain.credential("gate-a"))
            with mixed_up:
                wait_until(lambda: mixed_up.stats.refused >= 20, 15, "every event refused at least once")
                stats = mixed_up.stats
            assert stats.connected and stats.delivered == 0 and stats.pending == 20
            assert stats.last_refusal == "Not authorized"
            assert outbox.pending_count() == 20  # nothing lost, nothing marked delivered
            assert far.received() == 0

            fixed = gate_uplink(outbox, "gate-b", chain.site, chain.pki, chain.credential("gate-b"))
            with fixed:
                sent = stored_event_ids(outbox_path)
                far.wait_for(sent, 15, "the 20 events once the gate holds its own certificate")
                wait_until(lambda: outbox.pending_count() == 0, 10, "the gate to record the deliveries")
                assert fixed.stats.refused == 0
            far.settle()
        # The snooping gate's own check-in proves its subscriptions were live all along.
        snoop.publish(wire.checkin_topic("gate-c"), make_event(1, "gate-c").to_json(), qos=1)
        wait_until(lambda: wire.checkin_topic("gate-c") in snooped, 5, "the snooping gate's own check-in")
        snoop.loop_stop()
        snoop.disconnect()
    report = far.report(sent).show("gate publishing on another gate's topic, then fixed")
    others = [topic for topic in snooped if topic != wire.checkin_topic("gate-c")]
    print(f"[gate subscribed to every gate's check-ins] other gates' messages received: {len(others)}")
    assert report.missing == 0
    assert others == []
