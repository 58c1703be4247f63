"""The Uplink: what the gate's service starts, wakes, reads and stops; it puts the rooms of this package together.

Threads. paho's network loop runs on its own thread and only records facts (session.py). One publisher thread of
ours does everything else: connects (connection.py), reads the outbox, publishes (schedule.py), records deliveries,
backs off, reports (reports.py). A dispatcher thread hands province-wide messages to their handlers (inbound.py).
With a command handler, a runner thread carries out the operators' commands and hands each answer back to the
publisher thread as a fact (commands.py). The caller's thread only sets an Event (``wake``, ``flush_now``) and reads
a snapshot (``stats``, without SQL: health.py).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping

from ..config import MqttConfig
from ..errors import OutboxError, UplinkError
from ..outbox import Outbox
from .commands import AnsweredHook, CommandAnswer, CommandHandle, CommandRunner
from .connection import CONNECT_TIMEOUT_S, GOODBYE_TIMEOUT_S, Connection, Endpoint, Stopping
from .health import UplinkHealth, UplinkStats
from .inbound import Handler, InboundDispatcher
from .pacing import RefusalPause, full_jitter_delay
from .reports import Details, Reporter
from .schedule import Schedule
from .session import FactRecorder, Topics
from .tls import TlsSettings

log = logging.getLogger(__name__)


class Uplink:
    """Publishes pending check-in events to ``wire.checkin_topic(device_id)`` at QoS 1, as its ``[mqtt]`` section
    says; new ones first, the backlog oldest first at a bounded rate (schedule.py).

    ``start()`` returns at once; connection problems never raise into the caller, they show in
    ``stats.last_error`` and are retried forever. Configuration errors (TLS files, limits) raise
    UplinkError here, in the constructor. ``config.enabled`` is the caller's to act on.

    Besides the section: the ``outbox`` to publish from, the ``device_id`` that names the topics (and the MQTT
    client, unless ``config.client_id`` says otherwise), ``subscriptions`` (province-wide topic -> handler), what
    the status and telemetry add (``status_details``, ``telemetry_details``), ``telemetry_interval_s`` (the
    service's; None sends no telemetry), and ``on_state``, called with the stats when the link goes up or down.
    ``commands`` (``CommandHandler.handle``) turns on the operators' commands: ``wire.command_topic(device_id)`` is
    subscribed and each command answered (commands.py); ``on_command_answered`` is called with each answer once it
    is handed to the publisher (the service restarts after a restart's answer).
    """

    def __init__(
        self,
        outbox: Outbox,
        config: MqttConfig,
        *,
        device_id: str,
        software_version: str | None = None,
        subscriptions: Mapping[str, Handler] | None = None,
        status_details: Details | None = None,
        telemetry_interval_s: float | None = None,
        telemetry_details: Details | None = None,
        on_state: Callable[[UplinkStats], None] | None = None,
        commands: CommandHandle | None = None,
        on_command_answered: AnsweredHook | None = None,
    ) -> None:
        if not device_id or any(c in device_id for c in "/+#"):
            raise UplinkError(f"device id {device_id!r} cannot be an MQTT topic level")
        _check(config)
        if telemetry_interval_s is not None and telemetry_interval_s <= 0:
            raise UplinkError("telemetry_interval_s must be positive (or None for no telemetry)")
        tls = TlsSettings.of(config)
        self._outbox = outbox
        self._config = config
        self.device_id = device_id
        self.host = config.host
        self.port = config.port
        self.client_id = config.client_id or device_id
        endpoint = Endpoint(
            config.host, config.port, self.client_id, config.keepalive_s, config.session_expiry_s,
            tls.context() if tls is not None else None, tls.client_certificate_validity() if tls is not None else None,
        )
        topics = Topics.of(device_id)
        self._kick = threading.Event()  # wake(), stop() and paho's facts: the publisher has something to do
        self._flush = threading.Event()  # flush_now(): connect and publish now, without the back-off or the pause
        self._stopping = Stopping()
        self._rng = random.Random()
        self._health = UplinkHealth(outbox, end_to_end=config.end_to_end_ack, on_state=on_state)
        schedule = Schedule.of(outbox, self._health, config)
        self._inbound = InboundDispatcher(subscriptions or {})
        self._reporter = Reporter(
            outbox, self._health, topics, device_id=device_id, software_version=software_version,
            end_to_end=config.end_to_end_ack, telemetry_interval_s=telemetry_interval_s,
            status_details=status_details, telemetry_details=telemetry_details,
            hello_jitter_s=config.hello_jitter_s, rng=self._rng,
        )
        self._pause = RefusalPause(config.reconnect_min_s, config.reconnect_max_s, self._rng)
        self._commands: CommandRunner | None = None
        if commands is not None:
            self._commands = CommandRunner(commands, device_id=device_id, deliver=self._answer, health=self._health,
                                           on_answered=on_command_answered)
        recorder = FactRecorder(self._kick, ack_topic=topics.ack, end_to_end=config.end_to_end_ack,
                                inbound=self._inbound.offer, command_topic=topics.command,
                                commands=self._commands.offer if self._commands is not None else None)
        self._recorder = recorder
        self._connection = Connection(
            endpoint, topics, recorder=recorder, stopping=self._stopping, health=self._health, schedule=schedule,
            reporter=self._reporter, pause=self._pause, province_topics=self._inbound.topics,
            commands=commands is not None, flush=self._flush,
        )
        self._thread: threading.Thread | None = None

    # --- the caller's side -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._reporter.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="qrgate-uplink", daemon=True)
        self._thread.start()
        self._inbound.start()
        if self._commands is not None:
            self._commands.start()

    def wake(self) -> None:
        """Tell the publisher an event was appended (cheap: no SQL; the gate calls it after each append)."""
        self._health.pending.changed()
        self._kick.set()

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Publish what is pending for up to ``flush_timeout_s``, send retained ``offline``, disconnect.

        The clean DISCONNECT means the broker discards the Last Will. Events still pending (and,
        with end-to-end acks, those awaiting the consumer) stay in the outbox for the next start.
        """
        thread = self._thread
        if thread is None:
            return
        self._stopping.request(flush_timeout_s)
        self._kick.set()
        thread.join(flush_timeout_s + GOODBYE_TIMEOUT_S * 2 + CONNECT_TIMEOUT_S)
        if thread.is_alive():
            log.warning("MQTT uplink did not stop within %.1f s", flush_timeout_s)
        self._thread = None
        self._inbound.stop(GOODBYE_TIMEOUT_S)
        if self._commands is not None:
            self._commands.stop(GOODBYE_TIMEOUT_S)

    def flush_now(self) -> None:
        """Publish what is pending now: reconnect without waiting out the back-off, and end a pause after refusals
        (an operator's flush_outbox). The backlog's rate limit still holds."""
        self._flush.set()
        self._kick.set()

    @property
    def stats(self) -> UplinkStats:
        return self._health.snapshot()

    def _answer(self, answer: CommandAnswer) -> None:
        """The command runner's thread: the answer becomes a fact for the publisher thread, or is dropped at once
        without a connection (the next connection would discard it anyway)."""
        if not self._health.connected:
            self._health.count_command("dropped")
            log.warning("answer to command %s (%s) dropped: not connected", answer.command, answer.outcome)
            return
        self._recorder.facts.append(answer)
        self._kick.set()

    def __enter__(self) -> Uplink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the publisher thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        config = self._config
        failures = 0
        while self._should_connect():
            self._health.pending.count_if_due()
            stable = False
            try:
                stable = self._connection.attempt()
            except Exception:  # a bug here must not end publishing for the life of the daemon
                log.exception("MQTT uplink failed; reconnecting")
                self._health.note_error("internal error in the uplink (see the log)")
            failures = 0 if stable else failures + 1
            if not self._should_connect():
                break
            delay = full_jitter_delay(max(failures - 1, 0), config.reconnect_min_s, config.reconnect_max_s, self._rng)
            if self._stopping.is_set():
                time.sleep(min(delay, max(0.0, self._stopping.flush_deadline - time.monotonic())))
            else:
                self._rest(delay)

    def _rest(self, delay: float) -> None:
        """Wait ``delay`` before the next attempt, or until stop(); the gate's wake() meanwhile only
        brings the pending count up to date (the next attempt reads the outbox anyway)."""
        deadline = time.monotonic() + delay
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._flush.is_set():
                if self._flush.is_set():  # one attempt now, once: a broker that stays down gets the back-off again
                    self._flush.clear()
                    self._pause.lift()
                return
            if self._kick.wait(left):
                self._kick.clear()
                self._health.pending.count_if_due()

    def _should_connect(self) -> bool:
        """Always while running; while stopping, only to flush what is pending within the flush window
        (a broker that comes back just before a SIGTERM still gets the events answered meanwhile)."""
        if not self._stopping.is_set():
            return True
        if time.monotonic() >= self._stopping.flush_deadline:
            return False
        try:
            return self._outbox.pending_count() > 0
        except OutboxError:
            return False


def _check(config: MqttConfig) -> None:
    """What the section's own validation says too; repeated for a section built in code without validation
    (``model_construct``, a field assigned later), whose mistakes would otherwise surface as retries forever."""
    if not config.host:
        raise UplinkError("MQTT broker host is empty")
    if not 1 <= config.port <= 65535:
        raise UplinkError(f"MQTT broker port {config.port} is out of range")
    if config.max_inflight < 1:
        raise UplinkError("max_inflight must be at least 1")
    if not 0 < config.reconnect_min_s <= config.reconnect_max_s:
        raise UplinkError("reconnect delays must satisfy 0 < reconnect_min_s <= reconnect_max_s")
    if config.ack_timeout_s <= 0 or config.ack_window < 1:
        raise UplinkError("ack_timeout_s must be positive and ack_window at least 1")
    if config.max_backlog_rate < 0:
        raise UplinkError("max_backlog_rate must be positive, or 0 for no limit")
    if config.hello_jitter_s < 0:
        raise UplinkError("hello_jitter_s must be 0 or more")
