"""The uplink's part of ``qrgate bench``: SD-card wear of the outbox, and a backlog's drain through a
real Mosquitto after an outage.

Wear. Each workload runs in a child process: fsync and fdatasync calls are counted by ``strace -c
-f`` around it (when strace is installed), bytes by the child's own ``/proc/self/io`` around the
workload alone: ``wchar`` is what SQLite hands to write(2)/pwrite(2), ``write_bytes`` what the
kernel accounts as going to the block device. Per-event figures are differences between workloads
(appending N events, then also delivering them), so opening the file is not counted.

Drain. A backlog is stored while the broker is down; the broker (persistence on, so the
subscriber's session waits for it) then starts, and the clock runs from that start until every
event has been acknowledged (PUBACK, or with end-to-end acks the reference consumer's
acknowledgement) and has reached a subscriber. Every figure is printed next to its baseline: the
configured rate, the time a check-in would have waited behind the backlog.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Required, TypedDict

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from qrgate import wire
from qrgate.config import MqttConfig
from qrgate.outbox import Outbox
from qrgate.uplink import Uplink

from .broker import MosquittoBroker

DEVICE_ID = "bench-gate-01"
WEAR_EVENTS = 300
PUBACK_ROUND = 20  # the default mqtt.max_inflight: PUBACKs of a draining backlog are recorded this many at a time
LIMITED_RATE = 1000.0  # events/s for the rate-limited drain: high enough to finish in seconds
_WEAR_MODES = ("open", "append", "puback-1", f"puback-{PUBACK_ROUND}", "e2e-1", f"e2e-{PUBACK_ROUND}")


class WearResults(TypedDict):
    events: int
    strace: bool  # whether fsync/fdatasync calls were counted
    per_event: dict[str, dict[str, float | None]]  # workload -> "syncs" (None: not counted), "wchar", "write_bytes"


class DrainOptions(TypedDict, total=False):
    """How one drain runs: ``_drain``'s keyword arguments."""

    rate: Required[float | None]
    end_to_end: Required[bool]
    consumer_first: bool
    ack_timeout_s: float
    probe_after: int


class DrainFigures(TypedDict, total=False):
    """What one drain measured (seconds from the broker's start)."""

    events: Required[int]
    live_latency_s: float  # with probe_after: the live check-in's way to the subscriber
    live_behind_s: float | None  # ... and how long it would have waited behind the backlog (None: no rate)
    first_event_s: float
    delivered_s: float
    received_s: float
    events_per_s: float
    duplicates: int
    resent: int
    consumer_stored: int  # with end-to-end acks
    consumer_duplicates: int


def _event(seq: int) -> wire.CheckinEvent:
    """A check-in the size of a real accepted one (~400 bytes of JSON)."""
    now = time.time()
    return wire.CheckinEvent(
        event_id=wire.new_event_id(now), seq=seq, device_id=DEVICE_ID, site_id="bench-market", gate="north-entrance",
        direction="in", time=wire.iso_utc(now), clock_synced=True, verdict="accepted", reason="accepted",
        format="qrgate", issuer="VN-HN", pass_id="00000000000003e9", subject_id="s-3f9a1c0b7d2e",
    )


def _io_counters() -> dict[str, int]:
    with open("/proc/self/io") as io:
        return {key: int(value) for key, value in (line.split(": ") for line in io)}


def wear_workload(path: str, mode: str, count: int) -> dict[str, dict[str, int]]:
    """Run in a child: append ``count`` events, then deliver them as ``mode`` says; returns the
    /proc/self/io deltas of each phase."""
    phases: dict[str, dict[str, int]] = {}
    with Outbox(path) as outbox:
        if mode == "open":
            return phases
        before = _io_counters()
        events = [outbox.append(_event) for _ in range(count)]
        after = _io_counters()
        phases["append"] = {key: after[key] - before[key] for key in ("wchar", "write_bytes", "syscw")}
        if mode == "append":
            return phases
        kind, batch = mode.split("-")
        size = int(batch)
        before = _io_counters()
        for start in range(0, count, size):
            chunk = events[start:start + size]
            if kind == "puback":
                outbox.mark_delivered(e.seq for e in chunk)
            else:
                outbox.mark_published(e.seq for e in chunk)
                outbox.mark_acknowledged(e.event_id for e in chunk)
        after = _io_counters()
        phases["deliver"] = {key: after[key] - before[key] for key in ("wchar", "write_bytes", "syscw")}
    return phases


