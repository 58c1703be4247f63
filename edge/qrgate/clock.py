"""Time, behind one small interface so tests can drive it, and an honest answer to "is the wall clock right?".

Intervals (debounce windows, backoff, watchdog) use the monotonic clock; only event timestamps and
pass validity use wall time, so a clock that jumps never reorders or re-times anything the gate
decides. Sequence numbers come from SQLite and event ids never go backwards within a process
(``wire.new_event_id``), so a jump changes only the ``time`` an event reports.

A Raspberry Pi has no real-time clock: after a power cut without network it boots with the last
time fake-hwclock saved, possibly days old. ``SystemClock.status()`` says whether some source
vouches for the wall clock, and which one, asking in this order (docs/clock.md):

1. ``rtc``: a real-time clock the configuration declares, when it holds a plausible time and the
   system clock agrees with it.
2. ``timesyncd``: systemd-timesyncd's flag file, created at its first synchronisation since boot.
3. ``chrony``: ``chronyc -n tracking``, run in a background thread and cached (it is a subprocess).
4. ``kernel``: the kernel's own NTP state (adjtimex), as ``timedatectl`` reports it.

The per-event call costs a monotonic clock read and a comparison: the answer is cached and refreshed
at most every ``refresh_s`` seconds, and a refresh does file and syscall checks only (chronyc runs on
a thread of its own and is never waited for).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """Whether the wall clock can be trusted, and what says so (for events, status and technicians)."""

    synchronised: bool
    source: str  # the source that vouches ("rtc", "timesyncd", "chrony", "kernel"), "assumed", "manual", or "none"


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the epoch (UTC), for event timestamps and pass expiry."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards, for intervals."""

    def synchronised(self) -> bool:
        """Whether the wall clock is disciplined by NTP (or a declared RTC)."""

    def status(self) -> ClockStatus:
        """``synchronised()`` with the name of the source that decided it."""


class ClockSource(Protocol):
    """One way of knowing that the wall clock is right. It vouches, or it does not; it never raises."""

    name: str

    def vouches(self) -> bool: ...


# 2025-01-01 UTC: an RTC before this lost its coin cell (it resets to 2000 or 1970).
RTC_PLAUSIBLE_FROM: Final = 1_735_689_600
RTC_AGREEMENT_S: Final = 120.0  # Italy's DCC verifier wants the device within 2 minutes of true time


class RtcSource:
    """A battery-backed RTC (Pi 5's own, or a DS3231 on I2C), trusted only when the config declares one.

    It vouches when the RTC holds a plausible time and the system clock is within ``tolerance_s`` of
    it, i.e. the clock was set from the RTC at boot and nothing has moved it since. This covers the
    kernel setting the clock itself (``hctosys`` = 1) and user space doing it (``hwclock --hctosys``
    from a udev rule, where ``hctosys`` stays 0), and it catches a clock set wrong after boot.
    ``since_epoch`` is the RTC read as UTC, which is how a Pi keeps it.
    """

    name = "rtc"

    def __init__(
        self,
        device: Path = Path("/sys/class/rtc/rtc0"),
        *,
        wall: Callable[[], float] = time.time,
        tolerance_s: float = RTC_AGREEMENT_S,
    ) -> None:
        self._since_epoch = device / "since_epoch"
        self._wall = wall
        self._tolerance_s = tolerance_s

    def vouches(self) -> bool:
        try:
            rtc_seconds = int(self._since_epoch.read_text())
        except (OSError, ValueError):  # no RTC, a driver that cannot read it (EINVAL after a dead cell), garbage
            return False
        return rtc_seconds >= RTC_PLAUSIBLE_FROM and abs(self._wall() - rtc_seconds) <= self._tolerance_s


class TimesyncdSource:
    """systemd-timesyncd touches this file when it first synchronises after boot (systemd >= 239).

    It is not removed when the network goes away later; by then the clock was right once this boot,
    and a Pi's crystal drifts by seconds a day, far inside any pass's validity check.
    """

    name = "timesyncd"

    def __init__(self, flag: Path = Path("/run/systemd/timesync/synchronized")) -> None:
        self._flag = flag

    def vouches(self) -> bool:
        try:
            return self._flag.exists()
        except OSError:
            return False


CHRONY_LOCAL_REFERENCE: Final = "7F7F0101"  # chrony's refid for its own "local" reference: not a time source


