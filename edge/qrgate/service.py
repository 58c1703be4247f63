"""The daemon: builds the gate from a config, runs the capture loop, talks to systemd, stops cleanly.

Hardware, clock, network and storage are each built here from the config and can be handed in
instead (tests pass a synthetic source, gpiozero's MockFactory, a ManualClock). The capture loop
runs on the calling thread and hands frames to the decode threads (decoder.workers), which run the
gate's per-frame path; the uplink publishes from its own thread; gpiozero runs LED and buzzer
patterns on its own threads, so nothing the visitor waits for blocks on the network or a pattern.
docs/architecture.md draws the threads and what each owns.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gpiozero.pins import Factory

from . import __version__, wire
from .clock import Clock, SystemClock
from .config import GateConfig
from .decision import Decider
from .decoding.factory import build_pipeline
from .decoding.parallel import ParallelDecoder
from .decoding.pipeline import FramePipeline
from .errors import FrameSourceError, OutboxError
from .feedback import GateFeedback
from .frames.base import FrameSource
from .frames.build import build_frame_source
from .gate import Gate, Presentation
from .notify import SystemdNotifier
from .outbox import Outbox
from .passes.authority import TrustAuthority
from .passes.signed_list import ListType
from .passes.trust import TrustStore
from .passes.verifier import PassVerifier
from .policies import baseline_rules, cccd_policy
from .remote.auth import CommandAuthenticator, OperatorKeys
from .remote.dispatch import CommandHandler
from .remote.nonces import NonceStore
from .remote.target import EX_TEMPFAIL, ServiceCommands
from .trust_updates import Acceptance, TrustUpdates
from .uplink import Uplink
from .uplink.reports import CounterRate

log = logging.getLogger(__name__)


class GateService:
    """Everything a running gate owns, in start order; ``close()`` releases it in reverse."""

    def __init__(
        self,
        config: GateConfig,
        *,
        source: FrameSource | None = None,
        pin_factory: Factory | None = None,
        clock: Clock | None = None,
        notifier: SystemdNotifier | None = None,
        on_outcome: Callable[[Presentation], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock(rtc=config.clock.rtc)
        self.notifier = notifier or SystemdNotifier()
        self._closers: list[Callable[[], None]] = []
        # Built in start order; whatever was opened is closed again if a later part fails.
        try:
            self.trust_updates, self.authority = self._open_trust()
            self.outbox = Outbox(Path(config.outbox.path), max_bytes=config.outbox.max_mb * 1024 * 1024)
            self._closers.append(self.outbox.close)
            self.feedback = GateFeedback.from_config(config.feedback, pin_factory)
            self._closers.append(self.feedback.close)
            self.commands = self._build_commands()  # their actions run only after everything below is built
            self.uplink = self._build_uplink() if config.mqtt.enabled else None
            self.source = source if source is not None else build_frame_source(config.camera)
            self._closers.append(self.source.close)
            pipeline = build_pipeline(config.decoder)
            self.gate = self._build_gate(pipeline, on_outcome)
            # Decode threads hand their results to the gate; they stop before the outbox and the LEDs close.
            self.decoders: ParallelDecoder | None = None
            if config.decoder.workers:
                self.decoders = ParallelDecoder(pipeline, self.gate.handle, workers=config.decoder.workers)
                self._closers.append(self.decoders.close)
        except BaseException:
            self.close()
            raise
        self._stop = threading.Event()
        self.stopped_by_eof = False
        self.exit_status = 0  # what `qrgate run` exits with: EX_TEMPFAIL after an operator's restart command
        self._drop_lock = threading.Lock()  # the drop directory's poll and the reload_trust command, one at a time
        # Identifies the configuration in force on the status topic: the fleet can spot a gate that missed a change.
        self.config_hash = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
        self._drop_thread: threading.Thread | None = None
        self._frame_rate = CounterRate()  # frames decoded per second, between two telemetry reports

    def _open_trust(self) -> tuple[TrustUpdates | None, TrustAuthority]:
        """The signed-list updates (when the province's signers are pinned) and the authority passes are checked
        against: the updates' own, or one over the static anchors of ``trust.paths``."""
        trust = self.config.trust
        rules = baseline_rules(self.config.rules)
        if trust.signers_dir:
            updates = TrustUpdates.open(trust.state_dir, trust.signers_dir, trust.paths, baseline_rules=rules)
            return updates, updates.authority
        return None, TrustAuthority.of_store(TrustStore.from_paths(trust.paths), rules=rules)

    def _build_gate(self, pipeline: FramePipeline, on_outcome: Callable[[Presentation], None] | None) -> Gate:
        """The per-frame path (gate.py) over the parts opened before it."""
        config, trust = self.config, self.config.trust
        uplink = self.uplink
        return Gate(
            decoder=pipeline,
            verifier=PassVerifier(self.authority, clock_skew_s=trust.clock_skew_s, max_age_s=trust.max_age_h * 3600,
                                  stale_policy=trust.stale_policy, cccd=cccd_policy(config)),
            decider=Decider(presence_gap_s=config.decision.presence_gap_s,
                            repeat_window_s=config.decision.repeat_window_s),
            outbox=self.outbox,
            show=self.feedback.show,
            device=config.device,
            clock=self.clock,
            on_event_stored=uplink.wake if uplink is not None else (lambda: None),
            on_outcome=on_outcome,
            # Only a live camera stamps frames on the monotonic clock; files and a simulated scene do not.
            measure_latency=self.source.live,
            clock_policy=config.clock.unsynchronised_policy,
        )

    def _build_commands(self) -> CommandHandler | None:
        """The operators' commands (remote.operator_keys set): their keys, the nonce file, this service as target."""
        remote = self.config.remote
        if not remote.operator_keys:
            return None
        if not self.config.mqtt.enabled:
            log.warning("remote.operator_keys is set but mqtt.enabled is false: no command can arrive")
            return None
        keys = OperatorKeys.load(remote.operator_keys)
        nonces = NonceStore(remote.nonces_path)
        self._closers.append(nonces.close)
        log.info("commands on: %d operator key(s) from %s", len(keys.keys), remote.operator_keys)
        return CommandHandler(CommandAuthenticator(self.config.device.id, keys, nonces), ServiceCommands(self))

    def _build_uplink(self) -> Uplink:
        return Uplink(
            self.outbox,
            self.config.mqtt,
            device_id=self.config.device.id,
            software_version=__version__,
            subscriptions=self._list_subscriptions(),
            status_details=self.status_details,
            telemetry_interval_s=self.config.service.telemetry_interval_s or None,
            telemetry_details=self._telemetry_details,
            commands=self.commands.handle if self.commands is not None else None,
            on_command_answered=self._command_answered,
        )

    def _command_answered(self, response: wire.CommandResponse) -> None:
        """A restart's answer is on its way (the uplink publishes it before its goodbye): stop, and exit so that
        systemd starts the daemon again (Restart=on-failure; the daemon never re-executes itself)."""
        if response.command == "restart" and response.outcome == "done":
            log.warning("restart ordered by an operator: stopping, exit status %d", EX_TEMPFAIL)
            self.exit_status = EX_TEMPFAIL
            self.request_stop()

    def _telemetry_details(self) -> dict[str, object]:
        """The gate's own counters for the periodic telemetry (the uplink adds link and outbox health)."""
        stats = self.gate.stats
        details: dict[str, object] = {
            "frames": stats.frames, "accepted": stats.accepted, "identified": stats.identified,
            "rejected": stats.rejected, "storage_errors": stats.storage_errors,
            "frames_dropped": self._frames_dropped(),
            "frames_per_s": self._frame_rate.per_second(stats.frames, time.monotonic()),
            "clock_synced": self.clock.synchronised(),
        }
        latency = stats.latency_percentiles_ms()
        if latency is not None:
            details["latency_p50_ms"], details["latency_p99_ms"] = latency["p50"], latency["p99"]
        rules = self.authority.state.rules
        if rules is not None:
            age = rules.age_s(time.time())
            details["rule_set_version"] = rules.version
            details["rule_set_age_s"] = None if age is None else round(age)
        return details

    def _list_subscriptions(self) -> dict[str, Callable[[str, bytes], None]]:
        """Province-wide signed lists and rule sets, offered to the trust updates from the uplink's inbound thread."""
        updates = self.trust_updates
        if updates is None:
            return {}

        def offer_as(list_type: ListType) -> Callable[[str, bytes], None]:
            def offer(topic: str, payload: bytes) -> None:
                updates.offer(payload, f"mqtt:{topic}", time.time(), expect=list_type)  # logs its own outcome

            return offer

        return {wire.TRUST_LIST_TOPIC: offer_as(ListType.TRUST_LIST),
                wire.REVOCATION_TOPIC: offer_as(ListType.REVOCATION),
                wire.RULE_SET_TOPIC: offer_as(ListType.RULE_SET)}

    def status_details(self) -> dict[str, object]:
        """What the retained status message says beyond the uplink's own counters."""
        device = self.config.device
        details: dict[str, object] = {"config_hash": self.config_hash, "clock_synced": self.clock.synchronised(),
                                      "site_id": device.site_id, "gate": device.gate, "direction": device.direction}
        if self.trust_updates is not None:
            details.update(self.trust_updates.report(time.time(), self.config.trust.max_age_h * 3600))
        elif self.authority.state.rules is not None:
            details["rule_set_version"] = self.authority.state.rules.version  # the built-in set, or a file: not signed
        return details

    def request_stop(self) -> None:
        """Ask the capture loop to finish (signal handlers call this; it only sets a flag)."""
        self._stop.set()

    def run(self) -> None:
        """Run until ``request_stop()`` or the end of a finite source; then stop everything cleanly."""
        if self.uplink is not None:
            self.uplink.start()
        if self.trust_updates is not None and self.config.trust.drop_dir:
            self._drop_thread = threading.Thread(target=self._watch_drop_dir, name="qrgate-trust-drop", daemon=True,
                                                 args=(Path(self.config.trust.drop_dir),))
            self._drop_thread.start()
        try:
            self._capture_loop()
        finally:
            self.notifier.stopping()
            self._shutdown()

    def _capture_loop(self) -> None:
        config = self.config.service
        source, gate, notifier, stop = self.source, self.gate, self.notifier, self._stop
        try:
            source.start()
        except FrameSourceError as exc:  # a camera missing at start-up is recovered like one that vanished
            self._recover_camera(exc, 1)
        watchdog_every = notifier.watchdog_interval_s()
        watchdog_every = watchdog_every / 2 if watchdog_every else None
        next_watchdog = next_status = 0.0
        ready = False
        camera_failures = 0
        decoders = self.decoders
        decoded_at_last_watchdog = -1
        while not stop.is_set():
            try:
                frame = source.read(timeout=0.5)
            except EOFError:
                self.stopped_by_eof = True
                if decoders is not None:
                    decoders.wait_idle()
                return
            except FrameSourceError as exc:
                camera_failures += 1
                self._recover_camera(exc, camera_failures)
                continue
            if frame is None:
                continue  # no frame, no progress: the watchdog is deliberately not fed
            camera_failures = 0
            if decoders is None:
                gate.process(frame)
            else:
                # A finite source (files, a simulated scene) waits for a free worker: every frame counts.
                decoders.submit(frame, wait=not source.live)
            now = time.monotonic()
            if not ready:
                ready = True
                notifier.ready()
                log.info("camera delivering frames; gate %s ready", self.config.device.id)
            if watchdog_every is not None and now >= next_watchdog:
                # Progress means frames decoded and acted on, not frames captured nor frames the presence
                # gate skipped: a hung decoder behind a healthy camera must trip the watchdog. A healthy
                # one decodes at least every decoder.decode_every-th frame even in a static scene.
                decoded = self.gate.stats.frames
                if decoded > decoded_at_last_watchdog:
                    notifier.watchdog()
                    decoded_at_last_watchdog = decoded
                next_watchdog = now + watchdog_every
            if now >= next_status:
                notifier.status(self.status_line())
                next_status = now + config.status_interval_s

    def _watch_drop_dir(self, drop_dir: Path) -> None:
        """Offer list files dropped by a technician (or a sync job at a site without network)."""
        try:
            drop_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.error("trust drop directory %s unusable: %s", drop_dir, exc)
            return
        while True:
            self.import_trust_drop()
            if self._stop.wait(self.config.trust.drop_poll_s):
                return

    def import_trust_drop(self) -> list[tuple[Path, Acceptance]]:
        """Offer the drop directory's list files now: its poll, and an operator's reload_trust command."""
        drop_dir = self.config.trust.drop_dir
        if self.trust_updates is None or not drop_dir:
            return []
        with self._drop_lock:  # two importers would rename or delete each other's files mid-offer
            return self.trust_updates.import_directory(Path(drop_dir), time.time())

    def _recover_camera(self, exc: FrameSourceError, failures: int) -> None:
        """Free the failed camera, then reopen it with backoff (0.5 s x 2^failures, at most 30 s) until it is back
        or the service stops; one log line per failure. No watchdog ping here: a camera that never returns trips it."""
        source = self.source
        stop_capture = getattr(source, "stop", None) or source.close  # no stop(): only a non-final close() recovers
        delay = min(30.0, 0.5 * 2 ** min(failures, 6))
        log.error("camera failed: %s; reopening in %.1f s", exc, delay)
        attempt = 0
        while True:
            stop_capture()  # free the device now: a replugged USB camera gets its old /dev/video* node back
            self.notifier.status(f"camera failed: {exc}; retrying in {delay:.1f} s")
            if self._stop.wait(delay):
                return
            attempt += 1
            try:
                source.start()
            except FrameSourceError as again:
                exc, failures = again, failures + 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.error("camera still unavailable (attempt %d): %s; next attempt in %.1f s", attempt, exc, delay)
                continue
            log.info("camera recovered: reopened at attempt %d", attempt)
            self.notifier.status("camera recovered; reading frames again")
            return

    def status_line(self) -> str:
        stats = self.gate.stats
        link, pending = "off", None
        if self.uplink is not None:
            # The uplink's cached count: this runs on the capture loop, which must not wait behind a commit.
            uplink_stats = self.uplink.stats
            link, pending = ("up" if uplink_stats.connected else "down"), uplink_stats.pending
        else:
            try:
                pending = self.outbox.pending_count()
            except OutboxError:
                pending = None
        trust = "static"
        if self.trust_updates is not None and self.trust_updates.version is not None:
            trust = f"v{self.trust_updates.version}"
        rules = self.authority.state.rules
        ruled = "off" if rules is None else f"v{rules.version}" if rules.signed else rules.source
        return (
            f"frames {stats.frames} dropped {self._frames_dropped()} | accepted {stats.accepted} "
            f"rejected {stats.rejected} | outbox pending {'unreadable' if pending is None else pending} | "
            f"mqtt {link} | trust {trust} | rules {ruled}"
        )

    def _frames_dropped(self) -> int:
        """Frames lost to latest-frame-wins: replaced in the camera's slot, or in the decode workers' pending slot."""
        return self.source.frames_dropped + (self.decoders.frames_dropped if self.decoders is not None else 0)

    def _shutdown(self) -> None:
        self._stop.set()  # also after an end of input or an error: the drop-directory thread waits on it
        self.feedback.all_off()
        if self._drop_thread is not None:
            self._drop_thread.join(5)
        if self.uplink is not None:
            self.uplink.stop(flush_timeout_s=self.config.service.stop_flush_s)
        self.close()

    def close(self) -> None:
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # one failing part must not keep the others (LEDs, database) open
                log.exception("error while closing")
