"""Helpers for the dashboard's tests (test_province_web.py, test_province_browser.py): the real service's parts
(PostgreSQL, the fleet listener on the real broker, uvicorn on a free loopback port) put together as
``qrgate-province serve`` does; a small HTTP client that keeps cookies and does not follow redirects, so a test
sees each 303 and each Set-Cookie itself; a gate played over MQTT; and a reader of the server-sent events."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import paho.mqtt.client as mqtt
from argon2 import PasswordHasher
from paho.mqtt.enums import CallbackAPIVersion

from qrgate import wire
from qrgate_provisioning.consumer.postgres_store import PostgresStore
from qrgate_provisioning.province.accounts import Accounts
from qrgate_provisioning.province.commands.common import open_database
from qrgate_provisioning.province.commands.serve import gate_filer
from qrgate_provisioning.province.fleet import FleetState
from qrgate_provisioning.province.fleet_listener import FleetListener
from qrgate_provisioning.province.opening_hours import OpeningHours
from qrgate_provisioning.province.registry import Gate, Place, Registry
from qrgate_provisioning.province.settings import ProvinceConfig
from qrgate_provisioning.province.web.context import ProvinceContext
from qrgate_provisioning.province.web.server import DashboardServer
from qrgate_tools.broker import MosquittoBroker

# cheap argon2 parameters keep log-ins fast in tests; the service uses argon2-cffi's defaults
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORD = "mật khẩu đủ dài 2024"
USERS = {"viewer1": "viewer", "operator1": "operator", "tracer1": "tracer"}

PLACES = [
    Place("BX-MIENDONG", "Bến xe Miền Đông", "bus_station", "Phường 26", "Quận Bình Thạnh",
          "292 Đinh Bộ Lĩnh", True, OpeningHours.parse("24/7")),
    Place("CHO-TANDINH", "Chợ Tân Định", "market", "Phường Tân Định", "Quận 1", "48 Hai Bà Trưng", True,
          OpeningHours.parse("06:00-18:00")),
    Place("QA-PHO", "Quán ăn Phở Hòa", "restaurant", "Phường Tân Định", "Quận 1", "", False,
          OpeningHours.parse("06:00-22:00")),
]
GATES = [Gate("G-CHO-IN", "CHO-TANDINH", "Cổng chính", "in"), Gate("G-CHO-OUT", "CHO-TANDINH", "Cổng sau", "out")]


def province_config(dsn: str, broker_host: str, broker_port: int, *, heartbeat_s: float = 60,
                    alerts: Mapping[str, object] | None = None, **web: object) -> ProvinceConfig:
    """The service's configuration for a test: plain MQTT on loopback, cookies without Secure (plain HTTP)."""
    return ProvinceConfig.model_validate({
        "database": {"dsn": dsn},
        "broker": {"host": broker_host, "port": broker_port, "client_id": f"province-{uuid.uuid4().hex[:8]}"},
        "fleet": {"heartbeat_s": heartbeat_s, "missed_heartbeats": 3},
        "alerts": dict(alerts or {}),
        "web": {"secure_cookies": False, **web},
    })


@dataclass
class Dashboard:
    """A running dashboard and the parts behind it."""

    url: str
    port: int
    context: ProvinceContext
    listener: FleetListener

    @property
    def accounts(self) -> Accounts:
        return self.context.accounts


