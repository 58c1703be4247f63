"""Can a two-node RabbitMQ 3.10 cluster (Debian 12's ``rabbitmq-server``) be the provincial broker? A re-runnable
trial: ``python -m qrgate_tools.rabbitmq_trial`` prints each check PASS or FAIL with its figures and exits 1 if
any failed; docs/scale-rabbitmq.md has the verdict and what each run means.

All real, all on loopback: two RabbitMQ nodes as this process's children (their own epmd, cookie, ports and data
in a temporary directory, one scheduler each), B joined to A with ``rabbitmqctl join_cluster``, rabbitmq_mqtt on
both; a site Mosquitto with the bridge section ``qrgate_provisioning.brokerconf`` renders, minus TLS, to
``address A B``; paho clients; pika for the AMQP consumers (that run is skipped without it). A node-kill run
starts a fresh cluster of its variant (``KILL_VARIANTS``, see ``cluster``), sends check-ins at a gate's pace,
SIGKILLs node A (the bridge's) a fifth of the way in, then starts it again.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from qrgate import wire
from qrgate_provisioning.brokerconf import SiteBroker, TlsFiles, bridge_notification_topic, render_site_broker
from qrgate_tools.broker import MosquittoBroker
from qrgate_tools.rabbitmq_nodes import (
    KILL_VARIANTS,
    RABBITMQ_BIN,
    Node,
    cluster,
    wait_for,
)

TRUST_LIST = wire.TRUST_LIST_TOPIC

def site_broker(workdir: Path, site_id: str, nodes: tuple[Node, ...], *, try_private: bool = False) -> MosquittoBroker:
    """A loopback Mosquitto with the site's bridge section as brokerconf renders it, minus TLS, to ``nodes``.

    ``try_private false`` unless asked: RabbitMQ closes a CONNECT carrying Mosquitto's bridge bit in its protocol
    level (0x84) as a corrupt frame, without the CONNACK that would make Mosquitto try again without it."""
    dummy = TlsFiles("/nonexistent/ca.pem", "/nonexistent/cert.pem", "/nonexistent/key.pem")
    params = SiteBroker(site_id=site_id, province_host="127.0.0.1", province_port=1, listener_tls=dummy,
                        bridge_tls=dummy, restart_timeout_s=(1, 2), bridge_keepalive_s=5, run_as_user="nobody")
    rendered = render_site_broker(params)
    address = "address " + " ".join(f"127.0.0.1:{node.mqtt_port}" for node in nodes)
    lines = [f"max_queued_messages {params.max_queued_messages}",
             f"max_inflight_messages {params.max_inflight_messages}"]
    lines += [address if line.startswith("address ") else line
              for line in rendered[rendered.index("connection province"):].splitlines()
              if not line.startswith(("bridge_cafile", "bridge_certfile", "bridge_keyfile", "bridge_insecure",
                                      "bridge_tls_version"))]
    lines += [] if try_private else ["try_private false"]
    return MosquittoBroker(workdir, extra_config="\n".join(lines)).start()


def bridge_up(site: MosquittoBroker, site_id: str, timeout: float = 30) -> bool:
    """Whether the bridge's retained notification at the site says ``1`` within ``timeout``."""
    topic = bridge_notification_topic(site_id)
    return wait_for(lambda: retained_at(site.port, topic, 0.5) == b"1", timeout, 0.5)


def client(port: int, client_id: str, *, v5: bool = False, clean: bool = True) -> mqtt.Client:
    made = (mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5) if v5 else
            mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=clean))
    made.max_inflight_messages_set(100)
    made.connect("127.0.0.1", port, keepalive=10)
    made.loop_start()
    return made


def close(made: mqtt.Client) -> None:
    made.disconnect()
    made.loop_stop()


def publish_retained(port: int, topic: str, payload: bytes) -> None:
    issuer = client(port, f"issuer-{time.monotonic_ns()}")
    issuer.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    close(issuer)


def retained_at(port: int, topic_filter: str, timeout: float = 2.0) -> bytes | None:
    """The retained payload a fresh subscriber to ``topic_filter`` is handed within ``timeout``, else None."""
    got: list[bytes] = []
    probe = client(port, f"probe-{time.monotonic_ns()}")
    probe.on_message = lambda _c, _u, m: got.append(bytes(m.payload)) if m.retain else None
    probe.subscribe(topic_filter, qos=1)
    wait_for(lambda: bool(got), timeout)
    close(probe)
    return got[-1] if got else None


