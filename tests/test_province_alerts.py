"""The fleet's alert rules (province.alerts): each rule at and around its limit, what an offline gate raises, and
the order (most severe first). Pure: gate views and limits in, alerts out."""

from __future__ import annotations

import dataclasses

import pytest

from qrgate_provisioning.province.alerts import SEVERITY, Alert, evaluate, human_duration
from qrgate_provisioning.province.fleet import GateView
from qrgate_provisioning.province.settings import AlertLimits

NOW = 1_750_000_000.0
LIMITS = AlertLimits(offline_s=900, trust_list_max_age_h=48, backlog_events=500, backlog_growing_reports=3,
                     rejections_in_row=10, disk_free_min_bytes=200 * 1024 * 1024)
HEALTHY = GateView(
    device_id="gate-1", site_id="market-1", gate="north", direction="in", state="online", stale=False,
    last_seen=NOW - 5, online_since=NOW - 86400, offline_since=None, offline_cause=None, software="1.4.0",
    config_hash="abcd", trust_list_version=7, trust_list_age_s=3600.0, trust_list_age_as_of=NOW - 5,
    trust_stale=False, clock_synced=True, clock_unsynced_since=None, pending=0, pending_history=(0, 0, 0, 0),
    oldest_pending_s=None, frames_per_s=15.0, disk_free_bytes=4 * 1024**3, disk_total_bytes=16 * 1024**3,
    cpu_temp_c=50.0, uptime_s=86400, last_error=None, storage_error=None, outbox_over_limit=False,
    status_at=NOW - 600, telemetry_at=NOW - 5, last_checkin_at=NOW - 30, last_verdict="accepted",
    rejections_in_row=0, rejections_since=None,
)


def gate(**changes: object) -> GateView:
    return dataclasses.replace(HEALTHY, **changes)  # type: ignore[arg-type]


def kinds(*views: GateView) -> list[str]:
    return [alert.kind for alert in evaluate(views, LIMITS, NOW)]


def test_a_healthy_gate_raises_nothing() -> None:
    assert evaluate([HEALTHY], LIMITS, NOW) == []


def test_offline_is_raised_at_its_limit_with_since_cause_and_last_seen() -> None:
    assert kinds(gate(state="offline", offline_since=NOW - 899, offline_cause="will")) == []
    [alert] = evaluate([gate(state="offline", offline_since=NOW - 900, offline_cause="will", last_seen=NOW - 960)],
                       LIMITS, NOW)
    assert alert == Alert("offline", "gate-1", "market-1", NOW - 900,
                          "offline for 15 min (connection lost); last seen 16 min ago")


def test_an_offline_gate_raises_only_the_offline_alert() -> None:
    broken = gate(state="offline", offline_since=NOW - 3600, offline_cause="stale", stale=True, clock_synced=False,
                  disk_free_bytes=1, pending=10_000, rejections_in_row=50, trust_list_age_s=10**7)
    assert kinds(broken) == ["offline"]
    assert "fell silent" in evaluate([broken], LIMITS, NOW)[0].detail


def test_an_unknown_gate_is_not_offline_and_its_conditions_count() -> None:
    assert kinds(gate(state="unknown", clock_synced=False)) == ["clock_unsynchronised"]


def test_the_trust_list_is_old_once_its_age_now_passes_the_limit() -> None:
    limit = 48 * 3600
    assert kinds(gate(trust_list_age_s=float(limit - 10), trust_list_age_as_of=NOW - 5)) == []
    [alert] = evaluate([gate(trust_list_age_s=float(limit - 10), trust_list_age_as_of=NOW - 70)], LIMITS, NOW)
    assert (alert.kind, alert.since) == ("trust_list_old", NOW - 60)  # it aged past the limit a minute ago
    assert alert.detail.startswith("trust list v7 is 2 d ")


def test_the_gate_s_own_stale_verdict_is_an_old_trust_list_too() -> None:
    [alert] = evaluate([gate(trust_stale=True)], LIMITS, NOW)
    assert (alert.kind, alert.since, alert.detail) == ("trust_list_old", None,
                                                       "the gate reports its trust list v7 stale")


