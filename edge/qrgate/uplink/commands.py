"""Commands from the province's operators (``wire.command_topic``), run on a thread of ours, answered on the link.

paho's ``on_message`` only queues a command with its MQTT 5 request properties (``CommandRunner.offer``: a bounded
queue; a command that finds it full is dropped with a log line, and its sender times out). The runner's thread
calls the handler (``qrgate.remote.dispatch.CommandHandler.handle``: authentication, then the action, which may
take seconds: a self-test, a trust reload) and hands the answer back as a ``CommandAnswer`` fact, so it is the
publisher thread that publishes it on its own connection, as it does everything else: QoS 1, on the request's
response topic when that is this device's own (``wire.command_response_topic``; a device writes nowhere else),
with the request's correlation data. Without a connection at that moment the answer is dropped with a log line:
a command lives two minutes, and the operator's sender says the gate did not answer.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .. import wire
from .health import UplinkHealth

log = logging.getLogger(__name__)

QUEUE_LENGTH = 4  # commands waiting for the runner; operators send one at a time, a flood is dropped

# What the runner calls with a command's payload: the answer, never an exception (CommandHandler.handle).
CommandHandle = Callable[[bytes], wire.CommandResponse]
# Called on the runner's thread once an answer has been handed to the publisher (the service restarts after it).
AnsweredHook = Callable[[wire.CommandResponse], None]


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """A message on this device's command topic, as paho delivered it."""

    payload: bytes
    response_topic: str | None  # MQTT 5 ResponseTopic, absent over a 3.1.1 bridge
    correlation_data: bytes | None  # MQTT 5 CorrelationData, echoed in the answer


@dataclass(frozen=True, slots=True)
class CommandAnswer:
    """A fact for the publisher thread: publish ``payload`` on ``topic`` with ``correlation_data``."""

    topic: str
    payload: bytes
    correlation_data: bytes | None
    command: str | None  # for the log line when it cannot be sent
    outcome: str


def request_of(payload: bytes, properties: object | None) -> CommandRequest:
    """The request's payload and its MQTT 5 properties (paho sets the attributes only when the PUBLISH had them)."""
    topic = getattr(properties, "ResponseTopic", None)
    correlation = getattr(properties, "CorrelationData", None)
    return CommandRequest(payload, topic if isinstance(topic, str) else None,
                          bytes(correlation) if isinstance(correlation, bytes | bytearray) else None)


def response_topic_for(device_id: str, requested: str | None) -> str:
    """Where to answer: the request's response topic only if it is this device's own, else that one anyway."""
    own = wire.command_response_topic(device_id)
    if requested is not None and requested != own:
        log.warning("command asked for an answer on %r; answering on %s (a gate writes only its own topics)",
                    requested[:200], own)
    return own


class CommandRunner:
    """Runs commands one at a time on its own thread and hands each answer to ``deliver`` (the publisher's facts)."""

    def __init__(self, handle: CommandHandle, *, device_id: str, deliver: Callable[[CommandAnswer], None],
                 health: UplinkHealth, on_answered: AnsweredHook | None = None) -> None:
        self._handle = handle
        self._device_id = device_id
        self._deliver = deliver
        self._health = health
        self._on_answered = on_answered
        self._queue: queue.Queue[CommandRequest | None] = queue.Queue(maxsize=QUEUE_LENGTH)
        self._thread: threading.Thread | None = None

    def offer(self, request: CommandRequest) -> None:
        """paho's thread: queue the command, or drop it when the queue is full (never block the network loop)."""
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            self._health.count_command("dropped")
            log.warning("command dropped: %d commands are already waiting", QUEUE_LENGTH)
            return
        self._health.count_command("received")

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="qrgate-commands", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """After the publisher has stopped; a command still running (a self-test) is given ``timeout_s``."""
        thread = self._thread
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout_s)  # behind what is queued: each is answered (or dropped) first
        except queue.Full:
            log.warning("command runner busy; not waiting for it")
            return
        thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            try:
                self._answer(request)
            except Exception:  # a bug here must not end the answering of later commands
                log.exception("command runner failed")

    def _answer(self, request: CommandRequest) -> None:
        response = self._handle(request.payload)  # logs the command and its outcome itself
        topic = response_topic_for(self._device_id, request.response_topic)
        self._deliver(CommandAnswer(topic, response.to_json(), request.correlation_data, response.command,
                                    response.outcome))
        if self._on_answered is not None:
            self._on_answered(response)
