"""How a verification step says no: one exception carrying the Verdict's reason and failed step."""

from __future__ import annotations

from .verdict import Reason


class Rejected(Exception):
    """Raised by a parsing or checking step inside ``qrgate.passes``.

    It never leaves the package: ``PassVerifier.verify`` turns it into a ``Verdict``. It is not part of
    ``qrgate.errors`` because it is not a fault of the device but the normal answer to a bad code.
    ``detail`` names the step that failed ("base45", "zlib", "cbor", ...) and never holds pass content.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
