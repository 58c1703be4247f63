"""Revocation reaches the broker: the site broker's crlfile, with the real mosquitto and the device CA's CRL.

The broker runs the configuration ``qrgate_provisioning.brokerconf`` renders (loopback, free ports), its
listener trusting the site's device CA (``provision.device_ca``) and loading that CA's CRL. The gates' keys
are made by ``qrgate identity new`` in a subprocess, as on a gate, and signed by the CA. What is measured
here with Debian 12's mosquitto 2.0.11:

* a new CRL takes effect on SIGHUP (``MosquittoBroker.reload``, i.e. ``systemctl reload mosquitto``) or a
  restart, and not before: mosquitto does not watch the file;
* a revoked certificate is then refused within the TLS handshake (alert certificate_revoked), while the
  replacement for the same gate id connects and publishes on that gate's topics;
* a reload does not drop a connection that is already open, even one whose certificate is now revoked;
  a restart does (and its reconnection is refused);
* no CRL file, or a CRL only of another CA, or a CRL past its nextUpdate: the broker does not start, or
  refuses every gate.
"""

from __future__ import annotations

import datetime
import getpass
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from paho.mqtt.enums import CallbackAPIVersion

from faults import FAST_BRIDGE_RESTART, LOOPBACK, TestPki
from mqtt_helpers import wait_until
from qrgate import wire
from qrgate.errors import ConfigError
from qrgate_provisioning.brokerconf import (
    ProvincialBroker,
    SiteBroker,
    TlsFiles,
    render_provincial_broker,
    render_site_broker,
    write_site_broker,
)
from qrgate_provisioning.provision.device_ca import DeviceCA
from qrgate_tools.broker import BrokerError, MosquittoBroker, free_loopback_port

SITE = "market-1"
INVENTORY = ("gate-a", "gate-b")
WHO = dict(technician="lan.nguyen", software_version="qrgate 0.1.0")
ACCEPTED = ("Success", "No matching subscribers")  # PUBACK reason codes that mean the broker took it
REVOKED = "SSLV3_ALERT_CERTIFICATE_REVOKED"


@dataclass
class Site:
    """A site broker whose listener trusts the device CA and loads its CRL, and the test PKI of its server."""

    ca: DeviceCA
    pki: TestPki
    broker: MosquittoBroker
    crl_file: Path
    workdir: Path


@dataclass(frozen=True)
class Gate:
    gate_id: str
    cert: Path
    key: Path
    serial: int


def start_site(workdir: Path, ca: DeviceCA, pki: TestPki, crl_file: Path) -> MosquittoBroker:
    server, bridge = pki.server("site-server"), pki.client(f"site-{SITE}")
    params = SiteBroker(
        site_id=SITE, province_host=LOOPBACK, province_port=free_loopback_port(),  # no province: the bridge waits
        listener_tls=TlsFiles(str(ca.directory / "ca.pem"), str(server.cert), str(server.key)),
        bridge_tls=TlsFiles(str(pki.ca_file), str(bridge.cert), str(bridge.key)),
        crl_file=str(crl_file), port=free_loopback_port(), bind_address=LOOPBACK,
        acl_file=str(workdir / "qrgate.acl"), persistence_dir=str(workdir), log_file=str(workdir / "mosquitto.log"),
        run_as_user=getpass.getuser(), restart_timeout_s=FAST_BRIDGE_RESTART,
    )
    rendered = write_site_broker(params, workdir)
    return MosquittoBroker.from_config_file(rendered.config_file, port=params.port, log_path=workdir / "mosquitto.log")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    ca = DeviceCA.create(tmp_path / "device-ca", f"{SITE} device CA")
    pki = TestPki(tmp_path / "pki")  # the broker's own certificate, which the gates trust
    workdir = tmp_path / "site"
    workdir.mkdir()
    crl_file = workdir / "crl.pem"
    ca.write_crl(crl_file)  # nothing revoked yet: an empty CRL, which the broker needs to start
    broker = start_site(workdir, ca, pki, crl_file).start()
    try:
        yield Site(ca, pki, broker, crl_file, workdir)
    finally:
        broker.stop()


def identity_new(gate_id: str, key: Path) -> bytes:
    """``qrgate identity new`` as the provisioner runs it on the gate: the key stays, the CSR comes back."""
    result = subprocess.run([sys.executable, "-m", "qrgate.cli", "identity", "new", "--id", gate_id, "--key",
                             str(key)], check=True, capture_output=True, timeout=120)
    return result.stdout


def enrol(site: Site, gate_id: str, action: str = "provision") -> Gate:
    """A new key on the 'gate', its CSR signed by the device CA, the certificate installed beside the key."""
    stem = f"{gate_id}-{len(site.ca.records(gate_id))}"
    key = site.workdir.parent / f"{stem}.key"
    issued = site.ca.sign(identity_new(gate_id, key), gate_id=gate_id, inventory_ids=INVENTORY,
                          action=action, **WHO)  # type: ignore[arg-type]
    cert = key.with_suffix(".pem")
    cert.write_bytes(issued.cert_pem)
    return Gate(gate_id, cert, key, issued.serial)


