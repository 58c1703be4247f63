"""The dashboard over HTTP (province.web): a real uvicorn on a free loopback port, a real PostgreSQL, the fleet
listener on a real Mosquitto, gates played by MQTT messages a real gate would send. Log-in, refused and audited
log-ins, CSRF on every POST, roles, the security headers, escaping, the pages in both languages, the live
event stream, a place's counts, the reports, /metrics, and ``qrgate-province serve``/``user``/``audit``."""

from __future__ import annotations

import datetime as dt
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mqtt_helpers import wait_until
from province_web_helpers import (
    PASSWORD,
    Client,
    Dashboard,
    Gate,
    hidden_csrf,
    province_config,
    read_events,
    running_dashboard,
    store_checkins,
)
from qrgate_provisioning.errors import ProvinceError
from qrgate_provisioning.province import cli
from qrgate_provisioning.province.opening_hours import OpeningHours
from qrgate_provisioning.province.registry import Place
from qrgate_provisioning.province.report import build_report
from qrgate_provisioning.province.report_store import save_report
from qrgate_provisioning.province.web.app import CONTENT_SECURITY_POLICY
from qrgate_provisioning.province.web.i18n import LABELS
from qrgate_provisioning.province.web.render import TEMPLATES
from qrgate_provisioning.province.web.server import DashboardServer
from qrgate_tools.broker import MosquittoBroker, free_loopback_port


@pytest.fixture(name="dashboard")
def dashboard_fixture(province_dsn: str, broker: MosquittoBroker) -> Dashboard:
    with running_dashboard(province_config(province_dsn, broker.host, broker.port)) as dashboard:
        yield dashboard  # type: ignore[misc]


def logged_in(dashboard: Dashboard, name: str = "operator1") -> Client:
    client = Client(dashboard.port)
    assert client.login(name).status == 303
    return client


def audit_actions(dashboard: Dashboard) -> list[tuple[str, str, dict[str, object]]]:
    return [(entry.actor, entry.action, entry.detail) for entry in dashboard.accounts.audit_entries()]


def test_every_page_needs_a_log_in_but_the_machine_endpoints_do_not(dashboard: Dashboard):
    client = Client(dashboard.port)
    for path in ("/", "/alerts", "/reports", "/audit", "/places/CHO-TANDINH", "/reports/2025-03-05"):
        reply = client.get(path)
        assert reply.status == 303, path
        assert reply.header("Location").startswith("/login?next=%2F"), path
    for path in ("/events", "/reports/2025-03-05.csv", "/reports/2025-03-05.pdf"):
        assert client.get(path).status == 401, path  # a script or a download cannot follow a redirect to a form
    assert client.post("/logout", {"csrf_token": "x"}).status == 401
    assert client.get("/healthz").status == 200
    assert client.get("/metrics").status == 200
    assert client.get("/static/fleet.js").status == 200
    assert client.get("/no-such-page").status == 404