def test_an_unsynchronised_clock_says_since_when() -> None:
    [alert] = evaluate([gate(clock_synced=False, clock_unsynced_since=NOW - 7200)], LIMITS, NOW)
    assert (alert.kind, alert.since, alert.detail) == ("clock_unsynchronised", NOW - 7200,
                                                       "clock not synchronised for 2 h")
    assert kinds(gate(clock_synced=None)) == []  # a gate that does not say is not accused


def test_a_backlog_over_its_limit_or_growing_report_after_report() -> None:
    assert kinds(gate(pending=499)) == []
    assert kinds(gate(pending=500)) == ["backlog_growing"]
    assert kinds(gate(pending=40, pending_history=(10, 20, 30, 40))) == ["backlog_growing"]  # 3 growths in a row
    assert kinds(gate(pending=30, pending_history=(20, 30))) == []  # too few reports to tell
    assert kinds(gate(pending=40, pending_history=(10, 20, 20, 40))) == []  # one report without growth
    assert kinds(gate(pending=5, pending_history=(40, 30, 20, 5))) == []  # draining
    [alert] = evaluate([gate(pending=40, pending_history=(1, 10, 20, 30, 40))], LIMITS, NOW)
    assert alert.detail == "backlog grew over 3 reports in a row: 10 to 40 check-ins"


def test_a_longer_growth_rule_than_the_kept_history_uses_the_whole_history() -> None:
    limits = LIMITS.model_copy(update={"backlog_growing_reports": 50})
    growing = gate(pending=16, pending_history=tuple(range(1, 17)))
    assert [a.kind for a in evaluate([growing], limits, NOW)] == ["backlog_growing"]


def test_rejections_in_a_row_at_their_limit() -> None:
    assert kinds(gate(rejections_in_row=9, rejections_since=NOW - 60)) == []
    [alert] = evaluate([gate(rejections_in_row=10, rejections_since=NOW - 60)], LIMITS, NOW)
    assert (alert.kind, alert.since, alert.detail) == ("rejections_in_row", NOW - 60,
                                                       "10 rejected check-ins in a row (limit 10)")


def test_a_nearly_full_disk() -> None:
    assert kinds(gate(disk_free_bytes=200 * 1024 * 1024)) == []
    [alert] = evaluate([gate(disk_free_bytes=50 * 1024 * 1024)], LIMITS, NOW)
    assert (alert.kind, alert.detail) == ("disk_nearly_full", "50 MB free for the outbox (limit 200 MB)")
    assert kinds(gate(disk_free_bytes=None)) == []


def test_alerts_come_most_severe_first_then_oldest_then_by_gate() -> None:
    everything = gate(device_id="gate-z", clock_synced=False, clock_unsynced_since=NOW - 60, disk_free_bytes=1,
                      pending=600, rejections_in_row=12, rejections_since=NOW - 10, trust_stale=True)
    old_clock = gate(device_id="gate-y", clock_synced=False, clock_unsynced_since=NOW - 6000)
    offline = gate(device_id="gate-x", state="offline", offline_since=NOW - 1000, offline_cause="status")
    alerts = evaluate([everything, old_clock, offline], LIMITS, NOW)
    assert [(a.kind, a.device_id) for a in alerts] == [
        ("offline", "gate-x"), ("disk_nearly_full", "gate-z"), ("trust_list_old", "gate-z"),
        ("backlog_growing", "gate-z"), ("clock_unsynchronised", "gate-y"), ("clock_unsynchronised", "gate-z"),
        ("rejections_in_row", "gate-z"),
    ]
    assert [a.kind for a in alerts if a.device_id == "gate-z"] == [k for k in SEVERITY if k != "offline"]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (59.9, "59 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h"), (3660, "1 h 1 min"),
    (86400, "1 d"), (90000, "1 d 1 h"), (-5, "0 s"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
