"""Mosquitto configurations for the site broker and the provincial broker, rendered from templates.

The templates are ``firmware/mosquitto/*.conf.in`` and ``*.acl.in`` (``string.Template``:
``${name}`` placeholders, so Mosquitto's own ``%u``/``%c`` pass through untouched). This module
validates the parameters, builds the per-role ACL blocks the templates cannot loop over, and
writes ``mosquitto.conf`` plus ``qrgate.acl`` into a directory. Nothing here is hand-edited on a
broker: a change is a new render, which the tests start with the real mosquitto.

Why the ACLs look as they do is written in the templates and in docs/mqtt.md ("Broker
configurations"); in short: gates are confined by ``pattern`` lines to ``qrgate/v1/device/<CN>/#``,
where they read everything and write only what they say (never their own ack or command topic);
a site's bridge may act only for the gates listed for that site; every role user is denied the
device subtree named after itself, since pattern lines apply to every user.

The command line over this module is ``qrgate-issuer broker-config`` (``commands.broker_config``).
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qrgate import wire
from qrgate.errors import ConfigError

from .brokerconf_checks import (
    _check_files_and_user,
    _check_host,
    _check_id,
    _check_path,
    _check_persistence,
    _check_port,
    _claim,
)

TEMPLATES_ENV = "QRGATE_MOSQUITTO_TEMPLATES"
# Where an installed issuer finds the templates when no checkout is beside this module.
INSTALLED_TEMPLATES_DIR = Path("/usr/share/qrgate/firmware/mosquitto")

CONFIG_FILE_NAME = "mosquitto.conf"
ACL_FILE_NAME = "qrgate.acl"
# The listener's certificate revocation list (crlfile): always rendered, so no broker runs without one.
# mosquitto refuses to start if the file is missing or holds no CRL, and refuses every client whose CA has
# no CRL in it or whose CRL is past its nextUpdate; a CA with nothing revoked publishes an empty CRL
# (qrgate_provisioning.provision.device_ca.DeviceCA.write_crl). It is re-read on SIGHUP.
DEFAULT_CRL_FILE = "/etc/mosquitto/certs/crl.pem"


BRIDGE_PROTOCOLS = ("mqttv311", "mqttv50")

DEVICE_TREE = f"{wire.TOPIC_ROOT}/device"
PROVINCE_TREE = f"{wire.TOPIC_ROOT}/province"
SITE_TREE = f"{wire.TOPIC_ROOT}/site"
# What a gate writes, each in its own subtree: all it may write. Its ack and command topics are in that subtree
# too, but only the consumer, the operators and the service write those (a gate commanding itself would defeat
# the ACL's point).
GATE_WRITES = (wire.checkin_topic, wire.status_topic, wire.availability_topic, wire.telemetry_topic,
               wire.command_response_topic)


def gate_rules(device: str, kind: str = "topic") -> list[str]:
    """ACL lines for one gate's subtree: read all of it, write only what the gate says (GATE_WRITES). ``device`` is
    a device id, or ``%u`` with ``kind`` "pattern" (every certificate CN, on a broker's gates' listener)."""
    return [f"{kind} read {DEVICE_TREE}/{device}/#", *(f"{kind} write {topic(device)}" for topic in GATE_WRITES)]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A listener's or a bridge's TLS files, as paths on the machine that runs the broker.

    For a listener: the CA that signs the clients' certificates, and the broker's own certificate
    and key. For a bridge: the CA that signed the remote broker's certificate, and the bridge's
    client certificate (CN ``site-<site_id>``) and key.
    """

    ca_file: str
    cert_file: str
    key_file: str

    def validate(self, what: str) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            _check_path(f"{what}.{name}", getattr(self, name))