def test_a_wrong_password_is_refused_and_audited_and_the_right_one_opens_a_session(dashboard: Dashboard):
    client = Client(dashboard.port)
    refused = client.login("viewer1", "not the password")
    assert refused.status == 401
    assert "Sai tên đăng nhập hoặc mật khẩu" in refused.text
    assert "qrgate_session" not in client.cookies
    assert client.login("somebody-else", PASSWORD).status == 401
    assert ("viewer1", "login.failed", {"reason": "wrong_password"}) in audit_actions(dashboard)
    assert ("?", "login.failed", {"reason": "unknown_name"}) in audit_actions(dashboard)  # the name is not kept
    assert all(PASSWORD not in str(entry) for entry in audit_actions(dashboard))

    accepted = client.login("viewer1", next_path="/reports")
    assert accepted.status == 303 and accepted.header("Location") == "/reports"
    cookie = accepted.set_cookies()["qrgate_session"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # web.secure_cookies = false in this plain-HTTP test
    assert client.get("/").status == 200
    assert ("viewer1", "login", {"role": "viewer"}) in audit_actions(dashboard)
    # the log-in page is no open redirect
    assert Client(dashboard.port).login("viewer1", next_path="//evil.example/").header("Location") == "/"


def test_a_session_cookie_is_secure_and_host_only_when_served_over_https(province_dsn: str, broker: MosquittoBroker):
    config = province_config(province_dsn, broker.host, broker.port, secure_cookies=True)
    with running_dashboard(config, seed=False) as dashboard:
        client = Client(dashboard.port)
        reply = client.login("tracer1")
        cookie = reply.set_cookies()["__Host-qrgate_session"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "Domain" not in cookie
        assert client.get("/", {"X-Forwarded-Proto": "https"}).header("Strict-Transport-Security")


def test_a_post_without_its_csrf_token_is_refused(dashboard: Dashboard):
    anonymous = Client(dashboard.port)
    form_page = anonymous.get("/login")
    login_token = hidden_csrf(form_page.text)
    form = {"name": "operator1", "password": PASSWORD}
    assert anonymous.post("/login", form).status == 403  # no token
    assert anonymous.post("/login", {**form, "csrf_token": login_token + "x"}).status == 403  # not the cookie's
    assert Client(dashboard.port).post("/login", {**form, "csrf_token": login_token}).status == 403  # no cookie
    assert "qrgate_session" not in anonymous.cookies

    client = logged_in(dashboard)
    csrf = hidden_csrf(client.get("/").text)
    assert client.post("/logout", {}).status == 403
    assert client.post("/logout", {"csrf_token": "forged"}).status == 403
    assert client.post("/logout", {"csrf_token": login_token}).status == 403  # another form's token
    assert client.get("/").status == 200  # still logged in
    assert client.post("/logout", {}, {"X-CSRF-Token": csrf}).status == 303  # the header does as well as the field
    assert client.get("/").status == 303
    assert ("operator1", "logout", {}) in audit_actions(dashboard)

    again = logged_in(dashboard)
    assert again.post("/logout", {"csrf_token": csrf}).status == 403  # the old session's token is dead
    token = again.cookies["qrgate_session"]
    assert again.post("/logout", {"csrf_token": hidden_csrf(again.get("/").text)}).status == 303
    assert dashboard.accounts.session(token) is None


def test_the_audit_log_is_for_operators_and_tracers_not_viewers(dashboard: Dashboard):
    viewer = logged_in(dashboard, "viewer1")
    refused = viewer.get("/audit")
    assert refused.status == 403 and "Vai trò của bạn không được xem trang này" in refused.text
    assert 'href="/audit"' not in viewer.get("/").text  # nor is it offered
    for name in ("operator1", "tracer1"):
        page = logged_in(dashboard, name).get("/audit")
        assert page.status == 200
        assert "login" in page.text and "viewer1" in page.text
    only = logged_in(dashboard, "tracer1").get("/audit?actor=viewer1").text
    assert "viewer1" in only and "operator1</td>" not in only


def test_security_headers_and_escaping(dashboard: Dashboard):
    dashboard.context.registry.upsert_place(Place(
        "CHO-XSS", '<script>alert("x")</script> & Chợ', "market", "Phường 1", "Quận 3", "", True,
        OpeningHours.parse("24/7")))
    client = logged_in(dashboard)
    for path in ("/", "/places/CHO-XSS", "/login", "/alerts"):
        reply = client.get(path)
        assert reply.header("Content-Security-Policy") == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY and "script-src 'self'" in CONTENT_SECURITY_POLICY
        assert reply.header("X-Frame-Options") == "DENY"
        assert reply.header("X-Content-Type-Options") == "nosniff"
        assert reply.header("Cache-Control") == "no-store"
        assert reply.header("Referrer-Policy") == "no-referrer"
        assert not re.search(r"<script(?![^>]*\bsrc=)", reply.text), f"an inline script on {path}"
        assert not re.search(r"\sstyle=|\son[a-z]+=", reply.text), f"an inline style or handler on {path}"
    place = client.get("/places/CHO-XSS").text
    assert "<script>alert" not in place
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Chợ" in place
    assert client.get("/static/style.css").header("Cache-Control") == "no-cache"


def test_every_page_in_both_languages_and_the_switch_is_remembered(dashboard: Dashboard):
    client = logged_in(dashboard)
    pages = ("/", "/alerts", "/reports", "/audit", "/places/CHO-TANDINH")
    for path in pages:
        vietnamese, english = client.get(f"{path}?lang=vi"), client.get(f"{path}?lang=en")
        assert vietnamese.status == english.status == 200, path
        assert '<html lang="vi">' in vietnamese.text and '<html lang="en">' in english.text
        assert "Đăng xuất" in vietnamese.text and "Log out" in english.text
        assert "Log out" not in vietnamese.text and "Đăng xuất" not in english.text
    assert client.cookies["qrgate_lang"] == "en"
    assert "The province&#39;s gates" in client.get("/").text  # remembered without ?lang
    assert 'href="/places/CHO-TANDINH?day=2025-03-05&amp;lang=vi"' in client.get(
        "/places/CHO-TANDINH?day=2025-03-05").text  # the switch keeps the page's query
    assert "Đăng nhập" in Client(dashboard.port).get("/login").text  # web.language for a new browser


def test_every_label_a_template_names_exists_in_both_languages():
    named = set()
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        named |= set(re.findall(r"\bt\.([a-z_]+)\b", text)) | set(re.findall(r"\bt\[\"([a-z_]+)\"\]", text))
    assert named and named <= LABELS.keys(), named - LABELS.keys()
    for key, (vietnamese, english) in LABELS.items():
        assert vietnamese and english, key
    # Vietnamese is written with its diacritics, not stripped to ASCII
    assert sum(1 for vietnamese, _ in LABELS.values() if not vietnamese.isascii()) > len(LABELS) * 0.6


def test_a_gate_shows_in_the_table_goes_offline_in_the_event_stream_and_raises_an_alert(
        province_dsn: str, broker: MosquittoBroker):
    config = province_config(province_dsn, broker.host, broker.port, alerts={"offline_s": 0.5})
    with running_dashboard(config) as dashboard:
        gate = Gate(broker, "G-CHO-IN", "CHO-TANDINH")
        try:
            check_a_live_gate_going_offline(dashboard, gate)
        finally:
            gate.close()


def check_a_live_gate_going_offline(dashboard: Dashboard, gate: Gate) -> None:
    wait_until(lambda: (view := dashboard.context.fleet.view("G-CHO-IN")) is not None and view.state == "online",
               timeout=30, what="the gate online in the fleet")
    client = logged_in(dashboard, "viewer1")
    page = client.get("/?district=Qu%E1%BA%ADn%201").text
    row = re.search(r'<tr id="gate-G-CHO-IN".*?</tr>', page, re.S)
    assert row is not None
    assert "Trực tuyến" in row.group(0) and "Chợ Tân Định" in row.group(0) and "Quận 1" in row.group(0)
    assert "1.4.0" in row.group(0) and "01234567" in row.group(0) and "Đã đồng bộ" in row.group(0)
    assert "gate-G-CHO-IN" not in client.get("/?state=offline").text
    assert "gate-G-CHO-IN" not in client.get("/?district=Qu%E1%BA%ADn%203").text

    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    connection.request("GET", "/events?district=Qu%E1%BA%ADn%201&lang=vi",
                       headers={"Cookie": f"qrgate_session={client.cookies['qrgate_session']}"})
    response = connection.getresponse()
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    first = read_events(response, lambda data: "G-CHO-IN" in data["order"])  # type: ignore[operator]
    assert "Trực tuyến" in json.dumps(first, ensure_ascii=False)
    gate.go_offline()
    offline = read_events(response, lambda data: any(
        "state-offline" in row["html"] for row in data["rows"]))  # type: ignore[attr-defined, index]
    html = offline["rows"][0]["html"]  # type: ignore[index]
    assert "Ngoại tuyến" in html and "lần cuối" in html
    assert "1 ngoại tuyến" in str(offline["summary"])
    connection.close()

    def alert_shown() -> bool:
        page = client.get("/alerts").text
        return "Ngoại tuyến quá lâu" in page and "G-CHO-IN" in page and "Chợ Tân Định" in page

    wait_until(alert_shown, timeout=30, what="the offline alert on /alerts")
    assert "Offline too long" in client.get("/alerts?lang=en").text


def test_a_gate_reporting_a_registered_place_is_filed_and_one_of_an_unknown_place_is_not(dashboard: Dashboard,
                                                                                         broker: MosquittoBroker):
    known, unknown = Gate(broker, "G-BX-NEW", "BX-MIENDONG", "Cổng 3", "both"), Gate(broker, "G-NOWHERE", "NOWHERE")
    try:
        wait_until(lambda: dashboard.context.registry.gate("G-BX-NEW") is not None, timeout=30,
                   what="the new gate filed in the registry")
        filed = dashboard.context.registry.gate("G-BX-NEW")
        assert filed is not None and (filed.place_id, filed.gate_name, filed.direction) == ("BX-MIENDONG", "Cổng 3",
                                                                                           "both")
        wait_until(lambda: dashboard.context.fleet.view("G-NOWHERE") is not None, timeout=30, what="the other gate")
        assert dashboard.context.registry.gate("G-NOWHERE") is None
        page = logged_in(dashboard).get("/").text
        assert "NOWHERE (chưa đăng ký)" in page
    finally:
        known.close()
        unknown.close()


def test_a_places_page_counts_the_days_entries_exits_people_inside_and_passback(dashboard: Dashboard,
                                                                                province_dsn: str):
    now = dt.datetime.now(dashboard.context.zone)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    at = [start + (now - start) * fraction / 10 for fraction in range(1, 10)]
    store_checkins(province_dsn, "CHO-TANDINH", "G-CHO-IN", "Cổng chính", [
        ("in", "accepted", "an", at[0]), ("in", "accepted", "binh", at[1]), ("in", "identified", "chi", at[2]),
        ("in", "accepted", "an", at[3]),  # in again without an out: a passback flag
        ("in", "rejected", "dung", at[4]),  # let nobody in
    ])
    store_checkins(province_dsn, "CHO-TANDINH", "G-CHO-OUT", "Cổng sau", [("out", "accepted", "binh", at[5])])
    page = logged_in(dashboard).get("/places/CHO-TANDINH").text
    assert re.search(r'id="entries">4<', page) and re.search(r'id="exits">1<', page)
    assert re.search(r'id="inside">2<', page)  # an and chi; binh went out
    assert re.search(r'id="passback">1<', page)
    assert page.count('class="bar-in"') >= 1 and page.count('class="bar-out"') == 1
    assert "Cổng chính · Vào" in page and "Cổng sau · Ra" in page
    yesterday = (now.date() - dt.timedelta(days=1)).isoformat()
    other_day = logged_in(dashboard).get(f"/places/CHO-TANDINH?day={yesterday}").text
    assert re.search(r'id="entries">0<', other_day) and re.search(r'id="inside">—<', other_day)
    assert logged_in(dashboard).get("/places/NO-SUCH").status == 404


def test_the_reports_list_page_and_downloads(province_dsn: str, broker: MosquittoBroker):
    from province_seed import DAY, seed

    with running_dashboard(province_config(province_dsn, broker.host, broker.port), seed=False) as dashboard:
        seed(dashboard.context.database, province_dsn)
        report = build_report(dashboard.context.database, DAY, dashboard.context.config.report)
        with dashboard.context.database.connection() as connection:
            save_report(connection, report)
        client = logged_in(dashboard, "viewer1")
        listing = client.get("/reports").text
        assert f'href="/reports/{DAY}"' in listing and "05/03/2025" in listing
        assert f'<td class="num">{report.places_registered}</td>' in listing  # figures read from the stored JSON
        assert f'<td class="num warn">{report.places_non_complying}</td>' in listing
        page = client.get(f"/reports/{DAY}")
        assert page.status == 200 and "Báo cáo ngày 05/03/2025" in page.text
        assert report.non_complying and all(place.name in page.text for place in report.non_complying)
        assert "Chưa có cổng" in page.text  # a reason, in Vietnamese
        assert "No gate" in client.get(f"/reports/{DAY}?lang=en").text
        csv_file = client.get(f"/reports/{DAY}.csv")
        assert csv_file.header("Content-Type") == "text/csv; charset=utf-8"
        assert csv_file.header("Content-Disposition") == f'attachment; filename="qrgate-report-{DAY}.csv"'
        assert csv_file.text.startswith("\ufeff") and "Chợ Tân Định" in csv_file.text
        pdf_file = client.get(f"/reports/{DAY}.pdf")
        assert pdf_file.header("Content-Type") == "application/pdf" and pdf_file.body.startswith(b"%PDF-")
        assert client.get("/reports/2025-03-06").status == 404
        assert client.get("/reports/not-a-day").status == 404


def test_metrics_parse_and_can_require_a_bearer_token(dashboard: Dashboard, broker: MosquittoBroker,
                                                      province_dsn: str, tmp_path: Path):
    gate = Gate(broker, "G-CHO-OUT", "CHO-TANDINH", "Cổng sau", "out")
    try:
        wait_until(lambda: dashboard.context.fleet.view("G-CHO-OUT") is not None, timeout=30, what="the gate")
        reply = Client(dashboard.port).get("/metrics")
        assert reply.header("Content-Type").startswith("text/plain")
        families = {family.name: family for family in text_string_to_metric_families(reply.text)}
        assert families, "no metric at all"
        samples = [sample for family in families.values() for sample in family.samples]
        assert any(sample.labels.get("device_id") == "G-CHO-OUT" for sample in samples)
    finally:
        gate.close()

    token_file = tmp_path / "metrics.token"
    token_file.write_text("s3cret-token-for-prometheus\n")
    config = province_config(province_dsn, broker.host, broker.port, metrics_token_file=str(token_file))
    with running_dashboard(config, seed=False) as guarded:
        client = Client(guarded.port)
        refused = client.get("/metrics")
        assert refused.status == 401 and refused.header("WWW-Authenticate").startswith("Bearer")
        assert client.get("/metrics", {"Authorization": "Bearer wrong"}).status == 401
        assert client.get("/metrics", {"Authorization": "Bearer s3cret-token-for-prometheus"}).status == 200


def test_the_user_and_audit_commands(province_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(sys, "stdin", io.StringIO("một mật khẩu dài\n" * 2))
    assert cli.main(["user", "add", "lan", "--role", "tracer", "--password-stdin", "--dsn", province_dsn]) == 0
    assert cli.main(["user", "role", "lan", "operator", "--dsn", province_dsn]) == 0
    assert cli.main(["user", "add", "lan", "--role", "viewer", "--password-stdin", "--dsn", province_dsn]) == 1
    assert cli.main(["user", "list", "--dsn", province_dsn]) == 0
    out, err = capsys.readouterr()
    assert "added lan (tracer)" in out and "lan is now operator" in out
    assert re.search(r"^lan\s+operator\s+active", out, re.M)
    assert "user 'lan' exists already" in err
    assert cli.main(["audit", "--json", "--dsn", province_dsn]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["action"], line["detail"]) for line in lines] == [
        ("user.role", {"user": "lan", "role": "operator"}), ("user.add", {"user": "lan", "role": "tracer"})]
    assert all(line["actor"].startswith("cli:") for line in lines)
    assert cli.main(["audit", "--actor", "nobody", "--dsn", province_dsn]) == 0
    assert capsys.readouterr().out == ""


def test_a_port_already_taken_is_a_clear_error(dashboard: Dashboard):
    second = DashboardServer(dashboard.context, bind="127.0.0.1", port=dashboard.port)
    with pytest.raises(ProvinceError, match=f"the dashboard cannot listen on 127.0.0.1:{dashboard.port}"):
        second.run()


def test_serve_notifies_systemd_serves_and_stops_cleanly_on_sigterm(province_dsn: str, broker: MosquittoBroker,
                                                                    tmp_path: Path):
    port = free_loopback_port()
    config = tmp_path / "province.toml"
    config.write_text(f'[database]\ndsn = "{province_dsn}"\n[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
                      f'[web]\nsecure_cookies = false\nport = {port}\n')
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
    service = subprocess.Popen([sys.executable, "-m", "qrgate_provisioning.province.cli", "serve", "--config",
                                str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(4096).decode() == "READY=1"
        assert Client(port).get("/healthz").status == 200
        client = Client(port)
        assert client.get("/").status == 303
        service.send_signal(signal.SIGTERM)
        _out, err = service.communicate(timeout=30)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
    assert service.returncode == 0, err
    assert notify.recv(4096).decode() == "STOPPING=1"
    notify.close()
