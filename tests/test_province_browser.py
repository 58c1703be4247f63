"""THE browser test of the dashboard: Debian's chromium, driven by playwright (which downloads nothing here),
against the real service (uvicorn, PostgreSQL, the fleet listener on a real Mosquitto) and a REAL gate daemon in a
child process. The operator logs in through the form, sees the gate online in the fleet table, the gate's process
is SIGKILLed, and the row turns offline with its "last seen" while the page stays loaded (server-sent events);
then the place's page. Screenshots go to build/screenshots/ (dashboard.png, place.png) for a person to look at."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from daemon_helpers import write_daemon_config, write_trust_anchors
from province_web_helpers import PASSWORD, province_config, running_dashboard, store_checkins
from qrgate import wire
from qrgate_provisioning.mint import mint_qrgate_pass
from qrgate_tools.broker import MosquittoBroker

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"
DEVICE = "G-CHO-IN"  # registered at CHO-TANDINH by province_web_helpers.GATES

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed")


def start_gate(tmp_path: Path, broker: MosquittoBroker) -> subprocess.Popen[str]:
    """The real gate daemon (``qrgate run``) for DEVICE at the market, its synthetic camera showing two passes."""
    key = write_trust_anchors(tmp_path / "trust")
    now = int(time.time())
    passes = [mint_qrgate_pass(key, "VN-HN", bytes([n]) * 8, f"s{n}", now - 60, now + 3600) for n in range(2)]
    script = tmp_path / "visitors.json"
    script.write_text(json.dumps(passes))
    config = write_daemon_config(
        tmp_path / "gate.toml", device_id=DEVICE, site_id="CHO-TANDINH", camera=f'path = "{script}"',
        trust=tmp_path / "trust", outbox=tmp_path / "outbox.sqlite", port=broker.port, reconnect_min_s=0.1,
        service="telemetry_interval_s = 1")
    return subprocess.Popen([sys.executable, "-m", "qrgate.cli", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class SimulatedGate:
    """A second gate, at the bus station, played over MQTT (status, then telemetry every second) so that the
    table has more than one row; the gate under test is the real daemon."""

    def __init__(self, broker: MosquittoBroker, device_id: str, site_id: str) -> None:
        self.device_id = device_id
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id)
        self.client.will_set(wire.availability_topic(device_id), wire.OFFLINE, qos=1, retain=True)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        status = wire.DeviceStatus(device_id=device_id, site_id=site_id, gate="Cổng 1", direction="both",
                                   state="online", time=wire.iso_utc(time.time()), software="1.4.0",
                                   config_hash="9f2c4e11aa03b7d2", trust_list_version=12, trust_list_age_s=5400,
                                   clock_synced=True, pending=3)
        self.client.publish(wire.availability_topic(device_id), wire.ONLINE, qos=1, retain=True).wait_for_publish(10)
        self.client.publish(wire.status_topic(device_id), status.model_dump_json(), qos=1,
                            retain=True).wait_for_publish(10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        started = time.time()
        while not self._stop.wait(1.0):
            telemetry = wire.Telemetry(device_id=self.device_id, time=wire.iso_utc(time.time()),
                                       uptime_s=int(time.time() - started) + 86_000, pending=3, sent=120,
                                       resent=0, delivered=117, refused=0, disk_free_bytes=11_800_000_000,
                                       frames_per_s=14.8, cpu_temp_c=52.5, clock_synced=True)
            self.client.publish(wire.telemetry_topic(self.device_id), telemetry.model_dump_json(), qos=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(name="chromium")
def chromium_fixture() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def seed_market_day(dsn: str, zone: dt.tzinfo) -> None:
    """Check-ins at the market since midnight, so the place's page has hours to show."""
    now = dt.datetime.now(zone)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    span = now - start
    entries = [("in", "accepted", f"p{n}", start + span * (0.3 + 0.65 * n / 40)) for n in range(40)]
    entries += [("in", "rejected", f"r{n}", start + span * (0.5 + 0.4 * n / 6)) for n in range(6)]
    entries.append(("in", "accepted", "p39", start + span * 0.97))  # in again without an out: flagged
    exits = [("out", "accepted", f"p{n}", start + span * (0.45 + 0.5 * n / 25)) for n in range(25)]
    store_checkins(dsn, "CHO-TANDINH", "G-CHO-IN", "Cổng chính", entries)
    store_checkins(dsn, "CHO-TANDINH", "G-CHO-OUT", "Cổng sau", exits)


def test_an_operator_sees_a_killed_gate_turn_offline_without_reloading(
        chromium: object, province_dsn: str, broker: MosquittoBroker, tmp_path: Path):
    from playwright.sync_api import Browser, expect

    assert isinstance(chromium, Browser)
    config = province_config(province_dsn, broker.host, broker.port, heartbeat_s=2)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with running_dashboard(config) as dashboard:
        seed_market_day(province_dsn, dashboard.context.zone)
        gate = start_gate(tmp_path, broker)
        bus_station = SimulatedGate(broker, "G-BX-01", "BX-MIENDONG")
        try:
            page = chromium.new_page(viewport={"width": 1500, "height": 720}, locale="vi-VN")
            page.goto(dashboard.url + "/")
            expect(page).to_have_url(f"{dashboard.url}/login?next=%2F")
            page.fill("#name", "operator1")
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            expect(page).to_have_url(dashboard.url + "/")

            row = page.locator(f"#gate-{DEVICE}")
            expect(row.locator(".badge")).to_have_text("Trực tuyến", timeout=60_000)
            expect(row).to_contain_text("Chợ Tân Định")
            expect(row).to_contain_text("Quận 1")
            expect(page.locator("#live")).to_have_text("Đang cập nhật trực tiếp")
            expect(row.locator("td").nth(4)).not_to_have_text("—", timeout=30_000)  # the software version
            page.evaluate("window.qrgateNotReloaded = true")

            gate.kill()  # SIGKILL: no goodbye; the broker publishes the gate's last will
            gate.wait(30)
            expect(row.locator(".badge")).to_have_text("Ngoại tuyến", timeout=60_000)
            expect(row.locator(".last-seen")).to_contain_text("lần cuối")
            assert page.evaluate("window.qrgateNotReloaded === true"), "the page was reloaded"
            expect(page.locator("#fleet-summary")).to_contain_text("1 ngoại tuyến")
            expect(page.locator("#gate-G-BX-01 .badge")).to_have_text("Trực tuyến")
            dashboard_png = SCREENSHOTS / "dashboard.png"
            page.screenshot(path=str(dashboard_png), full_page=True)

            page.click(f"#gate-{DEVICE} a[href='/places/CHO-TANDINH']")
            expect(page).to_have_url(dashboard.url + "/places/CHO-TANDINH")
            expect(page.locator("h1")).to_contain_text("Chợ Tân Định")
            expect(page.locator("#entries")).to_have_text("41")
            expect(page.locator("#exits")).to_have_text("25")
            expect(page.locator("#inside")).to_have_text("15")
            expect(page.locator("#passback")).to_have_text("1")
            expect(page.locator("figure.chart rect.bar-in").first).to_be_visible()
            place_png = SCREENSHOTS / "place.png"
            page.screenshot(path=str(place_png), full_page=True)
            page.close()
        finally:
            bus_station.close()
            if gate.poll() is None:
                gate.kill()
                gate.wait(30)
    for path in (dashboard_png, place_png):
        assert path.stat().st_size > 10_000
        print(f"screenshot: {path}")
