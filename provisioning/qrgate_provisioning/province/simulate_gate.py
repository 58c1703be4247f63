"""One gate of ``qrgate-province simulate``: who it is, and the messages a real gate sends, in wire's schemas.

A simulated gate says what a real one says (``edge/qrgate/uplink``): its availability (``online`` at connect; the
broker publishes its last will ``offline`` when the link dies), its retained ``wire.DeviceStatus`` with its place,
gate name and direction, a ``wire.Telemetry`` report every heartbeat, and ``wire.CheckinEvent`` check-ins with a
UUIDv7 event id (``wire.new_event_id``) and a per-device sequence number without gaps. Verdicts are mixed as at a
real gate; people are pseudonymous pass and subject ids drawn from a pool of visitors (no names, no ID numbers),
so one person is seen at several places, as a trace needs. The MQTT client belongs to the simulator's loop
(``simulate``); this module only builds payloads, so it is tested without a broker.
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from qrgate import __version__, wire

Direction = Literal["in", "out"]
Verdict = Literal["accepted", "rejected", "identified"]

# How presentations end at a gate in the field, roughly: most passes accepted, some refused for one of the usual
# reasons, a few chip ID cards admitted by policy ("identified").
VERDICTS: tuple[Verdict, ...] = ("accepted", "rejected", "identified")
VERDICT_WEIGHTS = (0.85, 0.12, 0.03)
REJECTION_REASONS = ("expired", "bad_signature", "unknown_issuer", "revoked", "not_a_pass", "malformed")
SIMULATED_ISSUER = "VN-SIM"
SOFTWARE = f"qrgate {__version__} (simulated)"
DISK_TOTAL_BYTES = 16 * 1024**3  # a 16 GB SD card


@dataclass(frozen=True, slots=True)
class GateIdentity:
    """Where a simulated gate stands: its device id (also its MQTT client id), its place, gate name, direction."""

    device_id: str
    site_id: str
    gate: str
    direction: Direction


def fleet_identities(count: int, site_count: int, prefix: str = "sim") -> list[GateIdentity]:
    """``count`` gates over ``site_count`` places: gate ``i`` stands at place ``i mod site_count``; at each place
    the gates alternate in, out, in... (a place with one gate only checks people in).

    Ids are ``<prefix>-gate-00001`` and ``<prefix>-site-00001``, valid device and place ids (config.ID_PATTERN),
    so a registry can be seeded with the same places (the benchmark does)."""
    if count < 1 or site_count < 1:
        raise ValueError(f"need at least one gate and one place, got {count} gates over {site_count} places")
    site_count = min(site_count, count)
    identities = []
    for index in range(count):
        site, position = index % site_count, index // site_count
        identities.append(GateIdentity(
            device_id=f"{prefix}-gate-{index + 1:05d}", site_id=site_id_of(prefix, site), gate=f"gate-{position + 1}",
            direction="in" if position % 2 == 0 else "out"))
    return identities


def site_id_of(prefix: str, site: int) -> str:
    """The id of simulated place number ``site`` (0-based)."""
    return f"{prefix}-site-{site + 1:05d}"


@dataclass(frozen=True, slots=True)
class Visitor:
    """A person as the gates see them: a pass id (16 hex digits, as qrgate passes have) and a pseudonymous subject
    id (base32 of a hash, as the issuer derives it): nothing that names anyone."""

    pass_id: str
    subject_id: str


def visitor_pool(rng: random.Random, size: int) -> list[Visitor]:
    """``size`` random visitors."""
    visitors = []
    for _ in range(size):
        pass_id = f"{rng.getrandbits(64):016x}"
        digest = hashlib.sha256(pass_id.encode()).digest()[:15]
        visitors.append(Visitor(pass_id, base64.b32encode(digest).decode().rstrip("=")))
    return visitors


class SimulatedGate:
    """One gate's counters and the payloads it publishes (times are epoch seconds, the gate's wall clock)."""

    __slots__ = ("accepted", "config_hash", "identified", "identity", "rejected", "seq", "started_at",
                 "trust_list_version")

    def __init__(self, identity: GateIdentity, started_at: float) -> None:
        self.identity = identity
        self.started_at = started_at
        self.seq = 0  # the last sequence number used: the next check-in carries seq + 1
        self.accepted = self.rejected = self.identified = 0
        self.config_hash = hashlib.sha256(identity.device_id.encode()).hexdigest()[:16]
        self.trust_list_version = 1

    @property
    def device_id(self) -> str:
        return self.identity.device_id

    def status(self, state: Literal["online", "offline"], now: float) -> bytes:
        """The retained DeviceStatus at connect (``online``) or at a clean stop (``offline``)."""
        identity = self.identity
        return wire.DeviceStatus(
            device_id=identity.device_id, site_id=identity.site_id, gate=identity.gate,
            direction=identity.direction, state=state, time=wire.iso_utc(now), software=SOFTWARE, pending=0,
            config_hash=self.config_hash, trust_list_version=self.trust_list_version, trust_list_age_s=3600,
            trust_stale=False, clock_synced=True,
        ).to_json()

    def telemetry(self, now: float, rng: random.Random) -> bytes:
        """The heartbeat's report: nothing pending (the simulator's link delivers at once), healthy figures."""
        return wire.Telemetry(
            device_id=self.identity.device_id, time=wire.iso_utc(now), uptime_s=int(now - self.started_at),
            pending=0, awaiting_ack=0, oldest_pending_s=0, sent=self.seq, resent=0, delivered=self.seq, refused=0,
            accepted=self.accepted + self.identified, rejected=self.rejected,
            frames_per_s=round(rng.uniform(14.0, 16.0), 1), cpu_temp_c=round(rng.uniform(45.0, 60.0), 1),
            disk_free_bytes=DISK_TOTAL_BYTES // 2, disk_total_bytes=DISK_TOTAL_BYTES, clock_synced=True,
        ).to_json()

    def checkin(self, now: float, rng: random.Random, visitors: list[Visitor]) -> wire.CheckinEvent:
        """The next check-in: seq + 1, a fresh UUIDv7, a verdict drawn from VERDICT_WEIGHTS."""
        self.seq += 1
        verdict = rng.choices(VERDICTS, VERDICT_WEIGHTS)[0]
        visitor = rng.choice(visitors)
        identity = self.identity
        if verdict == "accepted":
            self.accepted += 1
            reason, form, issuer = "accepted", "qrgate", SIMULATED_ISSUER
            pass_id, subject_id = visitor.pass_id, visitor.subject_id
        elif verdict == "identified":
            self.identified += 1
            reason, form, issuer, pass_id, subject_id = "identified", "cccd", None, None, visitor.subject_id
        else:
            self.rejected += 1
            reason, form, issuer = rng.choice(REJECTION_REASONS), "qrgate", SIMULATED_ISSUER
            pass_id, subject_id = visitor.pass_id, None  # a refused pass names no subject
        return wire.CheckinEvent(
            event_id=wire.new_event_id(now), seq=self.seq, device_id=identity.device_id, site_id=identity.site_id,
            gate=identity.gate, direction=identity.direction, time=wire.iso_utc(now), clock_synced=True,
            verdict=verdict, reason=reason, format=form, issuer=issuer, pass_id=pass_id, subject_id=subject_id,
        )
