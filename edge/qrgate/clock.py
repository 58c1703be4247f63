"""Time, behind one small interface so tests can drive it.

Intervals (debounce windows, backoff, watchdog) use the monotonic clock; only event timestamps use
wall time, so a clock that jumps never reorders or re-times anything the gate decides.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the epoch (UTC), for event timestamps and pass expiry."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards, for intervals."""

    def synchronised(self) -> bool:
        """Whether the wall clock is disciplined by NTP (or a declared RTC)."""


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (Linux, 64-bit longs); only the return value of adjtimex matters.
    _fields_ = [("modes", ctypes.c_uint), ("_pad", ctypes.c_long * 25), ("_tail", ctypes.c_int * 11)]


_TIME_ERROR = 5


class SystemClock:
    """The host clock; ``synchronised()`` asks the kernel (adjtimex), as timedatectl does."""

    def __init__(self, assume_synchronised: bool | None = None) -> None:
        self._assume = assume_synchronised
        self._adjtimex = None
        if assume_synchronised is None:
            libc_name = ctypes.util.find_library("c")
            if libc_name:
                libc = ctypes.CDLL(libc_name, use_errno=True)
                self._adjtimex = getattr(libc, "adjtimex", None)

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def synchronised(self) -> bool:
        if self._assume is not None:
            return self._assume
        if self._adjtimex is None:
            return False
        tx = _Timex()
        state = self._adjtimex(ctypes.byref(tx))
        # TIME_ERROR (5) means the kernel's clock is not synchronised (STA_UNSYNC set); -1 is a failed call.
        return state not in (-1, _TIME_ERROR)


class ManualClock:
    """A clock the caller moves by hand; wall time can jump independently of monotonic time."""

    def __init__(self, wall: float = 1_767_225_600.0, monotonic: float = 1000.0, synchronised: bool = True) -> None:
        self._wall = wall
        self._mono = monotonic
        self.is_synchronised = synchronised

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def synchronised(self) -> bool:
        return self.is_synchronised

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        self._wall += seconds
