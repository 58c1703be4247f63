"""The province benchmark's fleet section: 2,000 simulated gates on a real Mosquitto, and how soon a change shows
in the fleet view the dashboard reads (a ``FleetState`` fed by a ``FleetListener``).

The gates run in their own process(es) (``SimulatorPool``), the listener in this one, as the service runs apart
from the gates. The listener starts after the gates are connected, as a restarted service does: it must fill its
view from the retained messages and the gates' answers to its hello. Then the bench makes changes, alternately a
gate dropped abruptly (its socket closed without DISCONNECT: the broker publishes its will) and a status
re-published with a new config hash, each at a different gate, one every ``interval_s`` while the fleet goes on
sending telemetry and check-ins; a watcher thread wakes on every change of the fleet's version and notes when
each one shows. The latency runs from the act (``time.monotonic()`` in the simulator's process, right after it)
to the view showing it (the same clock, in this process).
"""

from __future__ import annotations

import os
import random
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qrgate_provisioning.province.fleet import FleetState, GateView
from qrgate_provisioning.province.fleet_listener import FleetListener
from qrgate_provisioning.province.settings import BrokerSettings, FleetSettings
from qrgate_provisioning.province.simulate_pool import SimulatorPool
from qrgate_provisioning.province.simulate_settings import SimulationSettings

from .bench_common import met, percentile
from .broker import MosquittoBroker

TARGET_CHANGE_S = 2.0  # the "a change shows within 2 s"
# The provincial broker's queue and persistence settings (qrgate_provisioning.brokerconf.ProvincialBroker): with
# mosquitto's default max_queued_messages (1000) a service subscribing to 2,000 gates' retained availability and
# status gets the first ~1,000 and the broker drops the rest (measured: the view filled only from the hello's
# answers, 5 s later).
PROVINCIAL_QUEUEING = "max_queued_messages 1000000\nautosave_on_changes true\nautosave_interval 100"
HEARTBEAT_S = 60.0  # the gate's default telemetry_interval_s
_SEEN_TIMEOUT_S = 10.0


def bench_fleet(*, gates: int = 2000, changes: int = 200, rate: float = 100.0, processes: int = 1,
                interval_s: float = 0.05, broker_config: str = PROVINCIAL_QUEUEING,
                out: Callable[[str], None] = print) -> dict[str, object]:
    results: dict[str, object] = {"gates": gates}
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:  # mosquitto, our child, inherits it: one descriptor per connection
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-fleet-") as tmp, \
            MosquittoBroker(Path(tmp) / "broker", persistence=True, extra_config=broker_config) as broker:
        assert broker.pid is not None
        broker_files = _open_files_limit(broker.pid)
        out(f"fleet: {gates} simulated gates ({processes} process(es), one thread each) on a loopback Mosquitto "
            f"(max_connections -1 = unlimited, its open-file limit {broker_files}, {_one_line(broker_config)}); "
            f"{rate:g} check-ins/s and telemetry every {HEARTBEAT_S:g} s over the fleet")
        settings = SimulationSettings(gates=gates, rate=rate, heartbeat_s=HEARTBEAT_S, prefix="bench", seed=1)
        endpoint = BrokerSettings(host=broker.host, port=broker.port, client_id="bench-province")
        with SimulatorPool(settings, endpoint, processes) as pool:
            start = time.monotonic()
            connected = _wait(lambda: pool.stats().connected >= gates, 120)
            connect_s = time.monotonic() - start
            results["connect_s"] = round(connect_s, 2)
            out(f"   {pool.stats().connected} gates connected in {connect_s:.1f} s [{met(connected)}: all {gates}]")

            fleet = FleetState(FleetSettings(heartbeat_s=HEARTBEAT_S))
            listener = FleetListener(endpoint, fleet)
            started_epoch, started = time.time(), time.monotonic()
            with listener:
                all_online = _wait(lambda: fleet.states()["online"] >= gates, 60)
                online_s = time.monotonic() - started
                all_live = _wait(lambda: _all_heard_since(fleet.snapshot(), started_epoch, gates), 60)
                live_s = time.monotonic() - started
                results.update(view_online_s=round(online_s, 2), view_live_s=round(live_s, 2))
                out(f"   a restarted fleet view: all {gates} online after {online_s:.2f} s (retained availability), "
                    f"every one heard live after {live_s:.2f} s (their answers to the hello, jittered over "
                    f"{settings.hello_jitter_s:g} s) [{met(all_online and all_live)}]")
                cpu_before = _cpu_s(broker.pid)
                measured_from = time.monotonic()
                latencies, skipped, missed = _measure_changes(pool, fleet, changes, interval_s)
                broker_cpu = (_cpu_s(broker.pid) - cpu_before) / (time.monotonic() - measured_from)
            final = pool.stop()
        results.update(_latency_figures(latencies, skipped, missed))
        results.update(broker_cpu_share=round(broker_cpu, 3), broker_rss_mib=_rss_mib(broker.pid))
        every = [value for values in latencies.values() for value in values]
        ok = bool(every) and not missed and max(every) <= TARGET_CHANGE_S
        out(f"   {len(every)} changes shown in the fleet view ({skipped} skipped: the gate was not connected, "
            f"{missed} never shown within {_SEEN_TIMEOUT_S:g} s):")
        for kind, values in sorted(latencies.items()):
            if not values:
                out(f"      {kind}: none")
                continue
            p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
            out(f"      {kind:26} p50 {p50:6.0f} ms  p99 {p99:6.0f} ms  max {max(values) * 1000:6.0f} ms  "
                f"({len(values)})")
        out(f"   worst {max(every, default=float('nan')):.3f} s [{met(ok)}: every change within "
            f"{TARGET_CHANGE_S:g} s]; broker meanwhile {broker_cpu * 100:.0f}% of a core, "
            f"{results['broker_rss_mib']} MiB resident; simulator sent {final.checkins} check-ins, "
            f"{final.telemetry} telemetry, {final.hellos_answered} hello answers")
        results["met"] = ok
    out("")
    return results