class ChronySource:
    """chronyd's view, from ``chronyc -n tracking``, refreshed in a background thread.

    ``vouches()`` never waits for the subprocess: it answers from the last completed run and, when
    that is older than ``refresh_s``, starts one more run (one at a time). Until the first run has
    finished it does not vouch. Without ``chronyc`` installed it never starts anything.
    """

    name = "chrony"

    def __init__(
        self,
        command: Sequence[str] = ("chronyc", "-n", "tracking"),
        *,
        refresh_s: float = 30.0,
        timeout_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        executable = shutil.which(command[0]) if command else None
        self._command = (executable, *command[1:]) if executable else None
        self._refresh_s = refresh_s
        self._timeout_s = timeout_s
        self._monotonic = monotonic
        self._synchronised = False
        self._started_at = -math.inf
        self._lock = threading.Lock()
        self._running = False

    def vouches(self) -> bool:
        if self._command is not None and self._monotonic() - self._started_at >= self._refresh_s:
            self._start_refresh()
        return self._synchronised

    def _start_refresh(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
            self._started_at = self._monotonic()
        threading.Thread(target=self._refresh, name="qrgate-chronyc", daemon=True).start()

    def _refresh(self) -> None:
        assert self._command is not None
        try:
            done = subprocess.run(
                self._command, capture_output=True, text=True, timeout=self._timeout_s,
                env={**os.environ, "LC_ALL": "C"}, check=False,
            )
            self._synchronised = done.returncode == 0 and chrony_tracking_synchronised(done.stdout)
        except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
            self._synchronised = False
        finally:
            with self._lock:
                self._running = False


def chrony_tracking_synchronised(report: str) -> bool:
    """Whether a ``chronyc -n tracking`` report shows chronyd synchronised to a real time source.

    "Leap status : Not synchronised" is chrony's own no; a reference id of 7F7F0101 is its ``local``
    directive, which makes a free-running clock look synchronised to itself.
    """
    fields: dict[str, str] = {}
    for line in report.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields[key.strip()] = value.strip()
    leap = fields.get("Leap status")
    reference = fields.get("Reference ID", "").split(" ", 1)[0].upper()
    return (leap in ("Normal", "Insert second", "Delete second")
            and reference not in ("", "00000000", CHRONY_LOCAL_REFERENCE))


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> as the libc ``adjtimex`` symbol takes it (longs are the ABI's
    # native width, which is also right for 32-bit Raspberry Pi OS's legacy symbol).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


NTP_PHASE_LIMIT_US: Final = 16_000_000  # the kernel's cap on maxerror; reaching it sets STA_UNSYNC


class KernelSource:
    """The kernel's NTP discipline state, read with ``adjtimex`` (modes = 0: read only, no privilege).

    Synchronised means the kernel's maximum error estimate is below 16 s, exactly what systemd's
    timedated reports as "System clock synchronized". It ignores STA_UNSYNC on purpose, as systemd
    does: chronyd sets that flag to keep the kernel from writing the RTC. An NTP daemon resets
    maxerror at every update, and the kernel adds 500 us to it every second without one.
    """

    name = "kernel"

    def __init__(self) -> None:
        libc_name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
        self._adjtimex = getattr(libc, "adjtimex", None)

    def vouches(self) -> bool:
        if self._adjtimex is None:
            return False
        timex = _Timex()
        if self._adjtimex(ctypes.byref(timex)) == -1:
            return False
        return bool(0 <= timex.maxerror < NTP_PHASE_LIMIT_US)


def system_clock_sources(*, rtc: bool) -> tuple[ClockSource, ...]:
    """The sources of the host, in the order they are asked; the RTC only when the config declares one."""
    sources: list[ClockSource] = [RtcSource()] if rtc else []
    sources += [TimesyncdSource(), ChronySource(), KernelSource()]
    return tuple(sources)


NOT_SYNCHRONISED: Final = ClockStatus(False, "none")


class SystemClock:
    """The host clock; ``status()`` asks its sources, in order, whether the wall clock is right.

    ``assume_synchronised`` skips the sources (bench, development machines). ``status()`` may be
    called from any thread: two callers racing on a stale cache both ask the sources and store
    equivalent answers.
    """

    def __init__(
        self,
        assume_synchronised: bool | None = None,
        *,
        rtc: bool = False,
        sources: Sequence[ClockSource] | None = None,
        refresh_s: float = 5.0,
    ) -> None:
        self._assumed = None if assume_synchronised is None else ClockStatus(assume_synchronised, "assumed")
        if self._assumed is None:
            self._sources = tuple(sources) if sources is not None else system_clock_sources(rtc=rtc)
        else:
            self._sources = ()
        self._refresh_s = refresh_s
        self._status = NOT_SYNCHRONISED
        self._checked_at = -math.inf

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def synchronised(self) -> bool:
        return self.status().synchronised

    def status(self) -> ClockStatus:
        if self._assumed is not None:
            return self._assumed
        now = time.monotonic()
        if now - self._checked_at >= self._refresh_s:
            self._status = next(
                (ClockStatus(True, source.name) for source in self._sources if source.vouches()), NOT_SYNCHRONISED
            )
            self._checked_at = now
        return self._status


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

    def status(self) -> ClockStatus:
        return ClockStatus(self.is_synchronised, "manual")

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        self._wall += seconds

