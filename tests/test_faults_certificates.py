"""Fault: a gate whose client certificate has expired, or was signed by another CA.

The site broker runs its rendered configuration (``require_certificate true``): it refuses the TLS
handshake. The gate keeps every event in its outbox, retries with its jittered backoff without
crashing, and delivers everything once it holds a valid certificate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults import Chain, Credential, FarEnd, TestPki, gate_uplink, stored_event_ids
from mqtt_helpers import make_event, wait_until
from qrgate.config import MqttConfig
from qrgate.outbox import Outbox
from qrgate.uplink import Uplink

SITE = "market-1"
GATE = "gate-a"


def bad_certificate(chain: Chain, tmp_path: Path, kind: str) -> Credential:
    if kind == "expired":
        return chain.pki.expired_client(GATE)
    return TestPki(tmp_path / "impostor", "impostor CA").client(GATE)


def refused_uplink(chain: Chain, outbox: Outbox, credential: Credential) -> Uplink:
    # The gate trusts the right CA for the broker's certificate; only its own certificate is bad.
    return Uplink(outbox, MqttConfig(host=chain.site.host, port=chain.site.port, ca_file=str(chain.pki.ca_file),
                                     cert_file=str(credential.cert), key_file=str(credential.key),
                                     reconnect_min_s=0.05, reconnect_max_s=0.3, max_backlog_rate=0),
                  device_id=GATE)


@pytest.mark.parametrize("kind", ["expired", "foreign CA"])
def test_a_refused_certificate_keeps_every_event_until_a_valid_one_is_installed(tmp_path: Path, kind: str) -> None:
    with Chain(tmp_path, site_id=SITE, sites={SITE: (GATE,)}) as chain:
        chain.wait_for_bridge()
        outbox_path = tmp_path / "outbox.sqlite"
        with FarEnd.at_province(chain) as far, Outbox(outbox_path) as outbox:
            for _ in range(20):
                outbox.append(lambda seq: make_event(seq, GATE))
            with refused_uplink(chain, outbox, bad_certificate(chain, tmp_path, kind)) as uplink:
                wait_until(lambda: chain.site.log_tail(50).count("certificate verify failed") >= 3, 15,
                           "three refused handshakes: the gate retries")
                stats = uplink.stats
            assert not stats.connected and stats.sent == 0 and stats.delivered == 0
            assert stats.pending == 20 and outbox.pending_count() == 20

            renewed = gate_uplink(outbox, GATE, chain.site, chain.pki, chain.credential(GATE))
            with renewed:
                sent = stored_event_ids(outbox_path)
                far.wait_for(sent, 15, "the events once the certificate is renewed")
                wait_until(lambda: outbox.pending_count() == 0, 10, "the gate to record the deliveries")
            far.settle()
    report = far.report(sent).show(f"client certificate {kind}, then renewed")
    assert report.missing == 0


@pytest.mark.parametrize("kind", ["expired", "foreign CA"])
def test_a_refused_certificate_is_reported_in_the_uplink_stats(tmp_path: Path, kind: str) -> None:
    with Chain(tmp_path, site_id=SITE, sites={SITE: (GATE,)}) as chain, Outbox(tmp_path / "outbox.sqlite") as outbox:
        outbox.append(lambda seq: make_event(seq, GATE))
        with refused_uplink(chain, outbox, bad_certificate(chain, tmp_path, kind)) as uplink:
            wait_until(lambda: chain.site.log_tail(50).count("certificate verify failed") >= 2, 15,
                       "refused handshakes")
            last_error = uplink.stats.last_error
    assert last_error is not None and f"{chain.site.host}:{chain.site.port}" in last_error
    if kind == "expired":
        assert "certificate expired" in last_error
