"""The dashboard's trace page (province.web.pages_trace) over HTTP: a real uvicorn, a real PostgreSQL, the fleet
listener on a real Mosquitto. A seeded case's visits and the people co-present, checked against the definition
computed here from the seeded list; the tracer role alone; the audit line with the actor; CSRF; bad input
answered on the form; the CSV and JSON downloads, by POST, with the rows."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest

from province_web_helpers import Client, Dashboard, hidden_csrf, province_config, running_dashboard, store_checkins
from qrgate_provisioning.province.web.i18n import LABELS_BY_LANGUAGE
from qrgate_tools.broker import MosquittoBroker

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
DAY = dt.date(2025, 3, 5)
VI = LABELS_BY_LANGUAGE["vi"]
PLACE_NAMES = {"CHO-TANDINH": "Chợ Tân Định", "BX-MIENDONG": "Bến xe Miền Đông"}


def at(hour: int, minute: int) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(hour, minute), ZONE)


@dataclass(frozen=True)
class Passage:
    place: str
    device: str
    gate: str
    direction: str
    verdict: str
    person: str  # store_checkins makes pass-<person> and, unless rejected, subject-<person>
    time: dt.datetime


# The case ("case") at the market at 08:00 and at the bus station at 12:00, and the people around it.
PASSAGES = [
    Passage("CHO-TANDINH", "G-CHO-IN", "Cổng chính", "in", "accepted", "case", at(8, 0)),
    Passage("BX-MIENDONG", "G-BX-1", "Cổng A", "in", "accepted", "case", at(12, 0)),
    Passage("CHO-TANDINH", "G-CHO-IN", "Cổng chính", "in", "accepted", "alice", at(8, 5)),  # 5 min: co-present
    Passage("CHO-TANDINH", "G-CHO-OUT", "Cổng sau", "out", "identified", "frank", at(7, 45)),  # exactly 15 min
    Passage("CHO-TANDINH", "G-CHO-IN", "Cổng chính", "in", "accepted", "bob", at(8, 16)),  # 16 min: not
    Passage("CHO-TANDINH", "G-CHO-IN", "Cổng chính", "in", "rejected", "dave", at(8, 1)),  # turned away: not
    Passage("BX-MIENDONG", "G-BX-1", "Cổng A", "in", "accepted", "carol", at(12, 10)),  # 10 min: co-present
    Passage("QA-PHO", "G-PHO", "Cửa", "in", "accepted", "erin", at(8, 0)),  # same time, another place: not
    Passage("CHO-TANDINH", "G-CHO-IN", "Cổng chính", "in", "accepted", "case", at(23, 59) + dt.timedelta(days=1)),
]


def expected_contacts(window_min: int = 15) -> list[tuple[str, str, float]]:
    """The definition, from the list above: (person, place, minutes apart) of every presence of somebody else at a
    visit's place within the window."""
    present = [p for p in PASSAGES if p.verdict != "rejected"]
    visits = [p for p in present if p.person == "case" and at(0, 0) <= p.time < at(0, 0) + dt.timedelta(days=1)]
    found = []
    for visit in visits:
        for other in present:
            apart = abs((other.time - visit.time).total_seconds()) / 60
            if other.person != "case" and other.place == visit.place and apart <= window_min:
                found.append((f"subject-{other.person}", other.place, apart))
    return sorted(found)


@pytest.fixture(name="dashboard")
def dashboard_fixture(province_dsn: str, broker: MosquittoBroker) -> Iterator[Dashboard]:
    with running_dashboard(province_config(province_dsn, broker.host, broker.port)) as dashboard:
        for passage in PASSAGES:
            store_checkins(province_dsn, passage.place, passage.device, passage.gate,
                           [(passage.direction, passage.verdict, passage.person, passage.time)])
        yield dashboard


def logged_in(dashboard: Dashboard, name: str) -> Client:
    client = Client(dashboard.port)
    assert client.login(name).status == 303
    return client


def trace_form(client: Client, **fields: str) -> dict[str, str]:
    """The form for the seeded day, by subject, with the page's CSRF token; ``fields`` override."""
    form = {"csrf_token": hidden_csrf(client.get("/trace").text), "subject_id": "subject-case", "pass_id": "",
            "start": f"{DAY.isoformat()}T00:00", "end": f"{(DAY + dt.timedelta(days=1)).isoformat()}T00:00",
            "window_min": "15"}
    form.update(fields)
    return form


