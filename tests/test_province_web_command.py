"""The dashboard's command pages (province.web.pages_command) over HTTP: a real uvicorn, a real PostgreSQL, a real
Mosquitto, and as the gate a real Uplink with the real CommandHandler and authenticator (its service's answers in
memory, as in test_province_command). An operator sends status and sees 'done'; viewers and tracers are refused;
the command and its answer are in the audit log; a dashboard without a key says commands are not configured; a
gate that does not answer is a clear timeout. Last, on the provincial broker rendered from brokerconf (mutual
TLS, CN = client id): the service role may send commands, with a certificate of its own for them."""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from faults import LOOPBACK, TestPki, gate_uplink, start_provincial_broker
from mqtt_helpers import uplink_for, wait_until
from province_web_helpers import Client, Dashboard, hidden_csrf, province_config, running_dashboard
from qrgate import wire
from qrgate.outbox import Outbox
from qrgate.remote.auth import CommandAuthenticator, OperatorKeys
from qrgate.remote.dispatch import CommandHandler
from qrgate.remote.nonces import NonceStore
from qrgate.uplink import Uplink
from qrgate_provisioning.province.command_signing import new_operator_key, operator_keys_file
from qrgate_provisioning.province.settings import CommandSettings, ProvinceConfig
from qrgate_provisioning.province.web.i18n import LABELS_BY_LANGUAGE
from qrgate_tools.broker import MosquittoBroker

GATE = "G-CHO-IN"  # registered at Chợ Tân Định by the dashboard helpers
SILENT_GATE = "G-CHO-OUT"
VI = LABELS_BY_LANGUAGE["vi"]


class GateTarget:
    """What a gate's service would answer, in memory (the broker, the uplink and the handler are real)."""

    def command_status(self) -> dict[str, object]:
        return {"pending": 0, "site_id": "CHO-TANDINH"}

    def command_self_test(self) -> dict[str, object]:
        return {"ok": True, "checks": []}

    def command_reload_trust(self) -> dict[str, object]:
        return {"failed": "no signed lists on this gate"}

    def command_flush_outbox(self) -> dict[str, object]:
        return {"pending": 0}

    def command_restart(self) -> dict[str, object]:
        return {"exit_status": 75}


@pytest.fixture(name="key_file")
def key_file_fixture(tmp_path: Path) -> Path:
    path = tmp_path / "operator.key"
    (tmp_path / "operators.json").write_text(operator_keys_file([new_operator_key(path, "ops-web")]))
    return path


def command_handler(tmp_path: Path, device_id: str) -> CommandHandler:
    auth = CommandAuthenticator(device_id, OperatorKeys.load(tmp_path / "operators.json"),
                                NonceStore(tmp_path / f"nonces-{device_id}.sqlite"))
    return CommandHandler(auth, GateTarget())


@pytest.fixture(name="gate")
def gate_fixture(tmp_path: Path, broker: MosquittoBroker, key_file: Path) -> Iterator[Uplink]:
    with Outbox(tmp_path / "outbox.sqlite") as outbox, \
            uplink_for(outbox, broker, device_id=GATE, commands=command_handler(tmp_path, GATE).handle) as uplink:
        wait_until(lambda: uplink.stats.connected, 10, "the gate connected")
        yield uplink
    logging.getLogger("qrgate").setLevel(logging.NOTSET)  # set_log_level changed it


def with_commands(config: ProvinceConfig, **settings: object) -> ProvinceConfig:
    return config.model_copy(update={"commands": CommandSettings.model_validate(settings)})


@pytest.fixture(name="dashboard")
def dashboard_fixture(province_dsn: str, broker: MosquittoBroker, key_file: Path) -> Iterator[Dashboard]:
    config = with_commands(province_config(province_dsn, broker.host, broker.port), key_file=str(key_file),
                           timeout_s=10)
    with running_dashboard(config) as dashboard:
        yield dashboard


def logged_in(dashboard: Dashboard, name: str = "operator1") -> Client:
    client = Client(dashboard.port)
    assert client.login(name).status == 303
    return client


def send(client: Client, device_id: str, **fields: str) -> tuple[int, str]:
    """Post the command form of ``device_id`` with its page's CSRF token."""
    token = hidden_csrf(client.get(f"/gates/{device_id}/command").text)
    reply = client.post(f"/gates/{device_id}/command", {"csrf_token": token, **fields})
    return reply.status, reply.text