@dataclass(frozen=True, slots=True)
class SiteBroker:
    """Parameters of a site's broker: its gates' TLS listener and its bridge to the province."""

    site_id: str
    province_host: str
    listener_tls: TlsFiles
    bridge_tls: TlsFiles
    province_port: int = 8883
    port: int = 8883
    bind_address: str = "0.0.0.0"
    acl_file: str = f"/etc/mosquitto/{ACL_FILE_NAME}"
    persistence_dir: str = "/var/lib/mosquitto"
    log_file: str | None = None  # None: stderr, i.e. the journal under systemd (no log file on the SD card)
    run_as_user: str = "mosquitto"
    restart_timeout_s: tuple[int, int] = (5, 60)  # bridge reconnect: decorrelated jitter from base to cap
    bridge_protocol: str = "mqttv311"  # see site-broker.conf.in: mosquitto 2.0's v5 bridge loses its remote session
    bridge_keepalive_s: int = 60
    autosave_changes: int = 100
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 20  # mosquitto's default, written out: a crash can lose these too
    readers: tuple[str, ...] = ()  # site-local consumers (a check-in log, a dashboard): read the gates' topics
    crl_file: str = DEFAULT_CRL_FILE  # the listener's CRLs: the site's device CA's (revoked gates), see above

    @property
    def bridge_id(self) -> str:
        """The bridge's client id at the province, and the CN its certificate must carry."""
        return bridge_user(self.site_id)

    @property
    def notification_topic(self) -> str:
        """Retained ``1``/``0``: whether this site's bridge is connected (on both brokers)."""
        return bridge_notification_topic(self.site_id)

    def validate(self) -> None:
        _check_id("site_id", self.site_id)
        _check_id("bridge CN", self.bridge_id)  # a CN holds at most 64 characters
        _check_host("province_host", self.province_host)
        _check_host("bind_address", self.bind_address)
        _check_port("province_port", self.province_port)
        _check_port("port", self.port)
        self.listener_tls.validate("listener_tls")
        self.bridge_tls.validate("bridge_tls")
        _check_files_and_user(self)
        if self.bridge_protocol not in BRIDGE_PROTOCOLS:
            raise ConfigError(f"bridge_protocol {self.bridge_protocol!r} is not one of {', '.join(BRIDGE_PROTOCOLS)}")
        base, cap = self.restart_timeout_s
        # mosquitto draws each wait with rand_between(base, 3 * previous): base 0 would divide by zero.
        if not 1 <= base <= cap:
            raise ConfigError(f"restart_timeout_s must satisfy 1 <= base <= cap, got {base} {cap}")
        if self.bridge_keepalive_s < 5:
            raise ConfigError(
                f"bridge_keepalive_s must be at least 5 (mosquitto's minimum), got {self.bridge_keepalive_s}"
            )
        _check_persistence(self.autosave_changes, self.max_queued_messages)
        if self.max_inflight_messages < 1:
            raise ConfigError(f"max_inflight_messages must be at least 1, got {self.max_inflight_messages}")
        for reader in self.readers:
            _check_id("readers", reader)
        if self.bridge_id in self.readers:
            raise ConfigError(f"reader {self.bridge_id!r} is the name of this site's bridge")


@dataclass(frozen=True, slots=True)
class ProvincialBroker:
    """Parameters of the provincial broker and of who may do what on it.

    ``sites`` maps each site id to the ids of its gates: that site's bridge may act for exactly
    those gates. ``consumers`` read check-ins and write acks, ``operators`` read every device topic
    and write commands, ``issuers`` write the province-wide trust and revocation lists, ``services``
    (the province's operations service, ``qrgate-province``) read what every gate says, are the only
    writers of its hello and of the daily report, and send the commands operators sign on its dashboard.
    """

    listener_tls: TlsFiles
    sites: Mapping[str, Sequence[str]] = field(default_factory=dict)
    consumers: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()
    issuers: tuple[str, ...] = ()
    port: int = 8883
    bind_address: str = "0.0.0.0"
    acl_file: str = f"/etc/mosquitto/{ACL_FILE_NAME}"
    persistence_dir: str = "/var/lib/mosquitto"
    log_file: str | None = None
    run_as_user: str = "mosquitto"
    # A timer, not every N changes as the site broker: at a province's rate each save rewrites the whole queue,
    # and with a backlog of 60,000 check-ins the broker took 1,948/s instead of 10,000+ (docs/scale.md). A crash
    # loses at most this many seconds of what had to queue; with end-to-end acks the gates send it again.
    autosave_interval_s: int = 30
    max_queued_messages: int = 1_000_000
    services: tuple[str, ...] = ()
    crl_file: str = DEFAULT_CRL_FILE  # one CRL per CA in listener_tls.ca_file (each site's device CA, the roles')

    def validate(self) -> None:
        _check_host("bind_address", self.bind_address)
        _check_port("port", self.port)
        self.listener_tls.validate("listener_tls")
        _check_files_and_user(self)
        _check_persistence(self.autosave_interval_s, self.max_queued_messages, what="autosave_interval_s")
        owner: dict[str, str] = {}  # every name a certificate CN can carry -> what it is
        for site_id, devices in self.sites.items():
            _check_id("site id", site_id)
            _check_id(f"bridge CN of site {site_id}", bridge_user(site_id))  # a CN holds at most 64 characters
            _claim(owner, bridge_user(site_id), f"the bridge of site {site_id}")
            for device_id in devices:
                _check_id(f"device id (site {site_id})", device_id)
                _claim(owner, device_id, f"a gate of site {site_id}")
        roles = (("a consumer", self.consumers), ("an operator", self.operators), ("an issuer", self.issuers),
                 ("a service", self.services))
        for role, names in roles:
            for name in names:
                _check_id(role.split()[-1], name)
                _claim(owner, name, role)


