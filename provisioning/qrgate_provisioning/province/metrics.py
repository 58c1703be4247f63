"""The fleet and ingest figures for Prometheus (``/metrics`` on the dashboard), computed when scraped.

A custom collector reads the fleet's snapshot at scrape time, so there is no second copy of the state to keep
in step and a gate that disappears from the fleet disappears from the figures. Per-gate series carry the device
id (and the place on ``qrgate_gate_up``), never anything about people. Counters are since the service started;
Prometheus' ``rate()`` makes them per second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .alerts import AlertKind, evaluate
from .fleet import KINDS, FleetState
from .settings import AlertLimits

if TYPE_CHECKING:
    from .fleet_listener import FleetListener

_STATES = ("online", "offline", "unknown")


class FleetCollector(Collector):
    """Yields the fleet's metrics from its state at the moment of the scrape."""

    def __init__(self, fleet: FleetState, limits: AlertLimits, clock: Callable[[], float],
                 listener: FleetListener | None = None) -> None:
        self._fleet = fleet
        self._limits = limits
        self._clock = clock
        self._listener = listener

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        views = self._fleet.snapshot()
        gates = GaugeMetricFamily("qrgate_gates", "Gates known to the fleet, by state.", labels=["state"])
        by_state = dict.fromkeys(_STATES, 0)
        for view in views:
            by_state[view.state] += 1
        for state in _STATES:
            gates.add_metric([state], by_state[state])
        yield gates

        up = GaugeMetricFamily("qrgate_gate_up", "1 while the gate is online, 0 otherwise.",
                               labels=["device_id", "site_id"])
        last_seen = GaugeMetricFamily("qrgate_gate_last_seen_timestamp_seconds",
                                      "When anything was last heard from the gate (Unix time).", labels=["device_id"])
        backlog = GaugeMetricFamily("qrgate_gate_backlog_events",
                                    "Check-ins stored on the gate and not yet delivered.", labels=["device_id"])
        trust_age = GaugeMetricFamily("qrgate_gate_trust_list_age_seconds",
                                      "Age of the gate's trust list in force, now.", labels=["device_id"])
        for view in views:
            up.add_metric([view.device_id, view.site_id or ""], 1 if view.state == "online" else 0)
            if view.last_seen is not None:
                last_seen.add_metric([view.device_id], view.last_seen)
            if view.pending is not None:
                backlog.add_metric([view.device_id], view.pending)
            age = view.trust_list_age_at(now)
            if age is not None:
                trust_age.add_metric([view.device_id], age)
        yield from (up, last_seen, backlog, trust_age)

        alerts = GaugeMetricFamily("qrgate_alerts", "Alerts raised now, by kind.", labels=["kind"])
        raised = dict.fromkeys(get_args(AlertKind), 0)
        for alert in evaluate(views, self._limits, now):
            raised[alert.kind] += 1
        for kind, count in raised.items():
            alerts.add_metric([kind], count)
        yield alerts

        counters = self._fleet.counters()
        messages = CounterMetricFamily("qrgate_fleet_messages", "Messages the fleet received from gates, by kind.",
                                       labels=["kind"])
        for kind in KINDS:
            messages.add_metric([kind], counters.messages.get(kind, 0))
        yield messages
        yield CounterMetricFamily("qrgate_fleet_malformed",
                                  "Messages ignored: not their topic's payload, or from another device.",
                                  value=counters.malformed)
        checkins = CounterMetricFamily("qrgate_fleet_checkins", "Check-ins the fleet saw, by verdict and direction.",
                                       labels=["verdict", "direction"])
        for (verdict, direction), count in sorted(counters.checkins.items()):
            checkins.add_metric([verdict, direction], count)
        yield checkins
        if self._listener is not None:
            yield GaugeMetricFamily("qrgate_fleet_connected", "1 while the fleet listener is connected to the broker.",
                                    value=1 if self._listener.connected else 0)
            yield GaugeMetricFamily("qrgate_fleet_messages_per_second",
                                    "Messages from gates per second, over the last 10 s.",
                                    value=self._listener.rate.per_second(now))


def province_metrics(fleet: FleetState, limits: AlertLimits, *, clock: Callable[[], float] = time.time,
                     listener: FleetListener | None = None) -> CollectorRegistry:
    """A registry holding only the fleet's figures (the web layer serves it with ``generate_latest``); with the
    ``listener``, also whether it is connected and how many messages a second it receives."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fleet, limits, clock, listener))
    return registry
