"""Every exception qrgate raises on purpose, in one hierarchy (as gpiozero does in gpiozero.exc).

Pass verification never raises for bad input: it returns a Verdict with a named reason. These
exceptions are for the device's own faults: a broken config, a missing camera, a full disk.
"""


class QrgateError(Exception):
    """Base of every qrgate error."""


class ConfigError(QrgateError):
    """The configuration file is missing, unreadable or invalid; the message lists every problem."""


class BoardProfileError(ConfigError):
    """A board pin profile under hardware/ is missing or invalid."""


class FrameSourceError(QrgateError):
    """A frame source cannot be opened or stopped delivering frames."""


class CameraUnavailable(FrameSourceError):
    """The camera is absent, busy, or vanished while running."""


class DecoderUnavailable(QrgateError):
    """A decoder backend's library cannot be loaded (e.g. libzbar0 not installed)."""


class FeedbackUnavailable(QrgateError):
    """The LED/buzzer/relay GPIO pins cannot be claimed (no pin library, not a Pi, pin busy)."""


class TrustStoreError(QrgateError):
    """Trust anchors cannot be loaded (unreadable file, bad certificate, bad key JSON)."""


class OutboxError(QrgateError):
    """The durable event outbox cannot store an event (disk full, database corrupt)."""


class OutboxFull(OutboxError):
    """The disk (or file system) holding the outbox is full; the event was not stored."""


class UplinkError(QrgateError):
    """The MQTT uplink is misconfigured (bad TLS files, bad broker address)."""