@dataclass
class FarEnd:
    """What reached the province: each event id once, how many copies came, and which consumer took them."""

    seen: set[str] = field(default_factory=set)
    copies: int = 0
    by: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, payload: bytes, who: str) -> str:
        event_id = str(json.loads(payload)["event_id"])
        with self.lock:
            self.seen.add(event_id)
            self.copies += 1
            self.by[who] += 1
        return event_id

    def figures(self, sent: set[str]) -> str:
        return (f"sent {len(sent)}, received {len(self.seen & sent)}, lost {len(sent - self.seen)}, "
                f"extra copies {self.copies - len(self.seen)}, per consumer {dict(self.by)}")


def mqtt_far_end(port: int, far: FarEnd, client_id: str, topic: str = wire.ALL_CHECKINS,
                 acks: bool = True) -> mqtt.Client:
    """An MQTT 3.1.1 consumer with a persistent session that acknowledges each check-in to its gate."""
    def on_message(made: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        event_id = far.record(bytes(message.payload), client_id)
        if acks:
            ack = wire.CheckinAck(event_ids=[event_id], consumer=client_id)
            made.publish(wire.ack_topic(message.topic.split("/")[3]), ack.to_json(), qos=1)
    made = client(port, client_id, clean=False)
    made.on_message = on_message
    made.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(topic, qos=1)
    made.subscribe(topic, qos=1)
    return made


def amqp_far_ends(node: Node, far: FarEnd, count: int) -> Callable[[], None]:
    """``count`` competing AMQP consumers on one quorum queue bound to every check-in; returns their stop."""
    import pika  # an optional tool of this trial (pyproject: mypy ignores its missing stubs)

    params = pika.ConnectionParameters("127.0.0.1", node.amqp_port, connection_attempts=1)
    queue, stop = "qrgate-checkins", threading.Event()
    with pika.BlockingConnection(params) as connection:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(queue, "amq.topic", routing_key=wire.ALL_CHECKINS.replace("/", ".").replace("+", "*"))

    def consume(name: str) -> None:
        while not stop.is_set():
            with suppress(pika.exceptions.AMQPError, OSError), pika.BlockingConnection(params) as connection:
                channel = connection.channel()
                channel.basic_qos(prefetch_count=100)
                for method, _props, body in channel.consume(queue, inactivity_timeout=0.5):
                    if stop.is_set():
                        break
                    if method is not None:  # the MQTT plugin's routing key is the topic with '.' for '/'
                        ack = wire.CheckinAck(event_ids=[far.record(body, name)], consumer=name)
                        channel.basic_publish("amq.topic", method.routing_key.rsplit(".", 1)[0] + ".ack",
                                              ack.to_json(), pika.BasicProperties(delivery_mode=2))
                        channel.basic_ack(method.delivery_tag)
            stop.wait(1)

    threads = [threading.Thread(target=consume, args=(f"amqp-{n}",), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()

    def stop_all() -> None:
        stop.set()
        for thread in threads:
            thread.join(10)
    return stop_all


class Gate:
    """A gate at the site broker (MQTT 5, as the daemon speaks): publishes check-ins, counts the acks it gets."""

    def __init__(self, port: int, device_id: str = "gate-a") -> None:
        self.device_id, self.acked = device_id, set[str]()
        self.client = client(port, device_id, v5=True)
        self.client.on_message = lambda _c, _u, m: self.acked.update(
            wire.CheckinAck.from_json(bytes(m.payload)).event_ids)
        self.client.subscribe(wire.ack_topic(device_id), qos=1)

    def send(self, count: int, device_id: str | None = None, rate: float = 0) -> set[str]:
        """``count`` check-ins, at ``rate`` a second if given (so a node killed mid-run meets check-ins still to
        come, as from gates), returned once the site broker has PUBACKed them all."""
        sent, infos, started = set(), [], time.monotonic()
        for seq in range(1, count + 1):
            if rate and seq % 50 == 0:
                time.sleep(max(0.0, started + seq / rate - time.monotonic()))
            now = time.time()
            event = wire.CheckinEvent(
                event_id=wire.new_event_id(now), seq=seq, device_id=device_id or self.device_id, site_id="trial",
                gate="north", direction="in", time=wire.iso_utc(now), clock_synced=True, verdict="accepted",
                reason="accepted", format="qrgate", issuer="trial", pass_id=None, subject_id=None)
            sent.add(event.event_id)
            infos.append(self.client.publish(wire.checkin_topic(event.device_id), event.to_json(), qos=1))
        for info in infos:
            info.wait_for_publish(60)
        return sent


@dataclass(frozen=True)
class Check:
    """One line of the verdict: what was tried, whether it gave what the provincial tier needs, and the figures."""

    name: str
    passed: bool
    figures: str

    def show(self) -> Check:
        print(f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.figures}", flush=True)
        return self


def basic_checks(root: Path) -> list[Check]:
    """One cluster: the province's consumer, the bridge both ways, and where retained trust lists reach."""
    from qrgate_provisioning.consumer import Consumer, SqliteStore

    started, checks = time.monotonic(), []
    with cluster(root / "basic", "classic") as (a, b):
        members = a.ctl("cluster_status")
        checks.append(Check("two nodes clustered", a.nodename in members and b.nodename in members,
                            f"booted and joined in {time.monotonic() - started:.0f} s"))
        store = SqliteStore(root / "consumer.sqlite")
        with Consumer(store, host="127.0.0.1", port=b.mqtt_port, client_id="backend") as consumer:
            subscribed = consumer.wait_subscribed(10)
        store.close()
        checks.append(Check("the province's consumer (MQTT 5, $share) on node B", subscribed,
                            f"subscribed {subscribed}; {consumer.stats.last_error}"))
        for where, port, topic_filter in (("node A, exact topic", a.mqtt_port, TRUST_LIST),
                                          ("node B, exact topic", b.mqtt_port, TRUST_LIST),
                                          ("node A, province/#", a.mqtt_port, f"{wire.TOPIC_ROOT}/province/#")):
            publish_retained(a.mqtt_port, TRUST_LIST, b"list-1")
            got = retained_at(port, topic_filter)
            checks.append(Check(f"retained list published on node A, subscriber on {where}", got == b"list-1",
                                f"got {got!r}"))
        rendered = site_broker(root / "site-rendered", "rendered", (a, b), try_private=True)
        up = bridge_up(rendered, "rendered", timeout=10)
        rendered.stop()
        checks.append(Check("the site bridge exactly as rendered (try_private on)", up, f"connected in 10 s: {up}"))
        far, shared = FarEnd(), FarEnd()
        consumers = [mqtt_far_end(b.mqtt_port, far, "province-consumer"),
                     mqtt_far_end(b.mqtt_port, shared, "shared", f"$share/g/{wire.ALL_CHECKINS}", acks=False)]
        site = site_broker(root / "site", "basic", (a, b))
        up = bridge_up(site, "basic")
        at_site = retained_at(site.port, TRUST_LIST)
        gate = Gate(site.port)
        sent = gate.send(200)
        wait_for(lambda: far.seen >= sent and gate.acked >= sent, 30)
        checks += [Check("check-ins: gate, site Mosquitto, bridge (try_private false), node A, consumer on node B",
                         up and far.seen >= sent, f"bridge up {up}; {far.figures(sent)}"),
                   Check("end-to-end acks: consumer on node B, node A, bridge, gate", gate.acked >= sent,
                         f"{len(gate.acked & sent)} of {len(sent)} acknowledged"),
                   Check("competing consumers over MQTT 3.1.1 ($share/g/... filter)", bool(shared.seen & sent),
                         f"{len(shared.seen & sent)} of {len(sent)} delivered")]
        dotted = gate.send(1, device_id="gate.b")
        wait_for(lambda: bool(far.seen & dotted), 5)
        checks.append(Check("a device id with a dot (the id rule allows it): qrgate/v1/device/gate.b/checkin",
                            bool(far.seen & dotted), f"delivered {len(far.seen & dotted)} of 1"))
        live: list[tuple[bytes, bool]] = []
        listener = client(site.port, "gate-listening")
        listener.on_message = lambda _c, _u, m: live.append((bytes(m.payload), bool(m.retain)))
        listener.subscribe(TRUST_LIST, qos=1)
        publish_retained(a.mqtt_port, TRUST_LIST, b"list-2")
        wait_for(lambda: any(payload == b"list-2" for payload, _ in live), 10)
        late = retained_at(site.port, TRUST_LIST, 3)
        checks.append(Check("retained lists reach a gate that (re)connects to the site", late == b"list-2",
                            f"list 1 (on node A before the bridge came up) at the site: {at_site!r}; list 2 (while "
                            f"it was up) to a gate listening: {live} (payload, retain flag); to one subscribing "
                            f"after: {late!r}"))
        for made in [*consumers, listener, gate.client]:
            close(made)
        site.stop()
        a.ctl("stop")  # a clean stop of the whole node, then the same node again
        a.kill()
        restarted = time.monotonic()
        a.start()
        a.wait_ready()
        after = retained_at(a.mqtt_port, TRUST_LIST)
        checks.append(Check("retained list on node A after a clean restart of node A", after == b"list-2",
                            f"got {after!r}; node A listening again after {time.monotonic() - restarted:.0f} s"))
    return checks


def settle(far: FarEnd, sent: set[str], quiet_s: float, timeout: float) -> None:
    """Until everything arrived, nothing more arrived for ``quiet_s``, or ``timeout``."""
    deadline, last, changed = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline and not far.seen >= sent:
        if len(far.seen) != last:
            last, changed = len(far.seen), time.monotonic()
        elif time.monotonic() - changed > quiet_s:
            return
        time.sleep(0.2)


def kill_check(root: Path, variant: str, count: int, rate: float = 500) -> list[Check]:
    """``count`` check-ins through the bridge at ``rate``/s; node A (the bridge's) SIGKILLed a fifth of the way in."""
    with cluster(root / variant, variant) as (a, b):
        far, site_id = FarEnd(), f"kill-{variant}"
        if variant == "amqp":
            stop_consumers = amqp_far_ends(b, far, 2)
        else:
            consumer = mqtt_far_end(b.mqtt_port, far, "province-consumer")
            stop_consumers = lambda: close(consumer)  # noqa: E731
        publish_retained(a.mqtt_port, TRUST_LIST, b"list-k")  # seconds before the kill
        site = site_broker(root / f"site-{variant}", site_id, (a, b))
        up = bridge_up(site, site_id)
        gate, sent = Gate(site.port), set[str]()
        sender = threading.Thread(target=lambda: sent.update(gate.send(count, rate=rate)), daemon=True)
        sender.start()
        wait_for(lambda: len(far.seen) >= count // 5, 120)
        a.kill()
        at_kill, killed = len(far.seen), time.monotonic()
        sender.join(120)
        settle(far, sent, quiet_s=15, timeout=60)
        down = (f"received {len(far.seen & sent)}, acked {len(gate.acked & sent)}, bridge up "
                f"{bridge_up(site, site_id, timeout=5)}")
        all_while_down, outage_s = far.seen >= sent, time.monotonic() - killed
        a.start()
        a.wait_ready()
        settle(far, sent, quiet_s=15, timeout=120)
        kept = retained_at(a.mqtt_port, TRUST_LIST)
        log = site.log_path.read_text(errors="replace")
        attempts = {node.letter: log.count(f"(step 1) province (127.0.0.1:{node.mqtt_port})") for node in (a, b)}
        stop_consumers()
        close(gate.client)
        site.stop()
    return [Check(f"node A SIGKILLed mid-ingest, {variant}", up and all_while_down and far.seen >= sent,
                  f"{len(sent)} check-ins, {at_kill} in when A was killed; with A down ({outage_s:.0f} s): {down}; "
                  f"after A restarted: {far.figures(sent)}, acked {len(gate.acked & sent)}; bridge connection "
                  f"attempts {attempts}"),
            Check(f"retained list on node A after its SIGKILL, {variant}", kept == b"list-k", f"got {kept!r}")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qrgate_tools.rabbitmq_trial", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkins", type=int, default=5000, help="check-ins per node-kill run (default 5000)")
    parser.add_argument("--kill", nargs="*", choices=KILL_VARIANTS, default=list(KILL_VARIANTS), metavar="RUN",
                        help=f"node-kill runs: {', '.join(KILL_VARIANTS)} (default: all; none: --kill alone)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = parser.parse_args(argv)
    if not (RABBITMQ_BIN / "rabbitmq-server").exists() or shutil.which("mosquitto", path="/usr/sbin:/usr/bin") is None:
        print("needs Debian's rabbitmq-server and mosquitto: apt-get install rabbitmq-server mosquitto")
        return 2
    root = Path(tempfile.mkdtemp(prefix="qrgate-rabbitmq-trial-"))
    try:
        checks = [check.show() for check in basic_checks(root)]
        for variant in args.kill:
            if variant == "amqp" and importlib.util.find_spec("pika") is None:
                print("SKIP  node A SIGKILLed mid-ingest, amqp: pika is not installed (pip install pika)")
            else:
                checks += [check.show() for check in kill_check(root, variant, args.checkins)]
    finally:
        if args.keep:
            print(f"work directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{sum(c.passed for c in checks)} passed, {sum(not c.passed for c in checks)} failed")
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
