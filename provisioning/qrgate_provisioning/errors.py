"""Errors of the province's side (the issuer's tools and the reference consumer).

They live here rather than in the gate's ``qrgate.errors`` because no gate raises them, and the
gate imports nothing of the province's side. They derive from ``QrgateError`` so that one
``except QrgateError`` in a command's ``main`` reports the gate's errors and these alike.
"""

from __future__ import annotations

from qrgate.errors import QrgateError


class ConsumerError(QrgateError):
    """The province's reference consumer cannot open or write its store, or is misconfigured."""


class ProvinceError(QrgateError):
    """The province's operations service (qrgate-province) cannot do what was asked: a bad registry row, a store
    it cannot reach, a day with no report. The message names the real cause."""
