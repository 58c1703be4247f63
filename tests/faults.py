"""Shared parts of the broker and fault tests: a test PKI, the rendered site and provincial brokers
started with the real mosquitto, and the far end that counts what arrived.

The brokers run exactly the configuration ``qrgate_provisioning.brokerconf`` renders from
firmware/mosquitto/, with test parameters only: loopback, free ports, files in a temp dir,
certificates made here, and short bridge restart timeouts so a test waits seconds, not a minute.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mqtt_helpers import Subscriber, build_uplink, wait_until
from qrgate import wire
from qrgate.outbox import Outbox
from qrgate.uplink import TlsSettings, Uplink
from qrgate_provisioning.brokerconf import (
    ProvincialBroker,
    SiteBroker,
    TlsFiles,
    bridge_user,
    write_provincial_broker,
    write_site_broker,
)
from qrgate_tools.broker import MosquittoBroker, free_loopback_port

LOOPBACK = "127.0.0.1"
SITE_PROBE = "site-probe"  # a site-local reader the tests use to read the bridge's notification
FAR_END = "far-end"  # the consumer certificate the far end counts with (the reference consumer is "backend")
# Test values of the bridge's reconnect backoff: (base, cap) seconds. Production renders (5, 60).
FAST_BRIDGE_RESTART = (1, 2)


@dataclass(frozen=True)
class Credential:
    cert: Path
    key: Path


class TestPki:
    """A throw-away CA that issues broker (server) and client certificates, valid or expired."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "qrgate test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca = (
            self._builder(self._name, self._key.public_key(), days=(-1, 30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        # The brokers' crlfile: an empty CRL of this CA (mosquitto needs one for every CA in cafile).
        self.crl_file = directory / "crl.pem"
        self.crl_file.write_bytes(
            x509.CertificateRevocationListBuilder().issuer_name(self._name)
            .last_update(self._now - datetime.timedelta(days=1)).next_update(self._now + datetime.timedelta(days=30))
            .sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey,
                 days: tuple[int, int]) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self._name).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now + datetime.timedelta(days=days[0]))
            .not_valid_after(self._now + datetime.timedelta(days=days[1]))
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )

    def _issue(self, cn: str, stem: str, usage: x509.ObjectIdentifier, days: tuple[int, int],
               san: list[x509.GeneralName] | None = None) -> Credential:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        credential = Credential(self.directory / f"{stem}.pem", self.directory / f"{stem}.key")
        credential.cert.write_bytes(builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        credential.key.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
        return credential

    def server(self, stem: str) -> Credential:
        """A broker certificate for 127.0.0.1 and localhost (clients verify the host name)."""
        return self._issue(stem, stem, ExtendedKeyUsageOID.SERVER_AUTH, (-1, 30),
                           [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))])

    def client(self, cn: str) -> Credential:
        return self._issue(cn, f"client-{cn}", ExtendedKeyUsageOID.CLIENT_AUTH, (-1, 30))

    def expired_client(self, cn: str) -> Credential:
        """Signed by this CA, but its validity ended yesterday."""
        return self._issue(cn, f"expired-{cn}", ExtendedKeyUsageOID.CLIENT_AUTH, (-30, -1))

    def tls_settings(self, credential: Credential) -> TlsSettings:
        """What a gate's uplink is configured with."""
        return TlsSettings(self.ca_file, credential.cert, credential.key)

    def paho_tls(self, credential: Credential) -> dict[str, str]:
        """Keyword arguments for paho's ``tls_set`` (and ``mqtt_helpers.Subscriber``)."""
        return dict(ca_certs=str(self.ca_file), certfile=str(credential.cert), keyfile=str(credential.key))


