"""The province at scale: ``qrgate bench --only province``, or ``python -m qrgate_tools.bench_province`` with its
own options. Targets of issue 15, each printed with MET / NOT MET (docs/scale.md carries the figures):

- fleet (bench_province_fleet): 2,000 simulated gates connected to a real Mosquitto, and a change (a gate offline
  by its last will, a status change) shows in the fleet view within 2 s;
- ingest (bench_province_ingest): two consumer processes sharing the subscription store >= 5,000 check-ins/s in
  PostgreSQL, 0 lost and 0 stored twice, with the broker's autosave on a timer; then a backlog (the consumers
  away while check-ins arrive, then back) with that autosave and with the provincial broker's autosave as
  ``brokerconf`` renders it today (every 100 changes), whose cost grows with the queue;
- report (bench_province_report): the daily report of a day of 2 million check-ins in <= 10 s.

Speed is measured here and never asserted in tests: the machine is shared and noisy. The bench needs mosquitto
and PostgreSQL's server binaries (Debian's ``mosquitto`` and ``postgresql`` packages); it starts private ones on
loopback and a Unix socket, and touches nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from .bench_common import met
from .postgres import PostgresServer

SECTIONS = ("fleet", "ingest", "report")
# The broker for the ingest: the provincial queueing, with the autosave on a timer instead of every 100 changes.
TIMED_AUTOSAVE = "max_queued_messages 1000000\nautosave_on_changes false\nautosave_interval 30"


def machine() -> str:
    """What this ran on: CPU model, cores, and the load when the bench started (others share the machine)."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores ({model}), load average {load:.1f} at the start"


def bench_province(*, sections: Sequence[str] = SECTIONS, gates: int = 2000, changes: int = 200,
                   events: int = 150_000, consumers: int = 2, publishers: int = 1, checkins: int = 2_000_000,
                   out: Callable[[str], None] = print) -> dict[str, object]:
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown province bench section {sorted(unknown)[0]!r}; valid: {', '.join(SECTIONS)}")
    out(f"qrgate province bench on {machine()}")
    out("")
    results: dict[str, object] = {"machine": machine()}
    summary: list[tuple[str, str, bool]] = []
    if "fleet" in sections:
        from .bench_province_fleet import bench_fleet

        fleet = results["fleet"] = bench_fleet(gates=gates, changes=changes, out=out)
        summary.append((f"{gates} gates connected, a change shown within 2 s",
                        f"connected in {fleet['connect_s']} s; p50 {_ms(fleet['latency_p50_s'])}, p99 "
                        f"{_ms(fleet['latency_p99_s'])}, max {_ms(fleet['latency_max_s'])} over {fleet['changes']} "
                        f"changes, {fleet['missed']} missed", bool(fleet["met"])))
    if {"ingest", "report"} & set(sections):
        server = PostgresServer(fsync=True)  # PostgresUnavailable, with the reason, when none can run here
        server.start()
        try:
            if "ingest" in sections:
                from .bench_province_fleet import PROVINCIAL_QUEUEING
                from .bench_province_ingest import bench_ingest

                out("ingest, broker autosave every 30 s (autosave_on_changes false):")
                timed = results["ingest"] = bench_ingest(events=events, consumers=consumers, publishers=publishers,
                                                         server=server, broker_config=TIMED_AUTOSAVE, out=out)
                summary.append((f"{consumers} consumers >= 5,000 check-ins/s, lost 0, twice 0",
                                f"{timed['ingest_rate']}/s (publishers {timed['publish_rate']}/s), lost "
                                f"{timed['lost']}, twice {timed['twice']}", bool(timed["met"])))
                for name, config, label in (
                        ("backlog_timed_autosave", TIMED_AUTOSAVE, "autosave every 30 s"),
                        ("backlog_autosave_100", PROVINCIAL_QUEUEING,
                         "autosave every 100 changes (a site broker's setting; the "
                         "provincial broker's before it moved to a timer)")):
                    out(f"backlog: the consumers away while {max(10_000, events // 3)} check-ins arrive, {label}:")
                    drained = results[name] = bench_ingest(
                        events=max(10_000, events // 3), consumers=consumers, publishers=publishers,
                        server=server, broker_config=config, backlog=True, out=out)
                    summary.append((f"backlog, {label}: taken >= 5,000/s while the consumers are away, drained "
                                    ">= 5,000/s",
                                    f"accepted at {drained['publish_rate']}/s, drained at {drained['ingest_rate']}/s, "
                                    f"lost {drained['lost']}, twice {drained['twice']}",
                                    # the broker must take them at the target rate too, not only pass them on
                                    bool(drained["met"]) and _at_least(drained["publish_rate"], 5000)))
            if "report" in sections:
                from .bench_province_report import bench_report

                report = results["report"] = bench_report(checkins=checkins, server=server, out=out)
                summary.append((f"daily report over {checkins:,} check-ins in <= 10 s",
                                f"{report['report_first_s']} s first, {report['report_best_s']} s best",
                                bool(report["met"])))
        finally:
            server.stop()
    out(f"targets (load average {os.getloadavg()[0]:.1f} at the end: other work on this machine takes its share):")
    for target, measured, ok in summary:
        out(f"   [{met(ok)}] {target}: {measured}")
    results["summary"] = [{"target": target, "measured": measured, "met": ok} for target, measured, ok in summary]
    return results


def _at_least(value: object, floor: float) -> bool:
    return isinstance(value, int | float) and value >= floor


def _ms(seconds: object) -> str:
    return f"{float(seconds) * 1000:.0f} ms" if isinstance(seconds, int | float) else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qrgate_tools.bench_province", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    parser.add_argument("--gates", type=int, default=2000, help="simulated gates for the fleet (default 2000)")
    parser.add_argument("--changes", type=int, default=200, help="changes timed in the fleet view (default 200)")
    parser.add_argument("--events", type=int, default=150_000, help="check-ins for the ingest (default 150000)")
    parser.add_argument("--consumers", type=int, default=2, help="consumer processes (default 2)")
    parser.add_argument("--publishers", type=int, default=1,
                        help="publisher processes (default 1: one reaches ~12,000/s against the broker alone, and "
                        "each more takes CPU from the consumers on a small machine)")
    parser.add_argument("--checkins", type=int, default=2_000_000,
                        help="check-ins of the reported day (default 2000000)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = parser.parse_args(argv)
    results = bench_province(sections=args.only or SECTIONS, gates=args.gates, changes=args.changes,
                             events=args.events, consumers=args.consumers, publishers=args.publishers,
                             checkins=args.checkins)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
