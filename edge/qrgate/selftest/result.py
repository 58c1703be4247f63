"""One self-test check's answer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: its name, whether it passed, and the measured value (ok) or the reason (failed)."""

    name: str
    ok: bool
    detail: str