@dataclass(frozen=True, slots=True)
class RenderedBroker:
    """The files ``write_*`` produced."""

    config_file: Path
    acl_file: Path


def bridge_user(site_id: str) -> str:
    return f"site-{site_id}"


def bridge_notification_topic(site_id: str) -> str:
    return f"{SITE_TREE}/{site_id}/bridge"


def templates_dir() -> Path:
    """$QRGATE_MOSQUITTO_TEMPLATES, this checkout's firmware/mosquitto, or /usr/share/qrgate."""
    override = os.environ.get(TEMPLATES_ENV)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[2] / "firmware" / "mosquitto"
    if checkout.is_dir() or not INSTALLED_TEMPLATES_DIR.is_dir():
        return checkout
    return INSTALLED_TEMPLATES_DIR


def render_site_broker(site: SiteBroker) -> str:
    site.validate()
    base, cap = site.restart_timeout_s
    return _render(
        "site-broker.conf.in",
        **_listener_values(site),
        max_inflight_messages=site.max_inflight_messages,
        province_host=site.province_host,
        province_port=site.province_port,
        bridge_id=site.bridge_id,
        bridge_protocol=site.bridge_protocol,
        autosave_changes=site.autosave_changes,
        restart_base_s=base,
        restart_cap_s=cap,
        bridge_keepalive_s=site.bridge_keepalive_s,
        notification_topic=site.notification_topic,
        bridge_ca_file=site.bridge_tls.ca_file,
        bridge_cert_file=site.bridge_tls.cert_file,
        bridge_key_file=site.bridge_tls.key_file,
    )


def render_site_acl(site: SiteBroker) -> str:
    site.validate()
    blocks = [
        _user_block(
            reader, "A site-local reader: the gates' check-ins, status and availability, and the bridge's state.",
            [f"topic read {DEVICE_TREE}/+/checkin", f"topic read {DEVICE_TREE}/+/status",
             f"topic read {DEVICE_TREE}/+/available", f"topic read {site.notification_topic}"],
        )
        for reader in site.readers
    ]
    return _render("site-broker.acl.in", gate_rules="\n".join(gate_rules("%u", "pattern")), readers="".join(blocks))


def render_provincial_broker(province: ProvincialBroker) -> str:
    province.validate()
    return _render("provincial-broker.conf.in", **_listener_values(province),
                   autosave_interval_s=province.autosave_interval_s)


