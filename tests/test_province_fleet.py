"""The fleet's pure model (province.fleet): presence from availability, status, telemetry and check-ins, stale
detection, retained messages, malformed input, and what it hands to the listener. Plain values, explicit times."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from qrgate import wire
from qrgate_provisioning.province.fleet import FleetState, device_of
from qrgate_provisioning.province.presence import HEARD_EVERY_S, Transition
from qrgate_provisioning.province.settings import FleetSettings

GATE = "gate-1"
T0 = 1_750_000_000.0  # a fixed epoch: every call says what time it is
SETTINGS = FleetSettings(heartbeat_s=60, missed_heartbeats=3)  # silent for more than 180 s: offline


def available(device: str = GATE) -> str:
    return wire.availability_topic(device)


def status_topic(device: str = GATE) -> str:
    return wire.status_topic(device)


def status(at: float, state: str = "online", device: str = GATE, **fields: object) -> bytes:
    return wire.DeviceStatus.model_validate(
        {"device_id": device, "state": state, "time": wire.iso_utc(at), **fields}).to_json()


def telemetry(at: float, device: str = GATE, **fields: object) -> bytes:
    base = {"device_id": device, "time": wire.iso_utc(at), "uptime_s": 10, "sent": 0, "resent": 0, "delivered": 0,
            "refused": 0}
    return wire.Telemetry.model_validate({**base, **fields}).to_json()


def checkin(at: float, verdict: str = "accepted", device: str = GATE, direction: str = "in", seq: int = 1) -> bytes:
    return wire.CheckinEvent(
        event_id=wire.new_event_id(at), seq=seq, device_id=device, site_id="market-1", gate="north",
        direction=direction, time=wire.iso_utc(at), clock_synced=True, verdict=verdict,  # type: ignore[arg-type]
        reason="accepted" if verdict == "accepted" else "bad_signature", format="qrgate",
    ).to_json()


def utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


@pytest.fixture
def fleet() -> FleetState:
    return FleetState(SETTINGS)


def test_a_birth_makes_a_gate_online_and_hands_out_one_transition_and_a_heard_row(fleet: FleetState) -> None:
    assert fleet.apply(available(), b"online", T0) == GATE
    assert fleet.apply(status_topic(), status(T0, site_id="market-1", gate="north", direction="in",
                                              software="1.4.0", config_hash="abcd"), T0 + 0.01) == GATE
    view = fleet.view(GATE)
    assert view is not None
    assert (view.state, view.stale, view.online_since, view.offline_since) == ("online", False, T0, None)
    assert view.last_seen == T0 + 0.01
    assert (view.site_id, view.gate, view.direction, view.software, view.config_hash) == (
        "market-1", "north", "in", "1.4.0", "abcd")
    assert fleet.take_transitions() == [Transition(GATE, utc(T0), True, "message")]
    assert fleet.take_transitions() == []  # drained
    assert fleet.take_heard() == [(GATE, utc(T0))]  # the second message is within HEARD_EVERY_S
    assert [view.device_id for view in fleet.take_new_gates()] == [GATE]
    assert fleet.take_new_gates() == []  # announced once


def test_the_broker_s_last_will_makes_it_offline_with_the_cause(fleet: FleetState) -> None:
    fleet.apply(available(), b"online", T0)
    fleet.take_transitions()
    fleet.apply(available(), b"offline", T0 + 30)
    view = fleet.view(GATE)
    assert view is not None
    assert (view.state, view.stale, view.offline_cause, view.offline_since, view.last_seen) == (
        "offline", False, "will", T0 + 30, T0 + 30)
    assert view.online_since is None
    assert fleet.take_transitions() == [Transition(GATE, utc(T0 + 30), False, "will")]


@pytest.mark.parametrize("order", ["availability first (as the gate does)", "status first"])
def test_a_clean_stop_is_one_offline_transition_caused_by_the_status(fleet: FleetState, order: str) -> None:
    fleet.apply(available(), b"online", T0)
    fleet.take_transitions()
    goodbye = [(available(), b"offline"), (status_topic(), status(T0 + 60, state="offline"))]
    if order == "status first":
        goodbye.reverse()
    for topic, payload in goodbye:
        fleet.apply(topic, payload, T0 + 60)
    view = fleet.view(GATE)
    assert view is not None
    assert (view.state, view.offline_cause, view.stale) == ("offline", "status", False)
    assert fleet.take_transitions() == [Transition(GATE, utc(T0 + 60), False, "status")]


def test_a_silent_gate_goes_offline_after_the_missed_heartbeats_and_comes_back(fleet: FleetState) -> None:
    fleet.apply(available(), b"online", T0)
    fleet.apply(wire.telemetry_topic(GATE), telemetry(T0 + 60), T0 + 60)
    fleet.take_transitions()
    assert fleet.sweep(T0 + 60 + 180) == []  # exactly three heartbeats: not yet
    view = fleet.view(GATE)
    assert view is not None and view.state == "online"
    assert fleet.sweep(T0 + 60 + 181) == [GATE]
    view = fleet.view(GATE)
    assert view is not None
    # Offline as of the first report that did not come, not of our verdict; "last seen" stays the last message.
    assert (view.state, view.stale, view.offline_cause, view.offline_since, view.last_seen) == (
        "offline", True, "stale", T0 + 120, T0 + 60)
    assert fleet.take_transitions() == [Transition(GATE, utc(T0 + 120), False, "stale")]
    assert fleet.sweep(T0 + 1000) == []  # offline already: nothing more

    fleet.apply(available(), b"online", T0 + 1200)  # it reconnects after the stale verdict
    view = fleet.view(GATE)
    assert view is not None
    assert (view.state, view.stale, view.online_since, view.offline_since) == ("online", False, T0 + 1200, None)
    assert fleet.take_transitions() == [Transition(GATE, utc(T0 + 1200), True, "message")]


def test_a_will_arriving_after_the_stale_verdict_names_the_cause_without_a_second_transition(
        fleet: FleetState) -> None:
    fleet.apply(available(), b"online", T0)
    fleet.sweep(T0 + 200)
    fleet.apply(available(), b"offline", T0 + 210)
    view = fleet.view(GATE)
    assert view is not None
    assert (view.state, view.stale, view.offline_cause, view.offline_since) == ("offline", False, "will", T0 + 60)
    assert [t.cause for t in fleet.take_transitions()] == ["message", "stale"]


def test_retained_messages_set_the_state_but_are_not_heard_and_an_unconfirmed_online_goes_stale(
        fleet: FleetState) -> None:
    said_at = T0 - 3600  # the retained status is the birth's copy of an hour ago
    fleet.apply(status_topic(), status(said_at, software="1.4.0"), T0, retained=True)
    view = fleet.view(GATE)
    assert view is not None and view.state == "unknown"  # a retained status alone proves nothing
    fleet.apply(available(), b"online", T0, retained=True)
    view = fleet.view(GATE)
    assert view is not None
    assert (view.state, view.last_seen, view.online_since, view.software) == ("online", said_at, None, "1.4.0")
    assert fleet.take_transitions() == [] and fleet.take_heard() == []  # old news is not presence
    # The hello's answer would confirm it; none comes: stale after the limit, counted from when we began watching.
    assert fleet.sweep(T0 + 181) == [GATE]
    assert fleet.take_transitions() == [Transition(GATE, utc(T0 + 60), False, "stale")]


def test_a_retained_online_confirmed_by_a_live_message_is_one_online_transition(fleet: FleetState) -> None:
    fleet.apply(available(), b"online", T0, retained=True)
    fleet.apply(status_topic(), status(T0 + 2), T0 + 2)  # the answer to our hello
    view = fleet.view(GATE)
    assert view is not None and (view.state, view.online_since, view.last_seen) == ("online", T0 + 2, T0 + 2)
    assert fleet.take_transitions() == [Transition(GATE, utc(T0 + 2), True, "message")]
    assert fleet.take_heard() == [(GATE, utc(T0 + 2))]


@pytest.mark.parametrize("order", ["will first", "status first"])
def test_a_retained_online_status_after_the_last_will_keeps_the_gate_offline(fleet: FleetState, order: str) -> None:
    retained = [(available(), b"offline"), (status_topic(), status(T0 - 600, software="1.4.0"))]
    if order == "status first":
        retained.reverse()
    for topic, payload in retained:
        fleet.apply(topic, payload, T0, retained=True)
    view = fleet.view(GATE)
    assert view is not None
    assert (view.state, view.offline_cause, view.software) == ("offline", "will", "1.4.0")
    assert [(t.online, t.cause) for t in fleet.take_transitions()] == [(False, "will")]


def test_a_retained_clean_stop_is_offline_since_the_time_it_says(fleet: FleetState) -> None:
    fleet.apply(status_topic(), status(T0 - 600, state="offline"), T0, retained=True)
    fleet.apply(available(), b"offline", T0, retained=True)
    view = fleet.view(GATE)
    assert view is not None
    assert (view.state, view.offline_cause, view.offline_since, view.last_seen) == (
        "offline", "status", T0 - 600, T0 - 600)


@pytest.mark.parametrize(("topic", "payload"), [
    (wire.status_topic(GATE), b"{not json"),
    (wire.status_topic(GATE), status(T0, device="gate-2")),  # another device than its topic names
    (wire.telemetry_topic(GATE), b'{"v": 1}'),
    (wire.telemetry_topic(GATE), b""),
    (wire.checkin_topic(GATE), checkin(T0, device="gate-2")),
    (wire.availability_topic(GATE), b"maybe"),
    (wire.availability_topic(GATE), b"\xff\xfe"),
    ("qrgate/v1/device/gate-1/ack", b'{"v":1,"event_ids":["x"]}'),
    ("qrgate/v1/province/hello", b"{}"),
])
def test_malformed_messages_are_counted_and_change_nothing(fleet: FleetState, topic: str, payload: bytes) -> None:
    assert fleet.apply(topic, payload, T0) is None
    assert fleet.malformed == 1
    assert fleet.snapshot() == [] and fleet.take_heard() == [] and fleet.version == 0


def test_an_emptied_retained_topic_is_not_malformed_and_not_a_message_from_the_gate(fleet: FleetState) -> None:
    assert fleet.apply(wire.status_topic(GATE), b"", T0) is None
    assert fleet.apply(wire.availability_topic(GATE), b"", T0) is None
    assert fleet.malformed == 0 and fleet.snapshot() == []
    assert fleet.counters().messages["status"] == 1


def test_telemetry_fills_the_figures_and_keeps_the_last_backlogs(fleet: FleetState) -> None:
    for n, pending in enumerate([3, 5, 9, 14]):
        fleet.apply(wire.telemetry_topic(GATE), telemetry(
            T0 + n, pending=pending, frames_per_s=14.5, disk_free_bytes=10**9, disk_total_bytes=8 * 10**9,
            cpu_temp_c=51.2, last_error="connection lost: keep alive timeout", clock_synced=True, uptime_s=99,
            oldest_pending_s=40), T0 + n)
    view = fleet.view(GATE)
    assert view is not None
    assert view.pending == 14 and view.pending_history == (3, 5, 9, 14)
    assert (view.frames_per_s, view.disk_free_bytes, view.disk_total_bytes, view.cpu_temp_c) == (
        14.5, 10**9, 8 * 10**9, 51.2)
    assert (view.last_error, view.clock_synced, view.uptime_s, view.oldest_pending_s) == (
        "connection lost: keep alive timeout", True, 99, 40)
    assert view.telemetry_at == T0 + 3 and view.state == "online"


def test_the_pending_history_is_bounded() -> None:
    fleet = FleetState(SETTINGS, history=4)
    for n in range(10):
        fleet.apply(wire.telemetry_topic(GATE), telemetry(T0 + n, pending=n), T0 + n)
    view = fleet.view(GATE)
    assert view is not None and view.pending_history == (6, 7, 8, 9)


def test_an_old_retained_status_does_not_overwrite_newer_telemetry_figures(fleet: FleetState) -> None:
    fleet.apply(wire.telemetry_topic(GATE), telemetry(T0, pending=2), T0)
    fleet.apply(status_topic(), status(T0 - 100, pending=50, software="1.4.0"), T0 + 1, retained=True)
    view = fleet.view(GATE)
    assert view is not None and view.pending == 2 and view.software == "1.4.0"


def test_the_clock_s_unsynchronised_period_is_remembered_until_it_is_synchronised(fleet: FleetState) -> None:
    fleet.apply(status_topic(), status(T0, clock_synced=False), T0)
    fleet.apply(wire.telemetry_topic(GATE), telemetry(T0 + 60, clock_synced=False), T0 + 60)
    view = fleet.view(GATE)
    assert view is not None and (view.clock_synced, view.clock_unsynced_since) == (False, T0)
    fleet.apply(wire.telemetry_topic(GATE), telemetry(T0 + 120), T0 + 120)  # an older gate: no clock field
    view = fleet.view(GATE)
    assert view is not None and view.clock_synced is False
    fleet.apply(wire.telemetry_topic(GATE), telemetry(T0 + 180, clock_synced=True), T0 + 180)
    view = fleet.view(GATE)
    assert view is not None and (view.clock_synced, view.clock_unsynced_since) == (True, None)


def test_the_trust_list_age_is_as_of_the_last_message_and_ages_to_now(fleet: FleetState) -> None:
    fleet.apply(status_topic(), status(T0, trust_list_version=7, trust_list_age_s=3600, trust_stale=False), T0)
    fleet.apply(wire.telemetry_topic(GATE), telemetry(T0 + 600), T0 + 600)
    view = fleet.view(GATE)
    assert view is not None
    assert (view.trust_list_version, view.trust_list_age_s, view.trust_list_age_as_of) == (7, 4200, T0 + 600)
    assert view.trust_list_age_at(T0 + 1000) == 4600
    assert view.trust_stale is False


def test_check_ins_count_rejections_in_a_row_and_by_verdict_and_direction(fleet: FleetState) -> None:
    fleet.apply(wire.checkin_topic(GATE), checkin(T0, "accepted", seq=1), T0)
    for n in range(3):
        fleet.apply(wire.checkin_topic(GATE), checkin(T0 + 10 + n, "rejected", seq=2 + n), T0 + 10 + n)
    view = fleet.view(GATE)
    assert view is not None
    assert (view.rejections_in_row, view.rejections_since, view.last_verdict) == (3, T0 + 10, "rejected")
    assert view.last_checkin_at == pytest.approx(T0 + 12, abs=0.001)
    assert (view.site_id, view.gate, view.direction) == ("market-1", "north", "in")  # from the events
    fleet.apply(wire.checkin_topic(GATE), checkin(T0 + 20, "identified", direction="out", seq=5), T0 + 20)
    fleet.apply(wire.checkin_topic(GATE), checkin(T0 - 500, "rejected", seq=6), T0 + 21)  # an old one, late
    view = fleet.view(GATE)
    assert view is not None
    assert (view.rejections_in_row, view.last_verdict) == (1, "identified")  # the newest event decides
    counters = fleet.counters()
    assert counters.checkins == {("accepted", "in"): 1, ("rejected", "in"): 4, ("identified", "out"): 1}
    assert counters.messages == {"available": 0, "status": 0, "telemetry": 0, "checkin": 6}


def test_heard_rows_are_throttled_per_gate(fleet: FleetState) -> None:
    for at in (T0, T0 + 10, T0 + HEARD_EVERY_S - 1, T0 + HEARD_EVERY_S, T0 + HEARD_EVERY_S + 5):
        fleet.apply(wire.telemetry_topic(GATE), telemetry(at), at)
        fleet.apply(wire.telemetry_topic("gate-2"), telemetry(at, device="gate-2"), at)
    heard = fleet.take_heard()
    assert heard == [(GATE, utc(T0)), ("gate-2", utc(T0)), (GATE, utc(T0 + HEARD_EVERY_S)),
                     ("gate-2", utc(T0 + HEARD_EVERY_S))]


def test_a_gate_is_handed_to_the_registry_once_its_place_is_known(fleet: FleetState) -> None:
    fleet.apply(available(), b"online", T0)
    assert fleet.take_new_gates() == []  # no place yet
    fleet.apply(status_topic(), status(T0, site_id="market-1"), T0)
    fleet.apply(status_topic(), status(T0 + 1, site_id="market-1"), T0 + 1)
    assert [(view.device_id, view.site_id) for view in fleet.take_new_gates()] == [(GATE, "market-1")]


def test_snapshot_is_sorted_and_states_are_counted(fleet: FleetState) -> None:
    fleet.apply(available("gate-b"), b"online", T0)
    fleet.apply(available("gate-a"), b"offline", T0)
    fleet.apply(status_topic("gate-c"), status(T0, device="gate-c"), T0, retained=True)
    assert [view.device_id for view in fleet.snapshot()] == ["gate-a", "gate-b", "gate-c"]
    assert fleet.states() == {"online": 1, "offline": 1, "unknown": 1}


def test_wait_changed_returns_when_a_message_changes_the_fleet(fleet: FleetState) -> None:
    version = fleet.version
    assert fleet.wait_changed(version, timeout=0.01) == version  # nothing changed
    seen: list[int] = []
    waiter = threading.Thread(target=lambda: seen.append(fleet.wait_changed(version, timeout=30)))
    waiter.start()
    fleet.apply(available(), b"online", T0)
    waiter.join(30)
    assert seen and seen[0] > version
    assert fleet.sweep(T0 + 1000) == [GATE] and fleet.version > seen[0]


def test_concurrent_messages_are_all_counted(fleet: FleetState) -> None:
    def feed(device: str) -> None:
        for n in range(200):
            fleet.apply(wire.telemetry_topic(device), telemetry(T0 + n, device=device, pending=n), T0 + n)

    threads = [threading.Thread(target=feed, args=(f"gate-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fleet.counters().messages["telemetry"] == 800
    assert all(view.pending == 199 for view in fleet.snapshot()) and len(fleet.snapshot()) == 4
    assert fleet.version == 800


def test_device_of_reads_only_device_topics() -> None:
    assert device_of(wire.telemetry_topic("g-1")) == ("g-1", "telemetry")
    assert device_of("qrgate/v1/device//status") is None
    assert device_of("qrgate/v2/device/g-1/status") is None
    assert device_of("qrgate/v1/device/g-1/status/extra") is None
