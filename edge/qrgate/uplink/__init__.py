"""The MQTT uplink: publishes the outbox's pending events at least once; new ones first, the backlog oldest first at
a bounded rate. It takes its ``[mqtt]`` section (``config.MqttConfig``), where every default lives.

The rooms:

- ``link``: the ``Uplink`` the service starts, wakes, reads and stops; its threads, and the wait between attempts.
- ``connection``: one paho client from CONNECT to its end: acting on facts, birth, telemetry, goodbye.
- ``session``: the facts paho's thread records, and one connection's state (in flight, cursors).
- ``schedule``: which events to send next (backlog mark, cursors, windows, resends) and recording acknowledgements.
- ``pacing``: jittered backoff and the token bucket.
- ``health``: stats and counters, and the cached pending count.
- ``reports``: the status and telemetry payloads, and the answer to the province's hello.
- ``inbound``: province-wide messages handed to their handlers on a thread of ours.
- ``commands``: the operators' commands run on a thread of ours, their answers published by the publisher.
- ``tls``: TLS settings.
"""

from .health import UplinkStats
from .link import Uplink
from .pacing import TokenBucket, full_jitter_delay
from .schedule import Schedule
from .tls import TlsSettings

__all__ = ["Schedule", "TlsSettings", "TokenBucket", "Uplink", "UplinkStats", "full_jitter_delay"]
