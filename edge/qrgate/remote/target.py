"""What the running gate does for an operator's command (``dispatch.CommandTarget``), with what its service holds.

Nothing here opens a second time what the daemon holds: the camera and the GPIO pins cannot be shared (a second
opener fails as busy, or takes them from the daemon: selftest's hazards), and the outbox and the trust state have
their one owner in the service. So the remote self-test is the non-disruptive part of ``qrgate self-test``: the
clock, the disk, the camera delivering frames (the gate's frame counter advancing), the outbox, the trust lists and
the uplink, each read from the running parts; no LED blinks and the relay never pulses (a door must not open on a
command). Everything runs on the uplink's command thread (uplink/commands.py), never on paho's or the publisher's.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING

from .. import __version__
from ..selftest import CheckResult, check_clock, check_disk, report

if TYPE_CHECKING:
    from ..service import GateService

# The exit status after a restart command: sysexits' "temporary failure", so the unit's Restart=on-failure starts
# the daemon again (a clean 0 would leave it stopped).
EX_TEMPFAIL = os.EX_TEMPFAIL
# How long the self-test waits for the gate's decoded-frame counter to advance: a healthy gate decodes at least
# every decoder.decode_every-th frame even in a static scene (at most every 5 s, config.MAX_STATIC_DECODE_GAP_S).
FRAMES_WAIT_S = 6.0
_POLL_S = 0.1


class ServiceCommands:
    """The ``CommandTarget`` of a running ``GateService``."""

    def __init__(self, service: GateService) -> None:
        self._service = service

    def command_status(self) -> dict[str, object]:
        """The retained status's details, the status line, the gate's counters and the uplink's stats."""
        service = self._service
        stats = service.gate.stats
        result: dict[str, object] = {"device_id": service.config.device.id, "software": __version__,
                                     **service.status_details(), "status_line": service.status_line(),
                                     "gate": {"frames": stats.frames, "presentations": stats.presentations,
                                              "accepted": stats.accepted, "identified": stats.identified,
                                              "rejected": stats.rejected, "storage_errors": stats.storage_errors}}
        if service.uplink is not None:
            result["uplink"] = dataclasses.asdict(service.uplink.stats)
        return result

    def command_self_test(self) -> dict[str, object]:
        """The checks that do not disturb the running gate (see the module's text), as ``qrgate self-test --json``."""
        service = self._service
        config = service.config
        results = [check_clock(config.clock, clock=service.clock), check_disk(config.outbox), self._frames(),
                   self._outbox(), self._trust(), self._uplink()]
        return report(results, config.device.id)

    def command_reload_trust(self) -> dict[str, object]:
        """Offer the drop directory's list files now (as its poll would) and say which lists are in force."""
        service = self._service
        updates, trust = service.trust_updates, service.config.trust
        if updates is None:
            return {"failed": "trust.signers_dir is not set: this gate reads only the static anchors of trust.paths, "
                              "at start (restart it to read them again)"}
        imported = [{"file": path.name, "outcome": str(acceptance.outcome), "version": acceptance.version,
                     "detail": acceptance.detail} for path, acceptance in service.import_trust_drop()]
        return {"drop_dir": trust.drop_dir, "imported": imported,
                **updates.report(time.time(), trust.max_age_h * 3600)}

    def command_flush_outbox(self) -> dict[str, object]:
        """Make the uplink publish what is pending now; the answer says how much that is."""
        uplink = self._service.uplink
        if uplink is None:
            return {"failed": "mqtt.enabled is false: nothing publishes this gate's outbox"}
        uplink.flush_now()
        stats = uplink.stats
        return {"pending": stats.pending, "awaiting_ack": stats.awaiting_ack, "connected": stats.connected}

    def command_restart(self) -> dict[str, object]:
        """Nothing yet: the service stops once this answer is handed to the uplink (GateService._command_answered)."""
        return {"exit_status": EX_TEMPFAIL}

    # --- the remote self-test's own checks ----------------------------------------------------------------------

    def _frames(self) -> CheckResult:
        service = self._service
        source = service.config.camera.source
        first = service.gate.stats.frames
        started = time.monotonic()
        while time.monotonic() - started < FRAMES_WAIT_S:
            decoded = service.gate.stats.frames - first
            if decoded > 0:
                time.sleep(min(1.0, FRAMES_WAIT_S - (time.monotonic() - started)))  # a rate over about a second
                decoded, elapsed = service.gate.stats.frames - first, time.monotonic() - started
                return CheckResult("camera", True, f"{source}: {decoded} frame(s) decoded in {elapsed:.1f} s")
            time.sleep(_POLL_S)
        return CheckResult("camera", False, f"{source}: no frame decoded in {FRAMES_WAIT_S:g} s (the camera stalled, "
                                            "or the daemon is recovering it: see its log)")

    def _outbox(self) -> CheckResult:
        health = self._service.outbox.health()
        if health.storage_error:
            return CheckResult("outbox", False, health.storage_error)
        measured = f"{health.pending} pending"
        if health.size_bytes is not None and health.max_bytes is not None:
            measured += f", {health.size_bytes / 2 ** 20:.1f} MB of {health.max_bytes / 2 ** 20:.0f} MB"
        if health.over_limit:
            return CheckResult("outbox", False, f"over outbox.max_mb: {measured}")
        return CheckResult("outbox", True, measured)

    def _trust(self) -> CheckResult:
        service = self._service
        updates = service.trust_updates
        if updates is None:
            anchors = len(service.authority.state.store)
            return CheckResult("trust", anchors > 0, f"{anchors} static trust anchor(s) from trust.paths")
        facts = updates.report(time.time(), service.config.trust.max_age_h * 3600)
        if facts["trust_list_version"] is None:
            return CheckResult("trust", False, "no signed trust list in force yet: verifying with the static anchors")
        measured = f"trust list v{facts['trust_list_version']}, issued {facts['trust_list_age_s']} s ago"
        if facts["trust_stale"]:
            return CheckResult("trust", False, f"stale ({measured}; trust.max_age_h or its expiry)")
        return CheckResult("trust", True, measured)

    def _uplink(self) -> CheckResult:
        uplink = self._service.uplink
        if uplink is None:
            return CheckResult("broker", False, "mqtt.enabled is false")
        stats = uplink.stats
        where = f"{uplink.host}:{uplink.port}"
        detail = f"connected to {where}" if stats.connected else f"not connected to {where}: {stats.last_error}"
        return CheckResult("broker", stats.connected, f"{detail}; {stats.pending} pending, {stats.refused} refused")
