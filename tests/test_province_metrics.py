"""/metrics' figures (province.metrics): computed from the fleet at scrape time, read back with prometheus_client's
own text parser from what ``generate_latest`` writes."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qrgate import wire
from qrgate_provisioning.province.fleet import FleetState
from qrgate_provisioning.province.metrics import province_metrics
from qrgate_provisioning.province.settings import AlertLimits, FleetSettings
from test_province_fleet import T0, checkin, status, telemetry

LIMITS = AlertLimits()


def scrape(fleet: FleetState, now: float) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}."""
    text = generate_latest(province_metrics(fleet, LIMITS, clock=lambda: now)).decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_the_fleet_s_figures_are_what_the_fleet_holds_at_scrape_time() -> None:
    fleet = FleetState(FleetSettings(heartbeat_s=60, missed_heartbeats=3))
    fleet.apply(wire.availability_topic("gate-a"), b"online", T0)
    fleet.apply(wire.status_topic("gate-a"), status(T0, device="gate-a", site_id="market-1", trust_list_age_s=100),
                T0)
    fleet.apply(wire.telemetry_topic("gate-a"), telemetry(T0 + 10, device="gate-a", pending=7), T0 + 10)
    fleet.apply(wire.availability_topic("gate-b"), b"offline", T0 - 7200, retained=True)
    fleet.apply(wire.status_topic("gate-c"), status(T0, device="gate-c"), T0, retained=True)
    fleet.apply(wire.checkin_topic("gate-a"), checkin(T0 + 11, "accepted", device="gate-a"), T0 + 11)
    fleet.apply(wire.checkin_topic("gate-a"), checkin(T0 + 12, "rejected", device="gate-a", direction="out"), T0 + 12)
    fleet.apply(wire.status_topic("gate-a"), b"{broken", T0 + 13)
    now = T0 + 20

    samples = scrape(fleet, now)
    assert samples["qrgate_gates"] == {(("state", "online"),): 1, (("state", "offline"),): 1,
                                       (("state", "unknown"),): 1}
    assert samples["qrgate_gate_up"] == {(("device_id", "gate-a"), ("site_id", "market-1")): 1,
                                         (("device_id", "gate-b"), ("site_id", "")): 0,
                                         (("device_id", "gate-c"), ("site_id", "")): 0}
    assert samples["qrgate_gate_last_seen_timestamp_seconds"][(("device_id", "gate-a"),)] == T0 + 12
    assert (("device_id", "gate-b"),) not in samples["qrgate_gate_last_seen_timestamp_seconds"]  # never heard
    assert samples["qrgate_gate_backlog_events"] == {(("device_id", "gate-a"),): 7}
    # 100 s old when said at T0, heard from again at T0 + 12, scraped at T0 + 20.
    assert samples["qrgate_gate_trust_list_age_seconds"] == {(("device_id", "gate-a"),): 120}
    assert samples["qrgate_alerts"][(("kind", "offline"),)] == 1  # gate-b: offline since we looked, 2 h ago
    assert samples["qrgate_alerts"][(("kind", "disk_nearly_full"),)] == 0
    assert len(samples["qrgate_alerts"]) == 6  # every kind, zero or not
    assert samples["qrgate_fleet_messages_total"] == {(("kind", "available"),): 2, (("kind", "status"),): 3,
                                                      (("kind", "telemetry"),): 1, (("kind", "checkin"),): 2}
    assert samples["qrgate_fleet_malformed_total"] == {(): 1}
    assert samples["qrgate_fleet_checkins_total"] == {(("direction", "in"), ("verdict", "accepted")): 1,
                                                      (("direction", "out"), ("verdict", "rejected")): 1}

    fleet.apply(wire.availability_topic("gate-a"), b"offline", now)  # the next scrape sees the change
    later = scrape(fleet, now + 1)
    assert later["qrgate_gates"][(("state", "offline"),)] == 2
    assert later["qrgate_gate_up"][(("device_id", "gate-a"), ("site_id", "market-1"))] == 0


def test_an_empty_fleet_still_exposes_every_family_with_zeros() -> None:
    samples = scrape(FleetState(FleetSettings()), T0)
    assert samples["qrgate_gates"] == {(("state", s),): 0 for s in ("online", "offline", "unknown")}
    assert "qrgate_gate_up" not in samples
    assert samples["qrgate_fleet_malformed_total"] == {(): 0}
    assert set(samples["qrgate_fleet_messages_total"]) == {(("kind", k),): 0
                                                           for k in ("available", "status", "telemetry",
                                                                     "checkin")}.keys()