def handshake(site: Site, gate: Gate) -> str:
    """A TLS 1.2 handshake with the gate's certificate: "accepted" or the server's alert.

    TLS 1.2, because there the server's verdict on the client certificate ends the handshake itself (in TLS
    1.3 it arrives after it, as a closed connection); the broker accepts both.
    """
    context = ssl.create_default_context(cafile=str(site.pki.ca_file))
    context.load_cert_chain(gate.cert, gate.key)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with socket.create_connection((site.broker.host, site.broker.port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=site.broker.host):
            return "accepted"
    except ssl.SSLError as exc:
        return str(exc.reason)


class GateSession:
    """A paho MQTT v5 session with the gate's certificate (TLS 1.3 by default), as the gate's uplink has."""

    def __init__(self, site: Site, gate: Gate) -> None:
        self.gate = gate
        self.connacks: list[str] = []
        self.pubacks: list[str] = []
        self.lost = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gate.gate_id, protocol=mqtt.MQTTv5,
                                   reconnect_on_failure=False)
        self._client.tls_set(ca_certs=str(site.pki.ca_file), certfile=str(gate.cert), keyfile=str(gate.key))
        self._client.on_connect = lambda _c, _u, _f, reason, _p: self.connacks.append(str(reason))
        self._client.on_disconnect = lambda *_args: self.lost.set()
        self._client.on_publish = lambda _c, _u, _mid, reason, _p: self.pubacks.append(str(reason))
        try:
            self._client.connect(site.broker.host, site.broker.port)
        except OSError:
            self.lost.set()  # refused within the handshake
            return
        self._client.loop_start()
        wait_until(lambda: self.connacks or self.lost.is_set(), 5,
                   f"a CONNACK or a closed connection for {gate.gate_id}")

    @property
    def connected(self) -> bool:
        return self.connacks == ["Success"] and not self.lost.is_set()

    def publish_status(self) -> str | None:
        """Publish on the gate's own status topic; the PUBACK's reason, or None if the session is gone."""
        before = len(self.pubacks)
        self._client.publish(wire.status_topic(self.gate.gate_id), b'{"v":1}', qos=1)
        try:
            wait_until(lambda: len(self.pubacks) > before or self.lost.is_set(), 5, "a PUBACK")
        except AssertionError:
            return None
        return self.pubacks[before] if len(self.pubacks) > before else None

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def connects_and_publishes(site: Site, gate: Gate) -> bool:
    session = GateSession(site, gate)
    try:
        return session.connected and session.publish_status() in ACCEPTED
    finally:
        session.close()


def reload_and_wait(site: Site) -> None:
    """SIGHUP, then wait until mosquitto says it has re-read its configuration."""
    before = site.broker.log_tail(10_000).count("Reloading config")
    site.broker.reload()
    wait_until(lambda: site.broker.log_tail(10_000).count("Reloading config") > before, 5, "the reload")


# ---- rendering ----------------------------------------------------------------------------------


TLS = TlsFiles("/etc/mosquitto/certs/ca.pem", "/etc/mosquitto/certs/server.pem", "/etc/mosquitto/certs/server.key")


def test_both_brokers_always_render_a_crlfile_beside_the_cafile() -> None:
    site = render_site_broker(SiteBroker(site_id=SITE, province_host="10.0.0.5", listener_tls=TLS, bridge_tls=TLS))
    province = render_provincial_broker(ProvincialBroker(listener_tls=TLS, crl_file="/srv/crl/all.pem"))
    assert "cafile /etc/mosquitto/certs/ca.pem\ncrlfile /etc/mosquitto/certs/crl.pem\n" in site
    assert "cafile /etc/mosquitto/certs/ca.pem\ncrlfile /srv/crl/all.pem\n" in province
    with pytest.raises(ConfigError, match="crl_file"):
        render_site_broker(SiteBroker(site_id=SITE, province_host="10.0.0.5", listener_tls=TLS, bridge_tls=TLS,
                                      crl_file="crl.pem"))


def test_the_cli_takes_the_crl_file(tmp_path: Path) -> None:
    import argparse

    from qrgate_provisioning.commands import broker_config

    parser = argparse.ArgumentParser(prog="qrgate-issuer")
    broker_config.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["broker-config", "site", "--out", str(tmp_path), "--site-id", SITE,
                              "--province-host", "10.0.0.5", "--crl-file", "/etc/mosquitto/certs/devices.crl"])
    assert args.run(args) == 0
    assert "crlfile /etc/mosquitto/certs/devices.crl\n" in (tmp_path / "mosquitto.conf").read_text()