def table_rows(page: str, table_id: str) -> list[list[str]]:
    """The body rows of one table, each cell's text."""
    table = re.search(rf'<table[^>]*id="{table_id}".*?<tbody>(.*?)</tbody>', page, re.S)
    assert table is not None, f"no table {table_id} on the page"
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        rows.append([html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in cells])
    return rows


def trace_audits(dashboard: Dashboard) -> list[tuple[str, dict[str, object], str | None]]:
    return [(entry.actor, entry.detail, entry.remote) for entry in dashboard.accounts.audit_entries()
            if entry.action == "trace"]


def test_a_tracer_sees_the_visits_and_the_people_co_present_and_the_trace_is_audited(dashboard: Dashboard) -> None:
    tracer = logged_in(dashboard, "tracer1")
    home = tracer.get("/").text
    assert 'href="/trace"' in home and 'href="/commands"' not in home  # the tracer's nav: trace, not commands
    form_page = tracer.get("/trace")
    assert form_page.status == 200 and form_page.header("Cache-Control") == "no-store"
    assert 'method="post" action="/trace"' in form_page.text and "Asia/Ho_Chi_Minh" in form_page.text
    english = logged_in(dashboard, "tracer1").get("/trace?lang=en").text  # another browser: this one stays vi
    assert "Trace a case" in english and "Pass id" in english and "Truy vết một trường hợp" not in english

    reply = tracer.post("/trace", trace_form(tracer))
    assert reply.status == 200, reply.text
    assert reply.header("Cache-Control") == "no-store"
    visits = table_rows(reply.text, "trace-visits")
    assert visits == [["05/03/2025 08:00:00", "Chợ Tân Định", "Cổng chính", "Vào", "G-CHO-IN"],
                      ["05/03/2025 12:00:00", "Bến xe Miền Đông", "Cổng A", "Vào", "G-BX-1"]]
    contacts = table_rows(reply.text, "trace-contacts")
    shown = sorted((row[0], row[1], float(row[3].replace(",", "."))) for row in contacts)
    assert shown == [(person, PLACE_NAMES[place], apart) for person, place, apart in expected_contacts()]
    assert {row[0] for row in contacts} == {"subject-alice", "subject-frank", "subject-carol"}
    page = reply.text
    for absent in ("subject-bob", "pass-dave", "subject-erin"):
        assert absent not in page, absent
    assert VI["trace_summary"].format(visits=2, contacts=3, people=3) in page
    assert not re.search(r'href="[^"]*subject-case', page)  # the traced id is in no link

    # a narrower window, by pass id: alice alone at the market, carol at the bus station
    narrow = tracer.post("/trace", trace_form(tracer, subject_id="", pass_id="pass-case", window_min="10"))
    assert sorted(row[0] for row in table_rows(narrow.text, "trace-contacts")) == [
        person for person, _place, _apart in expected_contacts(10)] == ["subject-alice", "subject-carol"]

    audits = trace_audits(dashboard)
    assert len(audits) == 2
    actor, detail, remote = audits[-1]  # the oldest: the first trace
    assert actor == "tracer1" and remote == "127.0.0.1"
    assert detail["subject_id"] == "subject-case" and detail["pass_id"] is None
    assert detail["via"] == "dashboard" and detail["window_min"] == 15
    assert detail["from"] == "2025-03-04T17:00:00.000Z"  # 00:00 in Hồ Chí Minh City
    assert audits[0][1]["pass_id"] == "pass-case" and audits[0][1]["window_min"] == 10


def test_viewers_and_operators_may_not_trace(dashboard: Dashboard) -> None:
    for name in ("viewer1", "operator1"):
        client = logged_in(dashboard, name)
        assert 'href="/trace"' not in client.get("/").text, name
        refused = client.get("/trace")
        assert refused.status == 403 and VI["error_forbidden"] in refused.text, name
        token = hidden_csrf(client.get("/").text)
        form = {"csrf_token": token, "subject_id": "subject-case", "start": "2025-03-05T00:00",
                "end": "2025-03-06T00:00", "window_min": "15"}
        assert client.post("/trace", form).status == 403, name
    anonymous = Client(dashboard.port)
    assert anonymous.get("/trace").header("Location") == "/login?next=%2Ftrace"
    assert anonymous.post("/trace", {"subject_id": "subject-case"}).status == 401
    assert trace_audits(dashboard) == []