def _run_wear_child(directory: Path, mode: str, count: int,
                    strace: str | None) -> tuple[dict[str, dict[str, int]], dict[str, int] | None]:
    database = directory / f"wear-{mode}.sqlite"
    code = ("import json, sys; from qrgate_tools.bench_uplink import wear_workload; "
            "print(json.dumps(wear_workload(sys.argv[1], sys.argv[2], int(sys.argv[3]))))")
    command = [sys.executable, "-c", code, str(database), mode, str(count)]
    calls: dict[str, int] | None = None
    if strace:
        trace = directory / f"wear-{mode}.strace"
        command = [strace, "-c", "-f", "-e", "trace=fsync,fdatasync", "-o", str(trace), *command]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    if strace:
        calls = {"fsync": 0, "fdatasync": 0}
        for line in trace.read_text().splitlines():
            match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)\s*$", line)
            if match:
                calls[match.group(2)] = int(match.group(1))
    phases: dict[str, dict[str, int]] = json.loads(result.stdout)  # what wear_workload returned
    return phases, calls


def outbox_wear(directory: Path, out: Callable[[str], None], count: int = WEAR_EVENTS) -> WearResults:
    strace = shutil.which("strace")
    runs = {mode: _run_wear_child(directory, mode, count, strace) for mode in _WEAR_MODES}
    syncs = {mode: (None if calls is None else calls["fsync"] + calls["fdatasync"])
             for mode, (_, calls) in runs.items()}

    def per_event(phase_of: str, phase: str, key: str) -> float:
        return runs[phase_of][0][phase][key] / count

    def syncs_per_event(mode: str, before: str) -> float | None:
        """fsync+fdatasync calls per event of ``mode`` beyond those of workload ``before``; None: not counted."""
        calls, baseline = syncs[mode], syncs[before]
        return None if calls is None or baseline is None else (calls - baseline) / count

    rows: dict[str, dict[str, float | None]] = {}
    rows["append: store a check-in"] = {
        "syncs": syncs_per_event("append", "open"),
        "wchar": per_event("append", "append", "wchar"), "write_bytes": per_event("append", "append", "write_bytes"),
    }
    for kind, label in (("puback", "deliver: PUBACK"), ("e2e", "deliver: e2e (PUBACK + ack)")):
        for size in (1, PUBACK_ROUND):
            mode = f"{kind}-{size}"
            rows[f"{label}, {size}/transaction"] = {
                "syncs": syncs_per_event(mode, "append"),
                "wchar": per_event(mode, "deliver", "wchar"), "write_bytes": per_event(mode, "deliver", "write_bytes"),
            }
    out(f"outbox wear per event ({count} events; fsync+fdatasync counted by "
        f"{'strace -c -f' if strace else 'nothing: strace is not installed'}, bytes from /proc/self/io of the child)")
    header = f"{'':40} {'syncs':>7} {'write() B':>10} {'to disk B':>10}"
    out(header)
    out("-" * len(header))
    for label, row in rows.items():
        syncs_text = "-" if row["syncs"] is None else f"{row['syncs']:7.2f}"
        out(f"{label:40} {syncs_text:>7} {row['wchar']:10.0f} {row['write_bytes']:10.0f}")
    out(f"   baseline: the check-in's JSON is {len(_event(1).to_json())} bytes; SQLite writes each page it changes "
        "(4 KiB) to its WAL, and once more to the database file at checkpoints. A gate answering one visitor "
        f"at a time records each PUBACK alone; a draining backlog records {PUBACK_ROUND} at a time")
    out("")
    return {"events": count, "strace": bool(strace), "per_event": rows}


