"""Helpers for tests against a real Mosquitto on loopback: a recording subscriber, check-in events,
a test uplink, a throw-away PKI, and an uplink in a child process that a test can SIGKILL (run as
``python tests/mqtt_helpers.py uplink ...``).

The ``broker``, ``outbox`` and ``small_filesystem`` fixtures are in conftest.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from qrgate.config import MqttConfig
from qrgate.outbox import Outbox
from qrgate.uplink import Uplink
from qrgate.wire import CheckinEvent, iso_utc, new_event_id
from qrgate_tools.broker import MosquittoBroker

DEVICE_ID = "gate-t1"


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(0.02)


def make_event(seq: int, device_id: str = DEVICE_ID) -> CheckinEvent:
    now = time.time()
    return CheckinEvent(
        event_id=new_event_id(now),
        seq=seq,
        device_id=device_id,
        site_id="site-test",
        gate="north",
        direction="in",
        time=iso_utc(now),
        clock_synced=True,
        verdict="accepted",
        reason="accepted",
        format="qrgate",
        issuer="test-issuer",
        pass_id=f"pass-{seq}",
        subject_id=f"subject-{seq}",
    )


def build_uplink(outbox: Outbox, **options: object) -> Uplink:
    """An Uplink: ``options`` that are MqttConfig fields make its section (plain MQTT and no backlog rate unless
    they say otherwise), the others are Uplink keywords."""
    fields: dict[str, object] = dict(tls=False, ca_file=None, cert_file=None, key_file=None, max_backlog_rate=0)
    fields.update({name: value for name, value in options.items() if name in MqttConfig.model_fields})
    keywords = {name: value for name, value in options.items() if name not in MqttConfig.model_fields}
    return Uplink(outbox, MqttConfig.model_validate(fields), **keywords)  # type: ignore[arg-type]


def uplink_for(outbox: Outbox, broker: MosquittoBroker, **overrides: object) -> Uplink:
    """An uplink from ``outbox`` to ``broker`` that reconnects quickly; ``overrides`` are MqttConfig fields or
    Uplink keywords."""
    options: dict[str, object] = dict(
        device_id=DEVICE_ID, host=broker.host, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.5,
    )
    options.update(overrides)
    return build_uplink(outbox, **options)


def append(outbox: Outbox, count: int) -> list[str]:
    """Store ``count`` check-ins; their event ids in order."""
    return [outbox.append(make_event).event_id for _ in range(count)]


def persistent_broker(workdir: Path, **options: object) -> MosquittoBroker:
    """A broker that saves sessions to disk after every change, so even SIGKILL loses none."""
    return MosquittoBroker(
        workdir, persistence=True, extra_config="autosave_on_changes true\nautosave_interval 1", **options  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A paho MQTT v5 client that records every message on ``topics``.

    ``start()`` returns once the broker has acknowledged the subscription, so nothing published
    afterwards can be missed.
    """

    def __init__(
        self, host: str, port: int, topics: list[str], client_id: str = "test-subscriber", *,
        persistent: bool = False, **tls: object,
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._topics = topics
        self._host, self._port = host, port
        self._persistent = persistent
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if tls:
            self._client.tls_set(**tls)
        if persistent:
            # Outlives broker restarts: paho reconnects, the broker kept (and saved) the session
            # and queued what was published meanwhile.
            self._client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]  (seconds; floats work)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message

    def _on_connect(self, client, _userdata, _flags, reason, _props) -> None:
        if not reason.is_failure:
            client.subscribe([(topic, 1) for topic in self._topics])

    def _on_message(self, _client, _userdata, message) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain)))

    def start(self) -> Subscriber:
        properties = None
        if self._persistent:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 300
        self._client.connect(self._host, self._port, keepalive=60, clean_start=not self._persistent,
                             properties=properties)
        self._client.loop_start()
        if not self._subscribed.wait(5.0):
            raise AssertionError("subscription not acknowledged within 5 s")
        return self

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def checkins(self) -> list[CheckinEvent]:
        with self._lock:
            return [CheckinEvent.from_json(m.payload) for m in self.messages if m.topic.endswith("/checkin")]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def retained(host: str, port: int, topic: str, timeout: float = 5.0) -> Received:
    """The retained message on ``topic`` as a new subscriber receives it.

    A reader that subscribes while the message is still on its way gets it live (retain flag off),
    so a new reader tries again until the broker hands over the stored copy.
    """
    deadline = time.monotonic() + timeout
    while True:
        with Subscriber(host, port, [topic], client_id=f"retained-reader-{time.monotonic_ns()}") as reader:
            wait_until(lambda: reader.on(topic), max(0.1, deadline - time.monotonic()),
                       f"a retained message on {topic}")
            first = reader.on(topic)[0]
        if first.retain or time.monotonic() >= deadline:
            return first


def write_acl(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path, client_cn: str = DEVICE_ID) -> Pki:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
        return cert_path, key_path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("qrgate test CA")).issuer_name(name("qrgate test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, _ = write("ca", ca, ca_key)

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return write(cn, builder.sign(ca_key, hashes.SHA256()), key)

    server_cert, server_key = leaf(
        "localhost", ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert, client_key = leaf(client_cn, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(ca_path, server_cert, server_key, client_cert, client_key)


class UplinkProcess:
    """An Uplink in a child process, so a test can SIGKILL it like a power cut.

    The child writes its stats as JSON to ``stats_path`` every 50 ms.
    """

    def __init__(self, outbox_path: Path, broker: MosquittoBroker, stats_path: Path, *, max_inflight: int = 20) -> None:
        self.stats_path = stats_path
        self.process = subprocess.Popen(
            [sys.executable, __file__, "uplink", str(outbox_path), broker.host, str(broker.port),
             str(max_inflight), str(stats_path)],
            stdin=subprocess.DEVNULL,
        )

    def stats(self) -> dict[str, object]:
        try:
            return json.loads(self.stats_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _run_uplink_child(outbox_path: str, host: str, port: str, max_inflight: str, stats_path: str) -> None:
    parent = os.getppid()
    outbox = Outbox(outbox_path)
    uplink = build_uplink(
        outbox, device_id=DEVICE_ID, host=host, port=int(port), max_inflight=int(max_inflight),
        reconnect_min_s=0.05, reconnect_max_s=0.5,
    )
    uplink.start()
    scratch = Path(stats_path + ".tmp")
    while os.getppid() == parent:  # never outlive the test that started us
        scratch.write_text(json.dumps(asdict(uplink.stats)))
        os.replace(scratch, stats_path)
        time.sleep(0.05)


if __name__ == "__main__" and sys.argv[1:2] == ["uplink"]:
    _run_uplink_child(*sys.argv[2:])