# ---- the running broker -------------------------------------------------------------------------


def test_a_replaced_gates_old_certificate_is_refused_after_a_reload_and_its_replacement_connects(site: Site) -> None:
    old = enrol(site, "gate-a")
    assert connects_and_publishes(site, old)
    assert handshake(site, old) == "accepted"
    open_before = GateSession(site, old)  # a session that is open when the revocation arrives
    assert open_before.connected

    new = enrol(site, "gate-a", action="replace")  # a broken SD card: same gate id, new key, old revoked
    crl = site.ca.write_crl(site.crl_file)
    assert old.serial in crl.revoked_serials and new.serial not in crl.revoked_serials
    # mosquitto read the CRL at start and does not watch the file: until it reloads, the old still connects.
    assert handshake(site, old) == "accepted"

    reload_and_wait(site)
    assert handshake(site, old) == REVOKED
    refused = GateSession(site, old)  # TLS 1.3, as the gate's uplink: no CONNACK, the connection closes
    assert refused.connacks == [] and refused.lost.is_set()
    refused.close()
    wait_until(lambda: "certificate verify failed" in site.broker.log_tail(20), 5, "the broker's reason in its log")
    # Measured: the reload leaves a session that was already open alone, its certificate revoked or not.
    assert open_before.publish_status() in ACCEPTED
    assert handshake(site, new) == "accepted"
    assert connects_and_publishes(site, new)  # the replacement: same gate id, same topics
    # Its client id is the CN, so the replacement's connection also took over (ended) the old session.
    wait_until(open_before.lost.is_set, 5, "the old session to be taken over")
    open_before.close()


def test_a_decommissioned_gate_is_cut_off_by_a_restart_and_the_other_gates_are_not(site: Site) -> None:
    leaving, staying = enrol(site, "gate-a"), enrol(site, "gate-b")
    assert connects_and_publishes(site, staying)
    open_session = GateSession(site, leaving)
    assert open_session.connected and open_session.publish_status() in ACCEPTED
    site.ca.revoke("gate-a", **WHO)  # type: ignore[arg-type]
    site.ca.write_crl(site.crl_file)
    site.broker.restart()  # unlike a reload, this ends the open session: its reconnection is then refused
    wait_until(open_session.lost.is_set, 5, "the decommissioned gate's session to end")
    open_session.close()
    assert handshake(site, leaving) == REVOKED
    assert not connects_and_publishes(site, leaving)
    assert connects_and_publishes(site, staying)


def test_a_renewed_gate_connects_with_the_new_certificate_and_the_superseded_one_is_refused(site: Site) -> None:
    old = enrol(site, "gate-a")
    new = enrol(site, "gate-a", action="renew")
    site.ca.write_crl(site.crl_file)
    reload_and_wait(site)
    assert handshake(site, old) == REVOKED
    assert connects_and_publishes(site, new)


def test_the_broker_does_not_start_without_its_crl_file(site: Site) -> None:
    site.broker.stop()
    site.crl_file.unlink()
    with pytest.raises(BrokerError, match="Unable to load certificate revocation file"):
        site.broker.start()


def test_a_crl_of_every_ca_in_the_cafile_is_needed_and_a_bundle_of_them_works(site: Site) -> None:
    gate = enrol(site, "gate-a")
    foreign = site.pki.crl_file.read_bytes()  # a CRL, but of another CA than the one signing the gates
    own = site.crl_file.read_bytes()
    site.crl_file.write_bytes(foreign)
    site.broker.restart()
    assert handshake(site, gate) == "TLSV1_ALERT_UNKNOWN_CA"  # OpenSSL: unable to get certificate CRL
    site.crl_file.write_bytes(foreign + own)  # what a provincial broker with several CAs needs
    site.broker.restart()
    assert connects_and_publishes(site, gate)


def test_a_crl_past_its_next_update_locks_out_every_gate(site: Site) -> None:
    gate = enrol(site, "gate-a")
    # The CA's CRL as it was 10 days ago, valid for a week (the CA itself only makes CRLs dated now).
    now = datetime.datetime.now(datetime.UTC)
    ca_key = serialization.load_pem_private_key((site.ca.directory / "ca.key").read_bytes(), password=None)
    stale = (
        x509.CertificateRevocationListBuilder().issuer_name(site.ca.certificate.subject)
        .last_update(now - datetime.timedelta(days=10)).next_update(now - datetime.timedelta(days=3))
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    site.crl_file.write_bytes(stale.public_bytes(serialization.Encoding.PEM))
    site.broker.restart()
    assert handshake(site, gate) == "SSLV3_ALERT_CERTIFICATE_EXPIRED"  # OpenSSL: CRL has expired
    site.ca.write_crl(site.crl_file)  # a fresh one, numbered on, delivered and reloaded
    reload_and_wait(site)
    assert connects_and_publishes(site, gate)