def _measure_changes(pool: SimulatorPool, fleet: FleetState, changes: int,
                     interval_s: float) -> tuple[dict[str, list[float]], int, int]:
    """Make ``changes`` changes (drops and status changes alternately) and time each to the fleet view."""
    lock = threading.Lock()
    pending: dict[str, tuple[str, str, float]] = {}  # device -> (kind, expected config hash, act time)
    latencies: dict[str, list[float]] = {"offline by last will": [], "status (config hash)": []}
    done = threading.Event()

    def check(now: float) -> None:
        with lock:
            for device_id, (kind, token, at) in list(pending.items()):
                if _shows(fleet.view(device_id), kind, token):
                    latencies[kind].append(now - at)
                    del pending[device_id]

    def watch() -> None:
        version = fleet.version
        while not done.is_set():
            version = fleet.wait_changed(version, 0.01)
            check(time.monotonic())

    watcher = threading.Thread(target=watch, name="bench-fleet-watcher", daemon=True)
    watcher.start()
    devices = pool.online()
    random.Random(2).shuffle(devices)
    skipped = 0
    for number, device_id in enumerate(devices[:changes]):
        if number % 2 == 0:
            kind, token = "offline by last will", ""
            reply = pool.request({"command": "drop", "device_id": device_id, "away_s": 120})
        else:
            kind, token = "status (config hash)", f"bench-{number:05d}"
            reply = pool.request({"command": "status", "device_id": device_id, "config_hash": token})
        at = reply.get("at")
        if not reply.get("ok") or not isinstance(at, float):
            skipped += 1
            continue
        with lock:
            pending[device_id] = (kind, token, at)
        check(time.monotonic())  # already shown before we were told it was done
        time.sleep(interval_s)
    _wait(lambda: not pending, _SEEN_TIMEOUT_S)
    done.set()
    watcher.join(5)
    with lock:
        return latencies, skipped, len(pending)


def _shows(view: GateView | None, kind: str, token: str) -> bool:
    if view is None:
        return False
    if kind == "offline by last will":
        return view.state == "offline" and view.offline_cause == "will"
    return view.config_hash == token


def _all_heard_since(views: list[GateView], epoch: float, gates: int) -> bool:
    return len(views) >= gates and all(view.telemetry_at is not None and view.telemetry_at >= epoch for view in views)


def _latency_figures(latencies: dict[str, list[float]], skipped: int, missed: int) -> dict[str, object]:
    every = [value for values in latencies.values() for value in values]
    return {"changes": len(every), "skipped": skipped, "missed": missed,
            "latency_p50_s": round(percentile(every, 50), 4), "latency_p99_s": round(percentile(every, 99), 4),
            "latency_max_s": round(max(every, default=float("nan")), 4),
            "by_kind": {kind: {"count": len(values), "p50_s": round(percentile(values, 50), 4),
                               "p99_s": round(percentile(values, 99), 4),
                               "max_s": round(max(values, default=float("nan")), 4)}
                        for kind, values in latencies.items()}}


def _one_line(config: str) -> str:
    return ", ".join(line for line in config.splitlines() if line.strip()) or "mosquitto's defaults"


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _open_files_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "unknown"


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None