def command_audits(dashboard: Dashboard) -> list[tuple[str, str, dict[str, object], str | None]]:
    """The command lines of the audit log, oldest first."""
    return [(entry.actor, entry.action, entry.detail, entry.remote)
            for entry in reversed(dashboard.accounts.audit_entries()) if entry.action.startswith("command")]


def block(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</(?:dd|p|pre|section)>', page, re.S)
    assert found is not None, f"no #{element_id} on the page"
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip()


def test_an_operator_sends_status_to_a_real_gate_and_sees_done(dashboard: Dashboard, gate: Uplink) -> None:
    operator = logged_in(dashboard)
    fleet = operator.get("/").text
    assert 'href="/commands"' in fleet and f'href="/gates/{GATE}/command"' in fleet  # the nav and the gate's row
    assert f'href="/gates/{GATE}/command"' in operator.get("/places/CHO-TANDINH").text
    assert operator.get(f"/commands?device_id={GATE}").header("Location") == f"/gates/{GATE}/command"
    form = operator.get(f"/gates/{GATE}/command").text
    assert 'method="post" action="/gates/G-CHO-IN/command"' in form and "ops-web" in form  # the key's id
    english = logged_in(dashboard).get(f"/gates/{GATE}/command?lang=en").text  # another browser: this one stays vi
    assert f"Command to gate {GATE}" in english and "Sign and send" in english and "Ký và gửi" not in english

    status, page = send(operator, GATE, command="status", level="INFO")
    assert status == 200, page
    assert block(page, "command-answer").startswith(VI["command_answer_title"])
    assert VI["outcome_done"] in page and '<span class="sub mono">done</span>' in page
    assert block(page, "command-detail") == "status reported"
    assert json.loads(block(page, "command-result")) == {"pending": 0, "site_id": "CHO-TANDINH"}

    status, page = send(operator, GATE, command="set_log_level", level="DEBUG")
    assert status == 200 and block(page, "command-detail") == "log level set to DEBUG"
    assert logging.getLogger("qrgate").level == logging.DEBUG  # the gate's handler really ran it
    status, page = send(operator, GATE, command="reload_trust", level="INFO")
    assert status == 200 and VI["outcome_failed"] in page and "no signed lists on this gate" in page
    assert gate.stats.commands_answered == 3

    audits = command_audits(dashboard)
    assert [(actor, action) for actor, action, _detail, _remote in audits] == [
        ("operator1", "command"), ("operator1", "command_answer")] * 3
    sent, answered = audits[0][2], audits[1][2]
    assert (sent["device_id"], sent["command"], sent["args"], sent["kid"], sent["via"]) == (
        GATE, "status", {}, "ops-web", "dashboard")
    assert answered["nonce"] == sent["nonce"] and answered["outcome"] == "done"
    assert audits[0][3] == audits[1][3] == "127.0.0.1"
    assert audits[2][2]["args"] == {"level": "DEBUG"} and audits[5][2]["outcome"] == "failed"


def test_a_restart_needs_its_confirmation_and_a_bad_form_sends_nothing(dashboard: Dashboard, gate: Uplink) -> None:
    operator = logged_in(dashboard)
    for fields, message in (({"command": "restart"}, VI["command_error_confirm"]),
                            ({"command": "reboot"}, VI["command_error_name"]),
                            ({"command": "set_log_level", "level": "LOUD"}, VI["command_error_level"])):
        status, page = send(operator, GATE, **fields)
        assert status == 400 and block(page, "command-error") == message, fields
    assert command_audits(dashboard) == [] and gate.stats.commands_answered == 0
    status, page = send(operator, GATE, command="restart", confirm="yes")
    assert status == 200 and block(page, "command-detail") == "restarting after this answer"
    assert [action for _actor, action, _detail, _remote in command_audits(dashboard)] == [
        "command", "command_answer"]


def test_viewers_and_tracers_may_not_send_commands(dashboard: Dashboard, gate: Uplink) -> None:
    for name in ("viewer1", "tracer1"):
        client = logged_in(dashboard, name)
        fleet = client.get("/").text
        assert 'href="/commands"' not in fleet and "/command\"" not in fleet, name  # no nav link, no row link
        assert client.get("/commands").status == 403, name
        refused = client.get(f"/gates/{GATE}/command")
        assert refused.status == 403 and VI["error_forbidden"] in refused.text, name
        token = hidden_csrf(fleet)
        assert client.post(f"/gates/{GATE}/command", {"csrf_token": token, "command": "status"}).status == 403
    operator = logged_in(dashboard)
    assert operator.post(f"/gates/{GATE}/command", {"command": "status"}).status == 403  # no CSRF token
    assert Client(dashboard.port).post(f"/gates/{GATE}/command", {"command": "status"}).status == 401
    assert command_audits(dashboard) == [] and gate.stats.commands_answered == 0


def test_without_a_key_the_page_says_commands_are_not_configured(province_dsn: str,
                                                                broker: MosquittoBroker) -> None:
    with running_dashboard(province_config(province_dsn, broker.host, broker.port)) as dashboard:
        operator = logged_in(dashboard)
        page = operator.get(f"/gates/{GATE}/command").text
        assert block(page, "commands-not-configured") == VI["command_not_configured"]
        assert 'action="/gates/G-CHO-IN/command"' not in page  # no form to fill in for nothing
        token = hidden_csrf(page)
        reply = operator.post(f"/gates/{GATE}/command", {"csrf_token": token, "command": "status"})
        assert reply.status == 503 and VI["command_not_configured"] in reply.text
        assert command_audits(dashboard) == []


def test_a_gate_that_does_not_answer_is_a_clear_timeout_and_an_unknown_gate_is_not_found(
        province_dsn: str, broker: MosquittoBroker, key_file: Path) -> None:
    silent = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=SILENT_GATE, protocol=mqtt.MQTTv5)
    subscribed: list[object] = []
    silent.on_subscribe = lambda *args: subscribed.append(args)
    silent.connect(broker.host, broker.port)
    silent.loop_start()
    config = with_commands(province_config(province_dsn, broker.host, broker.port), key_file=str(key_file),
                           timeout_s=1)
    try:
        silent.subscribe(wire.command_topic(SILENT_GATE), qos=1)
        wait_until(lambda: subscribed, 10, "the silent gate's SUBACK")
        with running_dashboard(config) as dashboard:
            operator = logged_in(dashboard)
            status, page = send(operator, SILENT_GATE, command="status")
            assert status == 504
            assert block(page, "command-no-answer").startswith(VI["command_no_answer"])
            assert f"no answer from gate {SILENT_GATE} within 1 s (offline?)" in html.unescape(page)
            outcomes = [(action, detail.get("outcome")) for _a, action, detail, _r in command_audits(dashboard)]
            assert outcomes == [("command", None), ("command_answer", "no_answer")]

            assert operator.get("/gates/NO-SUCH-GATE/command").status == 404
            assert VI["command_unknown_gate"] in operator.get("/commands?device_id=bad/id").text
    finally:
        silent.disconnect()
        silent.loop_stop()


