"""Province-wide messages (trust lists, revocation lists, rule sets), handed to their handlers on a thread of ours.

Their topics are subscribed on every connection. paho's ``on_message`` only queues a message (bounded, the oldest
dropped: only the newest list matters, and a flood cannot grow memory), so verifying a signed list never runs on
paho's thread nor delays publishing.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

_QUEUE_LENGTH = 8  # province-wide messages waiting for their handler

Handler = Callable[[str, bytes], None]


class InboundDispatcher:
    """Queues province-wide messages from paho's thread and runs their handlers on its own."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = dict(handlers)
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=_QUEUE_LENGTH)
        self._kick = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def topics(self) -> list[str]:
        return list(self._handlers)

    def offer(self, topic: str, payload: bytes) -> None:
        """paho's thread: queue the message and wake the dispatcher."""
        self._queue.append((topic, payload))
        self._kick.set()

    def start(self) -> None:
        if not self._handlers or self._thread is not None:
            return
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="qrgate-inbound", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """After the publisher has stopped: messages its last connection brought are still handled."""
        if self._thread is None:
            return
        self._closing = True
        self._kick.set()
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            while self._queue:
                topic, payload = self._queue.popleft()
                handler = self._handlers.get(topic)
                if handler is None:
                    continue
                try:
                    handler(topic, payload)
                except Exception:  # a handler's bug must not end the delivery of later lists
                    log.exception("handler for %s failed", topic)
            if self._closing:
                return
