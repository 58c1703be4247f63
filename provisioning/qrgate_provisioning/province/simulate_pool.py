"""Simulated gates in several worker processes: each owns a share of the fleet and drives it with its own
``GateSimulator``, so the load is not bounded by one Python process's one core.

Gate ``i`` of ``fleet_identities`` belongs to worker ``i mod processes``, and each worker sends its share of the
total check-in rate. The parent talks to each worker over a ``multiprocessing`` pipe that the worker's loop serves
between packets (``GateSimulator.execute``): a command about one gate goes to its worker, ``stats`` and ``online``
go to all and are merged. Workers are spawned (not forked): the parent may already run threads (a fleet listener,
paho's), which a fork would copy half-way through whatever they were doing.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from ..errors import ProvinceError
from .settings import BrokerSettings
from .simulate import GateSimulator, Reply
from .simulate_gate import GateIdentity, fleet_identities
from .simulate_settings import SimulationSettings, SimulationStats

_STOP_TIMEOUT_S = 30.0


def _worker(settings: SimulationSettings, broker: BrokerSettings, identities: list[GateIdentity],
            control: Connection, log_level: int) -> None:
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    simulator = GateSimulator(settings, broker, identities=identities, control=control)
    try:
        stats = simulator.run()
    except ProvinceError as exc:
        control.send({"ok": False, "error": str(exc), "final": True})
        return
    with contextlib.suppress(OSError, EOFError):  # the parent is gone: nobody to tell
        control.send({"ok": True, "final": True, "stats": _stats_dict(stats)})


def _stats_dict(stats: SimulationStats) -> dict[str, object]:
    return {name: getattr(stats, name) for name in SimulationStats.__dataclass_fields__}


def _stats_of(reply: Reply) -> SimulationStats:
    values = reply.get("stats")
    if not isinstance(values, dict):
        raise ProvinceError(f"a simulator worker answered without its counters: {reply.get('error', reply)}")
    return SimulationStats(**values)


class SimulatorPool:
    """``processes`` workers sharing ``settings.gates`` gates; ``start()``, ``request()``, ``stop()``."""

    def __init__(self, settings: SimulationSettings, broker: BrokerSettings, processes: int) -> None:
        if processes < 1:
            raise ProvinceError(f"--processes must be at least 1, got {processes}")
        self.settings = settings
        self._broker = broker
        identities = fleet_identities(settings.gates, settings.places, settings.prefix)
        self._processes = min(processes, len(identities))
        self._shares = [identities[worker::self._processes] for worker in range(self._processes)]
        self._worker_of = {identity.device_id: worker for worker, share in enumerate(self._shares)
                           for identity in share}
        self._pipes: list[Connection] = []
        self._workers: list[BaseProcess] = []
        self._final: list[SimulationStats | None] = []

    def start(self) -> SimulatorPool:
        context = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()
        for worker, share in enumerate(self._shares):
            parent_end, child_end = context.Pipe()
            seed = None if self.settings.seed is None else self.settings.seed + worker
            settings = replace(self.settings, gates=len(share), rate=self.settings.rate / self._processes, seed=seed)
            process = context.Process(target=_worker, args=(settings, self._broker, share, child_end, level),
                                      name=f"qrgate-simulate-{worker + 1}", daemon=True)
            process.start()
            child_end.close()
            self._pipes.append(parent_end)
            self._workers.append(process)
            self._final.append(None)
        return self

    def request(self, command: dict[str, object], timeout: float = 10.0) -> Reply:
        """``command`` (``GateSimulator.execute``) carried out by the worker that owns its gate."""
        device_id = command.get("device_id")
        worker = self._worker_of.get(str(device_id))
        if worker is None:
            return {"ok": False, "error": f"no simulated gate {device_id!r}"}
        return self._ask(worker, command, timeout)

    def stats(self) -> SimulationStats:
        """Every worker's counters, added up."""
        return SimulationStats.merged([_stats_of(self._ask(worker, {"command": "stats"}, 10.0))
                                       for worker in range(len(self._workers))])

    def online(self) -> list[str]:
        """The connected device ids, of every worker."""
        device_ids: list[str] = []
        for worker in range(len(self._workers)):
            found = self._ask(worker, {"command": "online"}, 10.0).get("device_ids")
            if isinstance(found, list):
                device_ids.extend(str(device) for device in found)
        return device_ids

    def stop(self) -> SimulationStats:
        """Stop every worker (each stops its gates cleanly); their final counters, added up."""
        for worker, pipe in enumerate(self._pipes):
            if self._final[worker] is None and self._workers[worker].is_alive():
                try:
                    pipe.send({"command": "stop"})
                except (OSError, EOFError):
                    continue
        for worker, pipe in enumerate(self._pipes):
            if self._final[worker] is None:
                self._final[worker] = self._await_final(worker, pipe)
            self._workers[worker].join(_STOP_TIMEOUT_S)
            if self._workers[worker].is_alive():
                self._workers[worker].kill()
            pipe.close()
        return SimulationStats.merged([stats for stats in self._final if stats is not None])

    def alive(self) -> bool:
        """Whether every worker still runs."""
        return all(process.is_alive() for process in self._workers)

    def __enter__(self) -> SimulatorPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ask(self, worker: int, command: dict[str, object], timeout: float) -> Reply:
        pipe = self._pipes[worker]
        try:
            pipe.send(command)
            while pipe.poll(timeout):
                reply: Reply = pipe.recv()
                if reply.get("final"):  # the worker ended on its own (its duration, or an error)
                    self._final[worker] = _stats_of(reply) if reply.get("ok") else None
                    raise ProvinceError(f"simulator worker {worker + 1} has ended: {reply.get('error', 'done')}")
                return reply
        except (OSError, EOFError) as exc:
            raise ProvinceError(f"simulator worker {worker + 1} is gone: {exc}") from exc
        raise ProvinceError(f"simulator worker {worker + 1} did not answer {command.get('command')!r} "
                            f"within {timeout} s")

    def _await_final(self, worker: int, pipe: Connection) -> SimulationStats | None:
        try:
            while pipe.poll(_STOP_TIMEOUT_S):
                reply: Reply = pipe.recv()
                if reply.get("final"):
                    if not reply.get("ok"):
                        raise ProvinceError(f"simulator worker {worker + 1}: {reply.get('error')}")
                    return _stats_of(reply)
        except (OSError, EOFError):
            return None
        return None