@contextmanager
def running_dashboard(config: ProvinceConfig, *, seed: bool = True) -> Iterator[Dashboard]:
    """The dashboard as ``qrgate-province serve`` runs it, on a free loopback port, with the people of ``USERS``
    (password ``PASSWORD``) and, with ``seed``, the places and gates above."""
    database = open_database(config)
    try:
        registry = Registry(database)
        accounts = Accounts(database, session_max_age_s=config.web.session_max_age_s, hasher=FAST_HASHER)
        for name, role in USERS.items():
            if accounts.user(name) is None:  # a second dashboard on the same database
                accounts.add_user(name, role, PASSWORD, actor="test")
        if seed:
            for place in PLACES:
                registry.upsert_place(place)
            for gate in GATES:
                registry.assign_gate(gate)
        fleet = FleetState(config.fleet)
        context = ProvinceContext(config, database, registry, fleet, accounts)
        server = DashboardServer(context, bind="127.0.0.1", port=0).start()
        listener = FleetListener(config.broker, fleet, database=database, on_new_gate=gate_filer(registry)).start()
        context.listener = listener
        try:
            assert listener.wait_connected(30), "the fleet listener did not connect to the test broker"
            yield Dashboard(f"http://127.0.0.1:{server.port}", server.port, context, listener)
        finally:
            listener.stop()
            server.stop()
    finally:
        database.close()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def set_cookies(self) -> dict[str, str]:
        """Each Set-Cookie of the reply, by cookie name, as sent (attributes included)."""
        return {line.split("=", 1)[0]: line for line in self.headers.get_all("Set-Cookie") or []}


@dataclass
class Client:
    """A browser's HTTP, by hand: cookies kept, redirects not followed."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            connection.close()
        for line in reply.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(line).items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return reply

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: Mapping[str, str], headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("POST", path, urlencode(form).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})})

    def login(self, name: str, password: str = PASSWORD, next_path: str = "/") -> Reply:
        form = self.get("/login")
        return self.post("/login", {"csrf_token": hidden_csrf(form.text), "name": name, "password": password,
                                    "next": next_path})


def hidden_csrf(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def store_checkins(dsn: str, place_id: str, device_id: str, gate: str,
                   passages: list[tuple[str, str, str, dt.datetime]]) -> None:
    """Check-ins (direction, verdict, person, time) at a place, stored as the consumer stores them."""
    events = []
    for seq, (direction, verdict, person, at) in enumerate(passages, start=1):
        event = wire.CheckinEvent(
            event_id=wire.new_event_id(at.timestamp()), seq=seq, device_id=device_id, site_id=place_id, gate=gate,
            direction=direction, time=wire.iso_utc(at.timestamp()), clock_synced=True,  # type: ignore[arg-type]
            verdict=verdict, reason="accepted" if verdict != "rejected" else "bad_signature",  # type: ignore[arg-type]
            format="qrgate", issuer="VN-HN", pass_id=f"pass-{person}",
            subject_id=f"subject-{person}" if verdict != "rejected" else None)
        events.append((event, event.to_json()))
    store = PostgresStore(dsn)
    try:
        store.store(events, time.time())
    finally:
        store.close()


class Gate:
    """A gate as the broker sees one: its availability (with a last will) and retained status."""

    def __init__(self, broker: MosquittoBroker, device_id: str, site_id: str, gate: str = "Cổng chính",
                 direction: str = "in") -> None:
        self.device_id = device_id
        self.status = wire.DeviceStatus(device_id=device_id, site_id=site_id, gate=gate, direction=direction,
                                        state="online", time=wire.iso_utc(time.time()), software="1.4.0",
                                        config_hash="0123456789abcdef", trust_list_version=7, trust_list_age_s=3600,
                                        clock_synced=True, pending=0)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id)
        self.client.will_set(wire.availability_topic(device_id), wire.OFFLINE, qos=1, retain=True)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.publish(wire.availability_topic(device_id), wire.ONLINE, qos=1, retain=True).wait_for_publish(10)
        self.client.publish(wire.status_topic(device_id), self.status.model_dump_json(), qos=1,
                            retain=True).wait_for_publish(10)

    def go_offline(self) -> None:
        self.client.publish(wire.availability_topic(self.device_id), wire.OFFLINE, qos=1,
                            retain=True).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def read_events(response: http.client.HTTPResponse, until: Callable[[dict[str, object]], bool]) -> dict[str, object]:
    """Read server-sent events until a "fleet" event satisfies ``until``; that event's data."""
    event = ""
    while True:
        line = response.readline().decode("utf-8")
        assert line, "the event stream ended"
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: ") and event == "fleet":
            data: dict[str, object] = json.loads(line[6:])
            if until(data):
                return data