def test_on_the_provincial_broker_the_service_sends_commands_with_a_certificate_of_its_own(
        tmp_path: Path, province_dsn: str, key_file: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    province, _params = start_provincial_broker(tmp_path / "province", pki, sites={"CHO-TANDINH": (GATE,)},
                                                services=("province-svc", "province-cmd"))
    service, commands = pki.client("province-svc"), pki.client("province-cmd")
    config = ProvinceConfig.model_validate({
        "database": {"dsn": province_dsn},
        "broker": {"host": LOOPBACK, "port": province.port, "ca_file": str(pki.ca_file),
                   "cert_file": str(service.cert), "key_file": str(service.key), "client_id": "province-svc"},
        "web": {"secure_cookies": False},
        "commands": {"key_file": str(key_file), "timeout_s": 10, "broker_cert_file": str(commands.cert),
                     "broker_key_file": str(commands.key)},
    })
    try:
        with (Outbox(tmp_path / "outbox.sqlite") as outbox,
              gate_uplink(outbox, GATE, province, pki, pki.client(GATE),
                          commands=command_handler(tmp_path, GATE).handle) as uplink,
              running_dashboard(config) as dashboard):
            wait_until(lambda: uplink.stats.connected, 10, "the gate connected")
            hellos = dashboard.listener.hellos_sent
            status, page = send(logged_in(dashboard), GATE, command="status")
            assert status == 200, page
            assert block(page, "command-detail") == "status reported"  # the ACL let the service write and read
            # its own CN: the fleet listener (CN province-svc, the client id too) kept its connection
            assert dashboard.listener.connected and dashboard.listener.hellos_sent == hellos
    finally:
        province.stop()