def test_a_trace_without_its_csrf_token_is_refused_and_not_run(dashboard: Dashboard) -> None:
    tracer = logged_in(dashboard, "tracer1")
    form = trace_form(tracer)
    del form["csrf_token"]
    assert tracer.post("/trace", form).status == 403
    assert tracer.post("/trace", {**form, "csrf_token": "forged"}).status == 403
    assert trace_audits(dashboard) == []
    assert tracer.post("/trace", trace_form(tracer)).status == 200  # the same form with its token runs
    assert len(trace_audits(dashboard)) == 1


@pytest.mark.parametrize(("fields", "message"), [
    ({"subject_id": "", "pass_id": "  "}, VI["trace_error_no_id"]),
    ({"pass_id": "pass-case"}, VI["trace_error_both_ids"]),
    ({"start": "2025-03-06T00:00", "end": "2025-03-05T00:00"}, VI["trace_error_order"]),
    ({"end": "2025-03-05T00:00"}, VI["trace_error_order"]),  # an empty span
    ({"window_min": "1441"}, VI["trace_error_window"].format(max=1440)),
    ({"window_min": "-1"}, VI["trace_error_window"].format(max=1440)),
    ({"window_min": "mười"}, VI["trace_error_window"].format(max=1440)),
    ({"start": "hôm qua"}, VI["trace_error_time"]),
    ({"end": ""}, VI["trace_error_time"]),
    ({"start": "2023-01-01T00:00"}, VI["trace_error_span"].format(days=366)),
    ({"subject_id": "x" * 300}, VI["trace_error_id"].format(max=256)),
])
def test_bad_input_is_answered_on_the_form(dashboard: Dashboard, fields: dict[str, str], message: str) -> None:
    tracer = logged_in(dashboard, "tracer1")
    reply = tracer.post("/trace", trace_form(tracer, **fields))
    assert reply.status == 400
    error = re.search(r'<p class="error" role="alert" id="trace-error">(.*?)</p>', reply.text, re.S)
    assert error is not None and html.unescape(error.group(1)) == message
    assert 'action="/trace"' in reply.text  # the form again, with what was typed
    assert trace_audits(dashboard) == []  # nothing ran


def test_the_csv_and_json_downloads_are_posted_audited_and_hold_the_rows(dashboard: Dashboard) -> None:
    tracer = logged_in(dashboard, "tracer1")
    page = tracer.post("/trace", trace_form(tracer)).text
    download_form = re.search(r'<form method="post" action="/trace" class="filters">(.*?)</form>', page, re.S)
    assert download_form is not None and 'name="download" value="csv"' in download_form.group(1)
    assert 'value="subject-case"' in download_form.group(1)  # the query goes back in the body, not a URL

    reply = tracer.post("/trace", trace_form(tracer, download="csv"))
    assert reply.status == 200 and reply.header("Content-Type") == "text/csv; charset=utf-8"
    assert reply.header("Cache-Control") == "no-store"
    disposition = reply.header("Content-Disposition")
    assert disposition == 'attachment; filename="qrgate-trace-20250305-0000.csv"' and "case" not in disposition
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    visits = [row for row in rows if row["record"] == "visit"]
    assert [(row["site_id"], row["device_id"], row["direction"], row["time"]) for row in visits] == [
        ("CHO-TANDINH", "G-CHO-IN", "in", "2025-03-05T01:00:00.000Z"),
        ("BX-MIENDONG", "G-BX-1", "in", "2025-03-05T05:00:00.000Z")]
    contacts = sorted((row["person"], row["site_id"], float(row["minutes_apart"]))
                      for row in rows if row["record"] == "contact")
    assert contacts == expected_contacts()

    document = json.loads(tracer.post("/trace", trace_form(tracer, download="json")).body)
    assert document["query"]["subject_id"] == "subject-case"
    assert [visit["site_id"] for visit in document["visits"]] == ["CHO-TANDINH", "BX-MIENDONG"]
    assert document["contact_people"] == ["subject-alice", "subject-carol", "subject-frank"]

    formats = [detail["format"] for actor, detail, _remote in reversed(trace_audits(dashboard))]
    assert formats == ["html", "csv", "json"]  # each download is a trace of its own in the audit log