def start_provincial_broker(
    workdir: Path, pki: TestPki, *, sites: Mapping[str, Sequence[str]], consumers: Sequence[str] = ("backend", FAR_END),
    operators: Sequence[str] = (), issuers: Sequence[str] = (), services: Sequence[str] = (),
) -> tuple[MosquittoBroker, ProvincialBroker]:
    """Render the provincial broker's configuration into ``workdir`` and start it."""
    server = pki.server("province-server")
    params = ProvincialBroker(
        listener_tls=TlsFiles(str(pki.ca_file), str(server.cert), str(server.key)), crl_file=str(pki.crl_file),
        sites={site: tuple(devices) for site, devices in sites.items()},
        consumers=tuple(consumers), operators=tuple(operators), issuers=tuple(issuers), services=tuple(services),
        port=free_loopback_port(), bind_address=LOOPBACK,
        acl_file=str(workdir / "qrgate.acl"), persistence_dir=str(workdir), log_file=str(workdir / "mosquitto.log"),
        run_as_user=getpass.getuser(),
    )
    rendered = write_provincial_broker(params, workdir)
    broker = MosquittoBroker.from_config_file(rendered.config_file, port=params.port,
                                              log_path=workdir / "mosquitto.log")
    return broker.start(), params


def start_site_broker(
    workdir: Path, pki: TestPki, *, site_id: str, province_port: int, readers: Sequence[str] = (), **overrides: object,
) -> tuple[MosquittoBroker, SiteBroker]:
    """Render a site broker's configuration (bridged to 127.0.0.1:``province_port``) and start it;
    ``overrides`` are further ``SiteBroker`` parameters."""
    server = pki.server(f"site-{site_id}-server")
    bridge = pki.client(bridge_user(site_id))
    params = SiteBroker(
        site_id=site_id, province_host=LOOPBACK, province_port=province_port,
        listener_tls=TlsFiles(str(pki.ca_file), str(server.cert), str(server.key)),
        bridge_tls=TlsFiles(str(pki.ca_file), str(bridge.cert), str(bridge.key)),
        port=free_loopback_port(), bind_address=LOOPBACK,
        acl_file=str(workdir / "qrgate.acl"), persistence_dir=str(workdir), log_file=str(workdir / "mosquitto.log"),
        run_as_user=getpass.getuser(), restart_timeout_s=FAST_BRIDGE_RESTART, readers=tuple(readers),
        **{"crl_file": str(pki.crl_file), **overrides},  # type: ignore[arg-type]
    )
    rendered = write_site_broker(params, workdir)
    broker = MosquittoBroker.from_config_file(rendered.config_file, port=params.port,
                                              log_path=workdir / "mosquitto.log")
    return broker.start(), params


class Chain:
    """A provincial broker and one site broker bridged to it, both from rendered configurations,
    with the test PKI that signs every certificate. ``credential(cn)`` issues (once) a client
    certificate for any CN: a gate, a consumer, an operator, a reader."""

    def __init__(self, workdir: Path, *, site_id: str, sites: Mapping[str, Sequence[str]],
                 operators: Sequence[str] = (), issuers: Sequence[str] = (), **site_overrides: object) -> None:
        self.pki = TestPki(workdir / "pki")
        self._credentials: dict[str, Credential] = {}
        self.province, self.province_params = start_provincial_broker(
            workdir / "province", self.pki, sites=sites, operators=operators, issuers=issuers,
        )
        try:
            self.site, self.site_params = start_site_broker(
                workdir / "site", self.pki, site_id=site_id, province_port=self.province_params.port,
                readers=(SITE_PROBE,), **site_overrides,
            )
        except BaseException:
            self.province.stop()
            raise

    def credential(self, cn: str) -> Credential:
        if cn not in self._credentials:
            self._credentials[cn] = self.pki.client(cn)
        return self._credentials[cn]

    def bridge_connected(self) -> bool:
        """What the site broker's retained bridge notification says: connected or not."""
        topic = self.site_params.notification_topic
        probe = Subscriber(self.site.host, self.site.port, [topic], client_id=SITE_PROBE,
                           **self.pki.paho_tls(self.credential(SITE_PROBE)))
        with probe:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and not probe.on(topic):
                time.sleep(0.02)
            messages = probe.on(topic)
        return bool(messages) and messages[-1].payload == b"1"

    def wait_for_bridge(self, timeout: float = 15) -> None:
        wait_until(self.bridge_connected, timeout, f"the bridge of site {self.site_params.site_id}")

    def close(self) -> None:
        self.site.stop()
        self.province.stop()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def gate_uplink(outbox: Outbox, device_id: str, broker: MosquittoBroker, pki: TestPki, credential: Credential,
                **overrides: object) -> Uplink:
    """A gate's uplink to ``broker`` over mutual TLS, with test-short reconnect delays."""
    options: dict[str, object] = dict(
        device_id=device_id, host=broker.host, port=broker.port, tls=True, ca_file=str(pki.ca_file),
        cert_file=str(credential.cert), key_file=str(credential.key), reconnect_min_s=0.05, reconnect_max_s=0.5,
    )
    options.update(overrides)
    return build_uplink(outbox, **options)


