"""Verification: the gate's own checks, run on it, and its birth message seen on the site broker.

``qrgate check-config`` and ``qrgate self-test --json`` run on the gate as the service user, with the unit's
environment: the files are readable by the user the daemon runs as, the pins and the camera answer, the broker
accepts the gate's new certificate. The self-test needs the pins and the camera, so it runs before the unit
starts (or while it is stopped for the changes).

Then the unit starts, and the laptop watches the site broker with its own reader credential (a site reader of
brokerconf.SiteBroker.readers: it may read every gate's status and availability, and write nothing): the gate
is up when its retained ``available`` is ``online`` and its retained status carries the configuration hash
and the software version just installed. After a (re)start only a message the broker forwards live counts, not
one retained from before, so a gate whose new certificate is refused cannot pass on its old birth message. One
watcher serves a whole batch: the broker makes the certificate's CN the client id, so two connections with one
reader certificate would take each other's session over.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from qrgate import wire

from .checklist import ProvisionError
from .context import Context, Observer
from .layout import SERVICE_USER

SELF_TEST_TIMEOUT_S = 120


async def check_config(ctx: Context, env: dict[str, str]) -> bool:
    done = await ctx.remote.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), ctx.layout.qrgate,
                                 "check-config", ctx.layout.config], as_user=SERVICE_USER, check=False,
                                what="qrgate check-config")
    if done.ok:
        ctx.checklist.ok_item("check-config", done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "OK")
        return True
    ctx.checklist.failed("check-config", " | ".join((done.stderr or done.stdout).strip().splitlines()[-6:]))
    return False


async def self_test(ctx: Context, env: dict[str, str]) -> bool:
    """``qrgate self-test --json`` on the gate: one checklist item per check."""
    await ctx.step("self-test")
    done = await ctx.remote.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), ctx.layout.qrgate, "self-test",
                                 "--config", ctx.layout.config, "--json"], as_user=SERVICE_USER, check=False,
                                timeout=SELF_TEST_TIMEOUT_S, what="qrgate self-test")
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        ctx.checklist.failed("self-test", f"no report (exit {done.exit_status}): {done.stderr.strip()[-400:]}")
        return False
    if report.get("error"):
        ctx.checklist.failed("self-test", str(report["error"]))
        return False
    ok = True
    for check in report.get("checks", []):
        name, passed, detail = str(check["name"]), bool(check["ok"]), str(check["detail"])
        if not passed and name == "clock" and ctx.options.allow_unsynced_clock:
            passed, detail = True, f"{detail}; allowed by --allow-unsynced-clock"
        ctx.checklist.add(f"self-test {name}", passed, detail)
        ok &= passed
    return ok


@dataclass
class _Seen:
    payload: bytes
    retained: bool
    at: float  # monotonic arrival


class BirthWatcher:
    """One MQTT connection to the site broker, keeping the last status and availability of every gate."""

    def __init__(self, observer: Observer, default_address: str) -> None:
        self.observer = observer
        address = observer.address or default_address
        host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
        self.host, self.port = host, int(port or 8883)
        self._seen: dict[str, _Seen] = {}
        self._changed = threading.Condition()
        self._connected = threading.Event()
        self.error = ""
        self.unavailable = ""  # why start() failed, if it did
        self._client: mqtt.Client | None = None

    def start(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=self.observer.ca_file, certfile=self.observer.cert_file,
                       keyfile=self.observer.key_file)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        try:
            client.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"the laptop cannot reach the site broker {self.host}:{self.port} to watch for the "
                                 f"gate's birth message: {exc}") from None
        client.loop_start()
        self._client = client
        if not self._connected.wait(10):
            raise ProvisionError(f"the site broker {self.host}:{self.port} did not accept the laptop's reader "
                                 f"certificate within 10 s{': ' + self.error if self.error else ''}")

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_connect(self, client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                    _props: object) -> None:
        if reason.is_failure:
            self.error = str(reason)
            return
        client.subscribe([(wire.ALL_STATUS, wire.QOS), (wire.ALL_AVAILABILITY, wire.QOS)])
        self._connected.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason: ReasonCode,
                       _props: object) -> None:
        self.error = str(reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self._seen[message.topic] = _Seen(bytes(message.payload), bool(message.retain), time.monotonic())
            self._changed.notify_all()

    def mark(self) -> float:
        """A point in time: ``wait(fresh_after=mark())`` accepts only what arrives live after it."""
        return time.monotonic()

    def wait(self, gate: str, *, config_hash: str, software: str, timeout: float,
             fresh_after: float | None = None) -> tuple[bool, str]:
        """Whether ``gate`` said it is online with this configuration and software within ``timeout``."""
        if self.unavailable:
            return False, self.unavailable
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                verdict = self._judge(gate, config_hash, software, fresh_after)
                if verdict[0] or time.monotonic() >= deadline:
                    return verdict
                self._changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))

    def _judge(self, gate: str, config_hash: str, software: str, fresh_after: float | None) -> tuple[bool, str]:
        available = self._seen.get(wire.availability_topic(gate))
        status_seen = self._seen.get(wire.status_topic(gate))

        def fresh(seen: _Seen) -> bool:
            return fresh_after is None or (not seen.retained and seen.at >= fresh_after)

        if available is None or not available.payload:
            return False, "no availability message from the gate on the site broker"
        if available.payload.decode(errors="replace") != wire.ONLINE or not fresh(available):
            return False, f"available = {available.payload.decode(errors='replace')!r}" + (
                "" if fresh(available) else " (from before the restart: no new birth message)")
        if status_seen is None or not status_seen.payload:
            return False, "online, but no status message"
        try:
            status = wire.DeviceStatus.model_validate_json(status_seen.payload)
        except ValidationError:
            return False, "online, but its status message does not parse"
        if not fresh(status_seen):
            return False, "online, but its status is from before the restart"
        if status.config_hash != config_hash:
            return False, f"online with config_hash {status.config_hash}, not {config_hash} (the file just written)"
        if status.software != software:
            return False, f"online with software {status.software}, not {software}"
        return True, (f"online on {self.host}:{self.port}: config_hash {status.config_hash}, qrgate {status.software}"
                      f", {status.pending if status.pending is not None else '?'} pending")


async def birth(ctx: Context, watcher: BirthWatcher | None, *, config_hash: str, software: str,
                fresh_after: float | None) -> bool:
    await ctx.step("birth")
    if watcher is None:
        ctx.checklist.failed("birth message", "not watched: give the laptop's site-reader credential (--observer-cert, "
                                              "--observer-key, --observer-ca) to see the gate come online")
        return False
    timeout = ctx.options.birth_timeout_s
    ok, detail = await asyncio.to_thread(watcher.wait, ctx.spec.gate, config_hash=config_hash,
                                         software=software, timeout=timeout,
                                         fresh_after=fresh_after)
    ctx.checklist.add("birth message", ok, detail if ok else f"within {timeout:g} s: {detail}")
    return ok