def render_provincial_acl(province: ProvincialBroker) -> str:
    province.validate()
    site_blocks = []
    for site_id, devices in province.sites.items():
        grants = [f"topic write {bridge_notification_topic(site_id)}"]
        # Per gate, not a wildcard: a site broker (or its stolen certificate) can then speak and
        # receive acks and commands only for its own gates, whatever topics its bridge maps; and it writes
        # what its gates say, never their ack or command topics (only consumers, operators and services write
        # those).
        grants += [rule for device_id in devices for rule in gate_rules(device_id)]
        site_blocks.append(_user_block(
            bridge_user(site_id), f"The bridge of site {site_id}: only that site's {len(devices)} gate(s).", grants
        ))
    consumers = [
        _user_block(name, "Backend consumer: reads every gate's check-ins and presence, acknowledges check-ins.", [
            f"topic read {DEVICE_TREE}/+/checkin", f"topic read {DEVICE_TREE}/+/status",
            f"topic read {DEVICE_TREE}/+/available", f"topic write {DEVICE_TREE}/+/ack",
        ])
        for name in province.consumers
    ]
    operators = [
        _user_block(name, "Operator: reads everything gates and bridges say, sends commands to gates.", [
            f"topic read {DEVICE_TREE}/#", f"topic read {SITE_TREE}/#", f"topic read {PROVINCE_TREE}/#",
            f"topic write {DEVICE_TREE}/+/command",
        ])
        for name in province.operators
    ]
    issuers = [
        _user_block(name, "Trust-list issuer: the only writer of the province-wide signed lists.", [
            f"topic readwrite {PROVINCE_TREE}/#",
        ])
        for name in province.issuers
    ]
    # The service also sends commands and reads their answers: its dashboard passes on the commands operators
    # sign there (operator role, audited). That opens no door: a gate carries out only a command signed by an
    # operator key in its operators.json, for itself, unexpired and not replayed, whoever published it.
    services = [
        _user_block(name, "The province's operations service: reads what every gate and bridge says, says hello "
                    "(the gates answer with their state), publishes the daily report, and sends the commands "
                    "operators sign on its dashboard (gates refuse any not signed by an operator key).", [
            f"topic read {DEVICE_TREE}/+/checkin", f"topic read {DEVICE_TREE}/+/status",
            f"topic read {DEVICE_TREE}/+/available", f"topic read {DEVICE_TREE}/+/telemetry",
            f"topic read {SITE_TREE}/#", f"topic write {wire.PROVINCE_HELLO_TOPIC}",
            f"topic readwrite {wire.DAILY_REPORT_TOPIC}",
            f"topic write {DEVICE_TREE}/+/command", f"topic read {DEVICE_TREE}/+/response",
        ])
        for name in province.services
    ]
    return _render(
        "provincial-broker.acl.in", gate_rules="\n".join(gate_rules("%u", "pattern")),
        site_bridges="".join(site_blocks), consumers="".join(consumers),
        operators="".join(operators), issuers="".join(issuers), services="".join(services),
    )


def write_site_broker(site: SiteBroker, directory: Path) -> RenderedBroker:
    """Render the site broker's ``mosquitto.conf`` and ``qrgate.acl`` into ``directory``.

    The configuration names the ACL by ``site.acl_file`` (where it will be installed), which need
    not be the file written here.
    """
    return _write(directory, render_site_broker(site), render_site_acl(site))


def write_provincial_broker(province: ProvincialBroker, directory: Path) -> RenderedBroker:
    """Render the provincial broker's ``mosquitto.conf`` and ``qrgate.acl`` into ``directory``."""
    return _write(directory, render_provincial_broker(province), render_provincial_acl(province))


def _write(directory: Path, config: str, acl: str) -> RenderedBroker:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_file, acl_file = directory / CONFIG_FILE_NAME, directory / ACL_FILE_NAME
    config_file.write_text(config)
    acl_file.write_text(acl)
    return RenderedBroker(config_file, acl_file)


def _render(template_name: str, **values: object) -> str:
    path = templates_dir() / template_name
    try:
        template = string.Template(path.read_text())
    except OSError as exc:
        raise ConfigError(
            f"broker template {path}: {exc.strerror or exc} (set ${TEMPLATES_ENV} to the templates' directory)"
        ) from exc
    # substitute, not safe_substitute: a placeholder without a value is a bug to see, not a config to ship.
    return template.substitute({name: str(value) for name, value in values.items()})


def _listener_values(broker: SiteBroker | ProvincialBroker) -> dict[str, object]:
    """The template values both brokers have: who runs it, its ACL, log and sessions, and its TLS listener."""
    return dict(
        run_as_user=broker.run_as_user,
        acl_file=broker.acl_file,
        log_dest=_log_dest(broker.log_file),
        persistence_dir=broker.persistence_dir,
        max_queued_messages=broker.max_queued_messages,
        port=broker.port,
        bind_address=broker.bind_address,
        ca_file=broker.listener_tls.ca_file,
        crl_file=broker.crl_file,
        cert_file=broker.listener_tls.cert_file,
        key_file=broker.listener_tls.key_file,
    )


def _user_block(name: str, comment: str, grants: list[str]) -> str:
    lines = [f"\n# {comment}", f"user {name}", f"topic deny {DEVICE_TREE}/{name}/#", *grants]
    return "\n".join(lines) + "\n"


def _log_dest(log_file: str | None) -> str:
    return "stderr" if log_file is None else f"file {log_file}"
