"""Helpers for tests that run the real daemon (``python -m qrgate.cli run``) in a child process:
trust anchors on disk and the gate's TOML config."""

from __future__ import annotations

from pathlib import Path

from qrgate_provisioning.keys import IssuerKey, new_issuer_key, trust_entry, trust_file


def write_trust_anchors(trust: Path) -> IssuerKey:
    """A fresh EdDSA key for issuer "VN-HN", trusted by the gate through the new directory ``trust``."""
    trust.mkdir()
    key = new_issuer_key("VN-HN", "EdDSA")
    (trust / "issuers.json").write_text(trust_file([trust_entry(key)]))
    return key


def write_daemon_config(
    path: Path, *, device_id: str, site_id: str, camera: str, trust: Path, outbox: Path, port: int,
    reconnect_min_s: float = 0.05, mqtt_extra: str = "", service: str = "", remote: str = "",
) -> Path:
    """A gate config at ``path``: the synthetic camera at 60 fps, mock pins, plain MQTT to loopback
    ``port``. ``camera``, ``mqtt_extra``, ``service`` and ``remote`` are further TOML lines for those tables."""
    path.write_text(f"""
[device]
id = "{device_id}"
site_id = "{site_id}"
mode = "demo"  # the synthetic scene: a bench-top gate (a gate in the field must name a real camera)

[camera]
source = "synthetic"
fps = 60
{camera}

[trust]
paths = ["{trust}"]

[feedback]
mock_pins = true

[outbox]
path = "{outbox}"

[mqtt]
host = "127.0.0.1"
port = {port}
tls = false
reconnect_min_s = {reconnect_min_s}
reconnect_max_s = 0.5
{mqtt_extra}

[service]
{service}

[remote]
{remote}
""")
    return path
