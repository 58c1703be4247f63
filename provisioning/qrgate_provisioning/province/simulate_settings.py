"""What ``qrgate-province simulate`` is asked to do (``SimulationSettings``) and what it did (``SimulationStats``)."""

from __future__ import annotations

from dataclasses import dataclass

from qrgate.uplink.reports import HELLO_ANSWER_EVERY_S

from ..errors import ProvinceError


@dataclass(frozen=True, slots=True)
class SimulationSettings:
    """The simulated fleet. Rates are totals over the fleet; times are seconds.

    ``offline_fraction``: about this share of the gates is away at any moment, each dropping abruptly (no
    DISCONNECT: the broker publishes its will) and coming back after a time drawn from ``away_s``.
    ``places`` defaults to one place per two gates (an in gate and an out gate each)."""

    gates: int
    rate: float = 10.0  # check-ins per second, over every connected gate
    offline_fraction: float = 0.0
    duration_s: float | None = None  # None: until stopped
    places: int = 0  # 0: gates // 2 (at least 1)
    heartbeat_s: float = 60.0  # telemetry period: the fleet's fleet.heartbeat_s, or it marks the gates stale
    away_s: tuple[float, float] = (5.0, 30.0)
    hello_jitter_s: float = 5.0  # as the gate's mqtt.hello_jitter_s
    hello_every_s: float = HELLO_ANSWER_EVERY_S  # a hello within this long of the last answer is not answered
    prefix: str = "sim"  # device ids <prefix>-gate-00001, place ids <prefix>-site-00001
    seed: int | None = None
    connect_window: int = 64  # connections at most awaiting their CONNACK at once
    session_expiry_s: int = 3600

    def __post_init__(self) -> None:
        problems = []
        if self.gates < 1:
            problems.append(f"--gates must be at least 1, got {self.gates}")
        if self.rate < 0:
            problems.append(f"--rate must not be negative, got {self.rate}")
        if not 0 <= self.offline_fraction < 1:
            problems.append(f"--offline-fraction must be in [0, 1), got {self.offline_fraction}")
        if self.duration_s is not None and self.duration_s <= 0:
            problems.append(f"--duration must be positive, got {self.duration_s}")
        if self.places < 0:
            problems.append(f"--site-count must not be negative, got {self.places}")
        if self.heartbeat_s <= 0:
            problems.append(f"the heartbeat must be positive, got {self.heartbeat_s}")
        if not 0 <= self.away_s[0] <= self.away_s[1]:
            problems.append(f"away times must be 0 <= low <= high, got {self.away_s}")
        if self.hello_jitter_s < 0 or self.connect_window < 1:
            problems.append("the hello jitter must not be negative and the connect window must be at least 1")
        if problems:
            raise ProvinceError("simulate: " + "; ".join(problems))
        if self.places == 0:
            object.__setattr__(self, "places", max(1, self.gates // 2))


@dataclass(slots=True)
class SimulationStats:
    """Counters of one simulator (one process); ``merged`` adds those of several."""

    gates: int = 0
    connected: int = 0  # now
    peak_connected: int = 0
    connects: int = 0  # connection attempts that reached the broker's port
    connect_failures: int = 0  # refused at TCP or TLS, or no CONNACK in time
    refused: int = 0  # CONNACKs with a failure reason (not authorised, bad credentials)
    lost: int = 0  # connections that ended on their own (not dropped by the simulation)
    drops: int = 0  # abrupt disconnects the simulation made (the broker publishes the will)
    reconnects: int = 0
    checkins: int = 0
    accepted: int = 0
    rejected: int = 0
    identified: int = 0
    telemetry: int = 0
    statuses: int = 0
    hellos_answered: int = 0
    elapsed_s: float = 0.0

    def count_checkin(self, verdict: str) -> None:
        self.checkins += 1
        if verdict == "accepted":
            self.accepted += 1
        elif verdict == "rejected":
            self.rejected += 1
        else:
            self.identified += 1

    @property
    def checkins_per_s(self) -> float:
        return self.checkins / self.elapsed_s if self.elapsed_s else 0.0

    @classmethod
    def merged(cls, parts: list[SimulationStats]) -> SimulationStats:
        total = cls()
        for part in parts:
            for name in cls.__dataclass_fields__:
                if name == "elapsed_s":
                    total.elapsed_s = max(total.elapsed_s, part.elapsed_s)
                else:
                    setattr(total, name, getattr(total, name) + getattr(part, name))
        return total
