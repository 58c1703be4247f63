"""``qrgate-province simulate --gates N``: a load generator, N simulated gates on a real broker.

Each gate connects with its own client id and last will, publishes its retained status and telemetry, sends
check-ins at its share of ``--rate``, answers the province's hello, and (``--offline-fraction``) drops abruptly
now and then so the broker fires its will, and comes back (``province.simulate``). The broker is the config's
``[broker]`` section (host, port, TLS, credentials) unless ``--host``/``--port`` say otherwise. Progress is logged
every ``--progress`` seconds; the counters are printed as one JSON object at the end. docs/scale.md has the
figures this drove.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from ...errors import ProvinceError
from ..settings import BrokerSettings
from ..simulate import GateSimulator
from ..simulate_pool import SimulatorPool
from ..simulate_settings import SimulationSettings, SimulationStats
from . import EXIT_OK, Subcommands
from .common import DEFAULT_CONFIG, config_of

log = logging.getLogger(__name__)


def add_parser(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "simulate", help="a load generator: N simulated gates on a real broker",
        description="Connect N simulated gates to the broker, each with its own client id (its device id) and last "
        "will: retained status and availability, telemetry every heartbeat, check-ins (UUIDv7 event ids, gap-free "
        "seq, accepted and rejected, in and out, pseudonymous ids only) at the total --rate, some going offline "
        "abruptly (the broker publishes their will) and coming back. For load tests on a broker that is not the "
        "production one: the gates' ids are made up (<prefix>-gate-00001 at <prefix>-site-00001...).",
    )
    parser.add_argument("--config", type=Path, default=None,
                        metavar="FILE", help=f"the service's TOML file, for its [broker] and [fleet] sections "
                        f"(default {DEFAULT_CONFIG} when it exists, else built-in defaults)")
    parser.add_argument("--host", default=None, help="the broker (default: the config's broker.host)")
    parser.add_argument("--port", type=int, default=None, help="its port (default: the config's broker.port)")
    parser.add_argument("--gates", type=int, required=True, metavar="N", help="how many gates")
    parser.add_argument("--rate", type=float, default=10.0, metavar="CHECKINS_PER_S",
                        help="check-ins per second over the whole fleet (default 10)")
    parser.add_argument("--offline-fraction", type=float, default=0.0, metavar="F",
                        help="about this share of the gates is away at any moment, each dropping abruptly and "
                        "coming back after 5-30 s (default 0)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: until SIGINT/SIGTERM)")
    parser.add_argument("--site-count", type=int, default=0, metavar="K",
                        help="spread the gates over K places (default: one place per two gates, one in, one out)")
    parser.add_argument("--heartbeat", type=float, default=None, metavar="S",
                        help="telemetry period (default: the config's fleet.heartbeat_s)")
    parser.add_argument("--processes", type=int, default=1, metavar="P",
                        help="worker processes sharing the gates (default 1: one thread drives ~2,000 gates)")
    parser.add_argument("--prefix", default="sim", help="device and place id prefix (default sim)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    parser.add_argument("--progress", type=float, default=10.0, metavar="S",
                        help="log the counters every S seconds (default 10; 0: never)")
    parser.set_defaults(run=run, dsn=None)


def run(args: argparse.Namespace) -> int:
    config = config_of(args)
    broker = config.broker
    overrides = {name: value for name, value in (("host", args.host), ("port", args.port)) if value is not None}
    if overrides:
        broker = BrokerSettings.model_validate({**broker.model_dump(), **overrides})
    settings = SimulationSettings(
        gates=args.gates, rate=args.rate, offline_fraction=args.offline_fraction, duration_s=args.duration,
        places=args.site_count, heartbeat_s=args.heartbeat if args.heartbeat is not None else config.fleet.heartbeat_s,
        prefix=args.prefix, seed=args.seed)
    log.info("simulate: %d gates at %d places on %s:%d, %.1f check-ins/s, offline fraction %.2f, %d process(es)",
             settings.gates, settings.places, broker.host, broker.port, settings.rate, settings.offline_fraction,
             args.processes)
    stats = _run_pool(settings, broker, args) if args.processes > 1 else _run_here(settings, broker, args.progress)
    print(json.dumps({**asdict(stats), "checkins_per_s": round(stats.checkins_per_s, 1)}))
    if stats.peak_connected == 0:
        raise ProvinceError(f"no simulated gate could connect to {broker.host}:{broker.port} "
                            f"({stats.connect_failures} failed attempts, {stats.refused} refused by the broker)")
    return EXIT_OK


def _run_here(settings: SimulationSettings, broker: BrokerSettings, progress_s: float) -> SimulationStats:
    simulator = GateSimulator(settings, broker)
    done = threading.Event()
    with _stopping_on_signals(simulator.stop):
        if progress_s > 0:
            threading.Thread(target=_progress, args=(lambda: _stats_of(simulator), done, progress_s),
                             name="qrgate-simulate-progress", daemon=True).start()
        try:
            return simulator.run()
        finally:
            done.set()


def _run_pool(settings: SimulationSettings, broker: BrokerSettings, args: argparse.Namespace) -> SimulationStats:
    stop = threading.Event()
    with SimulatorPool(settings, broker, args.processes) as pool, _stopping_on_signals(stop.set):
        waited = 0.0
        step = args.progress if args.progress > 0 else 1.0
        while not stop.is_set() and pool.alive():
            wait = step if settings.duration_s is None else min(step, settings.duration_s - waited)
            if wait <= 0 or stop.wait(wait):
                break
            waited += wait
            if args.progress > 0:
                _log_progress(pool.stats())
        return pool.stop()


def _stats_of(simulator: GateSimulator) -> SimulationStats:
    reply = simulator.request({"command": "stats"})
    values = reply.get("stats")
    if not isinstance(values, dict):
        raise ProvinceError(f"the simulator answered without its counters: {reply}")
    return SimulationStats(**values)


def _progress(stats: Callable[[], SimulationStats], done: threading.Event, every_s: float) -> None:
    while not done.wait(every_s):
        try:
            _log_progress(stats())
        except ProvinceError:
            return  # the loop is ending


def _log_progress(stats: SimulationStats) -> None:
    log.info("simulate: %d/%d gates connected, %d check-ins, %d telemetry, %d drops, %d reconnects, %d lost",
             stats.connected, stats.gates, stats.checkins, stats.telemetry, stats.drops, stats.reconnects, stats.lost)


@contextlib.contextmanager
def _stopping_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``stop`` (the gates then stop cleanly) instead of ending the process; only the main
    thread may set signal handlers, so elsewhere (a test calling ``main``) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, lambda *_: stop()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