class _Arrivals:
    """A persistent QoS 1 subscriber that notes when each event id first arrived."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.first_seen: dict[str, float] = {}
        self.messages = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-far-end", protocol=mqtt.MQTTv5)
        self._client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]  # paho annotates int seconds; floats work
        self._client.on_connect = lambda client, *_: client.subscribe(wire.ALL_CHECKINS, qos=wire.QOS)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
        properties.SessionExpiryInterval = 3600
        self._client.connect(broker.host, broker.port, clean_start=False, properties=properties)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("the bench subscriber could not subscribe")

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        event_id = json.loads(message.payload)["event_id"]
        with self._lock:
            self.messages += 1
            self.first_seen.setdefault(event_id, now)

    def unique(self) -> int:
        with self._lock:
            return len(self.first_seen)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.01)
    return time.monotonic()


def _drain(seed: Path, workdir: Path, *, rate: float | None, end_to_end: bool, consumer_first: bool = True,
           ack_timeout_s: float = 30.0, probe_after: int | None = None) -> DrainFigures:
    """Deliver the backlog in ``seed`` from the moment the broker starts; optionally store a live
    check-in once ``probe_after`` events have arrived and time its way to the subscriber.

    With end-to-end acks the reference consumer stores and acknowledges. ``consumer_first``: the
    gate reconnects only once the consumer has; otherwise the gate is back first, and mosquitto
    2.0.11 drops what it publishes to the consumers' shared subscription until they are back
    (docs/mqtt.md), which the gate's resends after ``ack_timeout_s`` make good.
    """
    from qrgate_provisioning.consumer import Consumer, SqliteStore

    workdir.mkdir()
    outbox_path = workdir / "outbox.sqlite"
    shutil.copy(seed, outbox_path)
    broker = MosquittoBroker(workdir / "broker", persistence=True, extra_config="max_queued_messages 0")
    broker.start()
    arrivals = _Arrivals(broker)
    store: SqliteStore | None = None
    consumer: Consumer | None = None
    if end_to_end:
        store = SqliteStore(workdir / "province.sqlite")
        consumer = Consumer(store, host=broker.host, port=broker.port, client_id="bench-consumer").start()
        consumer.wait_subscribed(10)
    broker.stop()  # the outage: the subscribers' sessions are saved and wait for the broker's return
    outbox = Outbox(outbox_path)
    total = outbox.pending_count()
    link = MqttConfig(host=broker.host, port=broker.port, tls=False, reconnect_min_s=0.05, reconnect_max_s=0.2,
                      end_to_end_ack=end_to_end, ack_timeout_s=ack_timeout_s, max_backlog_rate=rate or 0)
    uplink = Uplink(outbox, link, device_id=DEVICE_ID)
    result: DrainFigures = {"events": total}
    try:
        if consumer is None or not consumer_first:
            uplink.start()
            time.sleep(0.3)  # the uplink is now retrying against the dead broker
        started = time.monotonic()
        broker.start()
        if consumer is not None and consumer_first:
            consumer.wait_subscribed(30)
            uplink.start()
        first = _wait(lambda: arrivals.unique() > 0, 30, "the first event") - started
        if probe_after is not None:
            _wait(lambda: arrivals.unique() >= probe_after, 120, "the drain to get going")
            checked_in_at = time.monotonic()  # the visitor's moment: before the fsync'd append
            live = outbox.append(_event)
            uplink.wake()
            _wait(lambda: live.event_id in arrivals.first_seen, 60, "the live check-in")
            behind = total - probe_after
            result["live_latency_s"] = arrivals.first_seen[live.event_id] - checked_in_at
            result["live_behind_s"] = behind / rate if rate else None
            total += 1
        delivered = _wait(lambda: outbox.pending_count() == 0, 600, "the outbox to empty") - started
        received = _wait(lambda: arrivals.unique() == total, 60, "every event at the subscriber") - started
        result["first_event_s"], result["delivered_s"], result["received_s"] = first, delivered, received
        result["events_per_s"] = (total - 1) / max(received - first, 1e-9)
        result["duplicates"] = arrivals.messages - total
        result["resent"] = uplink.stats.resent
        if consumer is not None:
            result["consumer_stored"] = consumer.stats.stored
            result["consumer_duplicates"] = consumer.stats.duplicates
    finally:
        uplink.stop(flush_timeout_s=1)
        outbox.close()
        arrivals.close()
        if consumer is not None:
            consumer.stop()
        if store is not None:
            store.close()
        broker.stop()
    return result


def _build_backlog(path: Path, count: int) -> float:
    """The outage's backlog, stored as the gate stores it (one fsync'd transaction per event); returns appends/s."""
    with Outbox(path) as outbox:
        started = time.perf_counter()
        for _ in range(count):
            outbox.append(_event)
        return count / (time.perf_counter() - started)


def bench_uplink(*, backlog: int = 10_000, out: Callable[[str], None] = print) -> dict[str, object]:
    """Outbox wear and backlog drain figures; each printed with its baseline."""
    from qrgate.config import MqttConfig

    # The outages are on purpose: their "cannot connect" warnings would only clutter the figures.
    quiet = [logging.getLogger(name) for name in ("qrgate.uplink", "qrgate_provisioning.consumer")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        return _bench(backlog, out, getattr(MqttConfig(), "max_backlog_rate", None))
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def _bench(backlog: int, out: Callable[[str], None], default_rate: float | None) -> dict[str, object]:
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-uplink-") as tmp:
        root = Path(tmp)
        results["wear"] = outbox_wear(root, out)
        seed = root / "backlog.sqlite"
        append_rate = _build_backlog(seed, backlog)
        results["append_per_s"] = append_rate
        out(f"backlog of {backlog} events after an outage: loopback Mosquitto, max_inflight 20, clock from the "
            "broker's start")
        out(f"   (stored at {append_rate:.0f} events/s, one fsync'd transaction each: the gate's own ceiling)")
        header = (f"{'mode':28} {'limit/s':>8} {'first':>7} {'acked':>8} {'at sub':>8} {'events/s':>9} "
                  f"{'vs limit':>9} {'dups':>5}")
        out(header)
        out("-" * len(header))
        cases = (
            ("PUBACK = delivered", DrainOptions(rate=None, end_to_end=False)),
            ("PUBACK, rate-limited", DrainOptions(rate=LIMITED_RATE, end_to_end=False, probe_after=backlog // 10)),
            ("e2e acks, consumer back 1st", DrainOptions(rate=None, end_to_end=True)),
            ("e2e acks, gate back 1st",
             DrainOptions(rate=None, end_to_end=True, consumer_first=False, ack_timeout_s=5.0)),
        )
        drains: dict[str, dict[str, object]] = {}
        results["drain"] = drains
        for n, (label, options) in enumerate(cases):
            figures = _drain(seed, root / f"drain-{n}", **options)
            rate = options["rate"]
            drains[label] = {**options, **figures}
            versus = f"{figures['events_per_s'] / rate:8.0%}" if rate else "-"
            out(f"{label:28} {rate or '-':>8} {figures['first_event_s']:6.2f}s {figures['delivered_s']:7.2f}s "
                f"{figures['received_s']:7.2f}s {figures['events_per_s']:9.0f} {versus:>9} {figures['duplicates']:5d}")
            if "live_latency_s" in figures:
                out(f"   a check-in stored after {options['probe_after']} had arrived reached the subscriber in "
                    f"{figures['live_latency_s'] * 1000:.0f} ms; behind the backlog it would have waited "
                    f"{figures['live_behind_s']:.1f} s")
            if "consumer_stored" in figures:
                out(f"   consumer stored {figures['consumer_stored']} ({figures['consumer_duplicates']} duplicates "
                    f"ignored); the gate resent {figures['resent']} after their acknowledgement was overdue "
                    f"({options.get('ack_timeout_s', 30.0):g} s)")
        if default_rate:
            out(f"   at the configured default of {default_rate:g} events/s a {backlog}-event backlog drains in "
                f"{backlog / default_rate:.0f} s by construction")
        out("")
    return results


if __name__ == "__main__":
    bench_uplink()