@dataclass(frozen=True)
class FaultReport:
    """What the far end saw of the events a test sent."""

    sent: int  # distinct events the gate(s) stored and were to deliver
    received: int  # check-in messages that arrived, duplicates included
    unique: int  # distinct sent events that arrived
    duplicates: int  # arrivals beyond the first of an event
    missing: int  # sent events that never arrived

    def show(self, scenario: str) -> FaultReport:
        """Print the numbers (visible with pytest -s or -rA) and return self."""
        print(f"\n[{scenario}] sent={self.sent} received={self.received} unique={self.unique} "
              f"duplicates={self.duplicates} missing={self.missing}")
        return self


class FarEnd:
    """The province's side as the fault tests count it: a consumer with a persistent MQTT v5
    session (it outlives broker restarts and the broker queues what it misses) that keeps every
    check-in, de-duplicated by event id, and checks that a repeat is the same event byte for byte."""

    def __init__(self, broker: MosquittoBroker, pki: TestPki, credential: Credential,
                 topics: Iterable[str] = (wire.ALL_CHECKINS,)) -> None:
        self._subscriber = Subscriber(broker.host, broker.port, list(topics), client_id=credential.cert.stem,
                                      persistent=True, **pki.paho_tls(credential))

    @classmethod
    def at_province(cls, chain: Chain) -> FarEnd:
        return cls(chain.province, chain.pki, chain.credential(FAR_END))

    def __enter__(self) -> FarEnd:
        self._subscriber.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._subscriber.close()

    def payloads(self) -> dict[str, set[bytes]]:
        """Every distinct payload received, by event id."""
        copies: dict[str, set[bytes]] = {}
        for message in list(self._subscriber.messages):
            if message.topic.endswith("/checkin"):
                event = wire.CheckinEvent.from_json(message.payload)
                copies.setdefault(event.event_id, set()).add(message.payload)
        return copies

    def received(self) -> int:
        return sum(1 for message in list(self._subscriber.messages) if message.topic.endswith("/checkin"))

    def unique_ids(self) -> set[str]:
        return set(self.payloads())

    def wait_for(self, event_ids: Iterable[str], timeout: float, what: str = "every event at the far end") -> None:
        wanted = set(event_ids)
        wait_until(lambda: wanted <= self.unique_ids(), timeout, what)

    def settle(self, quiet_s: float = 0.5, timeout: float = 5.0) -> None:
        """Wait until nothing has arrived for ``quiet_s`` (late duplicates land before counting)."""
        deadline = time.monotonic() + timeout
        count, since = self.received(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now_count = self.received()
            if now_count != count:
                count, since = now_count, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return

    def report(self, sent_ids: Iterable[str]) -> FaultReport:
        sent = set(sent_ids)
        copies = self.payloads()
        strangers = set(copies) - sent
        assert not strangers, f"{len(strangers)} event(s) arrived that no gate sent"
        changed = {event_id for event_id, payloads in copies.items() if len(payloads) > 1}
        assert not changed, f"{len(changed)} event id(s) arrived with different payloads"
        received = self.received()
        unique = len(set(copies) & sent)
        return FaultReport(sent=len(sent), received=received, unique=unique,
                           duplicates=received - unique, missing=len(sent) - unique)


def stored_event_ids(outbox_path: Path) -> list[str]:
    """Every event id the gate stored (delivered or not), in sequence order."""
    with sqlite3.connect(outbox_path) as db:
        return [row[0] for row in db.execute("SELECT event_id FROM events ORDER BY seq")]
