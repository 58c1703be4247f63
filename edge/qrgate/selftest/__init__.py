"""The gate's self-test: every part it needs, tried once, each answered ok or failed with a reason.

``qrgate self-test`` runs it (commands/self_test.py), as does the technician's provisioning over SSH
after installing a gate. One function per check; each takes the config section it needs and turns its
own failures into a failed ``CheckResult`` whose detail names the reason (never a traceback, never
personal data: no check reads a pass or an event). ``run_self_test`` runs them in the order a
technician at the gate follows: the outputs they watch and hear, the camera, then the rest.

What it changes: the LEDs blink, the buzzer beeps, the relay pulses (the door strike or turnstile
opens once). It never creates the outbox or the trust state directory (as root it would leave them
owned by root, unwritable by the daemon's user) and never writes to them; opening an outbox the
daemon holds is safe (SQLite's WAL admits readers beside the writer). The GPIO pins and the camera
cannot be shared: with the daemon running those checks fail as busy (stop the service first).
Off a Pi, ``feedback.mock_pins`` and ``camera.source = "synthetic"`` run it on gpiozero's mock pins
and the synthetic scene.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from gpiozero import DigitalOutputDevice
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory

from .. import wire
from ..board import OutputPin
from ..clock import Clock, SystemClock
from ..config import CameraConfig, ClockConfig, FeedbackConfig, GateConfig, OutboxConfig, TrustConfig
from ..errors import FrameSourceError, OutboxError, QrgateError
from ..feedback import GateFeedback
from ..frames.build import build_frame_source
from ..outbox import Outbox
from ..passes.trust import TrustStore
from ..trust_updates import TrustUpdates
from .broker import check_broker
from .result import CheckResult

log = logging.getLogger(__name__)

# Feedback: long enough to see and hear from a step away, short enough that the whole test takes seconds.
LED_BLINKS = 2
LED_ON_S = 0.25
BUZZER_ON_S = 0.2  # the relay's pulse is the configured one (patterns.relay_pulse_s): what the lock gets

# Camera: the first frame within the timeout, then a second more (the Pi camera's auto-exposure and autofocus
# settle well within it); the last frame is measured.
CAMERA_TIMEOUT_S = 5.0
CAMERA_SETTLE_S = 1.0
# Mean grey level (0-255) of the last frame. Below 20 is a covered lens or an unlit gate at night; above 235
# is washed out (sun straight into the lens, exposure stuck): neither leaves a QR code the contrast it needs.
# Focus (the variance of the Laplacian) is reported, never judged: it depends on the scene as much as on the
# lens (a blank wall in perfect focus measures near 0); compare it with the value measured at installation.
MIN_BRIGHTNESS = 20.0
MAX_BRIGHTNESS = 235.0

# Clock: chronyc answers from a background thread; give its first run this long before saying "no".
CLOCK_WAIT_S = 2.0

# Disk: room for about 100,000 check-ins in the outbox (an event row with its index is under 1 KiB) and for
# the logs; below this a long network outage could fill the card, and a full disk refuses every check-in.
MIN_DISK_FREE_MB = 100

_MB = 1024 * 1024


def run_self_test(
    config: GateConfig,
    *,
    skip_broker: bool = False,
    pin_factory: Factory | None = None,
    clock: Clock | None = None,
) -> list[CheckResult]:
    """Every check, in order. ``pin_factory`` and ``clock`` replace gpiozero's factory (``feedback.mock_pins``
    decides otherwise) and the host clock, as GateService's seams do."""
    results: list[CheckResult] = []
    results += _guarded("feedback", lambda: check_feedback(config.feedback, pin_factory=pin_factory))
    results += _guarded("camera", lambda: [check_camera(config.camera)])
    results += _guarded("clock", lambda: [check_clock(config.clock, clock=clock)])
    results += _guarded("disk", lambda: [check_disk(config.outbox)])
    results += _guarded("outbox", lambda: [check_outbox(config.outbox)])
    results += _guarded("trust", lambda: [check_trust(config.trust)])
    results += _guarded("broker", lambda: [check_broker(config.mqtt, device_id=config.device.id, skip=skip_broker)])
    return results


def _guarded(name: str, check: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    """A check's results, or one failed result if it raised what it did not expect (a bug, or a library's
    exotic exception): the other checks still run, and the log keeps the traceback for developers."""
    try:
        return check()
    except Exception as exc:  # one check's surprise must not hide the others' answers
        log.debug("self-test %s raised", name, exc_info=True)
        return [CheckResult(name, False, f"unexpected {type(exc).__name__}: {exc}")]


def report(results: Sequence[CheckResult], device_id: str) -> dict[str, object]:
    """The JSON-able report (``--json``, and the remote command's reply)."""
    return {"device": device_id, "ok": all(result.ok for result in results),
            "checks": [asdict(result) for result in results]}


# --- feedback ------------------------------------------------------------------------------------------------


def check_feedback(feedback: FeedbackConfig, *, pin_factory: Factory | None = None) -> list[CheckResult]:
    """Blink the green and red LEDs, beep the buzzer, pulse the relay (when fitted): one result each.

    Built as the daemon builds them (GateFeedback.from_config). After each level change the output is
    read back: a pin library that accepts a write but does not drive the line shows here; whether the LED
    lights, the buzzer sounds and the relay clicks, only the technician can see and hear."""
    try:
        outputs = GateFeedback.from_config(feedback, pin_factory)
    except QrgateError as exc:  # BoardProfileError, FeedbackUnavailable (a busy pin: is the daemon running?)
        return [CheckResult("feedback", False, str(exc))]
    profile = outputs.profile
    mocked = isinstance(pin_factory, MockFactory) or (pin_factory is None and feedback.mock_pins)
    mock = " (mock pins)" if mocked else ""
    patterns = feedback.patterns
    with outputs:
        results = [
            _pulse("led.green", outputs.green, profile.green, LED_BLINKS, LED_ON_S, mock),
            _pulse("led.red", outputs.red, profile.red, LED_BLINKS, LED_ON_S, mock),
            _pulse("buzzer", outputs.buzzer, profile.buzzer, 1, BUZZER_ON_S, mock),
        ]
        if outputs.relay is None or profile.relay is None:
            results.append(CheckResult("relay", True, f"not fitted (board {profile.name}, feedback.relay = "
                                                      f"{str(feedback.relay).lower()}): not pulsed"))
        else:
            results.append(_pulse("relay", outputs.relay, profile.relay, 1, patterns.relay_pulse_s, mock))
    return results


def _pulse(name: str, device: DigitalOutputDevice, pin: OutputPin, times: int, on_s: float, mock: str) -> CheckResult:
    where = f"GPIO{pin.bcm} (J8 pin {pin.header_pin}{', active low' if pin.active_low else ''})"
    for _ in range(times):
        device.on()
        lit = bool(device.value)
        time.sleep(on_s)
        device.off()
        dark = not device.value
        time.sleep(LED_ON_S)  # dark between blinks, and before the next output starts
        if not lit:
            return CheckResult(name, False, f"{where} did not read back on after switching it on")
        if not dark:
            return CheckResult(name, False, f"{where} did not read back off after switching it off")
    return CheckResult(name, True, f"{where}: {times} x {on_s:g} s on{mock}")


# --- camera --------------------------------------------------------------------------------------------------


def check_camera(camera: CameraConfig) -> CheckResult:
    """Frames from the configured camera: how many came, their mean brightness and a focus measure."""
    name = "camera"
    try:
        source = build_frame_source(camera)
    except (QrgateError, ImportError, OSError) as exc:
        return CheckResult(name, False, f"{camera.source}: cannot build the source: {exc}")
    frames, last, ended = 0, None, ""
    try:
        source.start()
        deadline = time.monotonic() + CAMERA_TIMEOUT_S  # for the first frame; then CAMERA_SETTLE_S more
        while time.monotonic() < deadline:
            try:
                frame = source.read(timeout=0.5)
            except EOFError:
                ended = " (the source ended)"
                break
            if frame is None:
                continue
            if not frames:
                deadline = time.monotonic() + CAMERA_SETTLE_S
            frames += 1
            last = np.array(frame.grey, copy=True)  # the source reuses its buffer on the next read
    except FrameSourceError as exc:
        return CheckResult(name, False, f"{camera.source}: {exc}")
    finally:
        source.close()
    if last is None:
        return CheckResult(name, False, f"{camera.source}: no frame within {CAMERA_TIMEOUT_S:g} s{ended}")
    brightness = float(last.mean())
    focus = float(cv2.Laplacian(last, cv2.CV_64F).var())
    height, width = last.shape[:2]
    measured = (f"{camera.source} {width}x{height}, {_count(frames, 'frame')}{ended}, "
                f"brightness {brightness:.0f}/255, focus {focus:.0f} (variance of the Laplacian)")
    if brightness < MIN_BRIGHTNESS:
        return CheckResult(name, False, f"too dark (below {MIN_BRIGHTNESS:.0f}: lens covered, no light?): {measured}")
    if brightness > MAX_BRIGHTNESS:
        return CheckResult(name, False, f"too bright (above {MAX_BRIGHTNESS:.0f}: sun in the lens, exposure stuck?): "
                                        f"{measured}")
    return CheckResult(name, True, measured)


# --- clock, disk -------------------------------------------------------------------------------------------------


def check_clock(clock_config: ClockConfig, *, clock: Clock | None = None) -> CheckResult:
    """Whether some source vouches for the wall clock (clock.py), and which one."""
    clock = clock or SystemClock(rtc=clock_config.rtc, refresh_s=0.0)
    deadline = time.monotonic() + CLOCK_WAIT_S
    status = clock.status()
    while not status.synchronised and time.monotonic() < deadline:
        time.sleep(0.1)
        status = clock.status()
    reads = f"the wall clock reads {wire.iso_utc(clock.wall())}"
    if status.synchronised:
        return CheckResult("clock", True, f"synchronised ({status.source}); {reads}")
    asked = "the RTC, " if clock_config.rtc else ""
    return CheckResult("clock", False, f"not synchronised: no time source vouches for it (asked {asked}timesyncd, "
                                       f"chrony, the kernel; docs/clock.md); {reads}")


def check_disk(outbox: OutboxConfig) -> CheckResult:
    """Free space on the file system that holds the outbox."""
    directory = Path(outbox.path).parent
    while not directory.is_dir() and directory != directory.parent:
        directory = directory.parent  # not created yet: the file system it will be created on
    try:
        usage = shutil.disk_usage(directory)
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return CheckResult("disk", False, f"{directory}: {exc.strerror or exc}")
    measured = f"{usage.free / _MB:.0f} MB free of {usage.total / _MB:.0f} MB on {directory}"
    if read_only:
        return CheckResult("disk", False, f"{directory} is on a file system mounted read-only ({measured})")
    if usage.free < MIN_DISK_FREE_MB * _MB:
        return CheckResult("disk", False, f"{measured}: below {MIN_DISK_FREE_MB} MB")
    return CheckResult("disk", True, measured)


# --- outbox, trust -----------------------------------------------------------------------------------------------


def check_outbox(outbox: OutboxConfig) -> CheckResult:
    """The outbox opens (integrity and schema checked), with its pending count and any storage fault."""
    path = Path(outbox.path)
    if not path.exists():
        return CheckResult("outbox", False, f"{path} does not exist: the daemon creates it when it first starts "
                                            "(the self-test does not, so that it belongs to the daemon's user)")
    try:
        with Outbox(path, max_bytes=outbox.max_mb * _MB) as store:
            pending = store.pending_count()
            health = store.health()
    except OutboxError as exc:
        return CheckResult("outbox", False, str(exc))
    if health.storage_error:
        return CheckResult("outbox", False, health.storage_error)
    measured = f"{pending} pending"
    if health.oldest_pending_wall is not None:
        measured += f" (oldest stored {_ago(time.time() - health.oldest_pending_wall)} ago)"
    if health.size_bytes is not None:
        measured += f", {health.size_bytes / _MB:.1f} MB of {outbox.max_mb} MB"
    if health.over_limit:
        return CheckResult("outbox", False, f"over outbox.max_mb: {measured}")
    return CheckResult("outbox", True, f"{path}: {measured}")


def check_trust(trust: TrustConfig, *, now: float | None = None) -> CheckResult:
    """The signed trust list in force, its version and age (``trust.signers_dir`` set), else the static anchors."""
    now = time.time() if now is None else now
    try:
        if not trust.signers_dir:
            store = TrustStore.from_paths(trust.paths)
            if not len(store):
                return CheckResult("trust", False, f"no issuer key in trust.paths ({', '.join(trust.paths)})")
            return CheckResult("trust", True, f"{_count(len(store), 'static trust anchor')} from "
                                              f"{', '.join(trust.paths)}")
        state_dir = Path(trust.state_dir)
        if not state_dir.is_dir():
            return CheckResult("trust", False, f"no signed trust list: {state_dir} does not exist (no list has been "
                                               "accepted yet; the self-test does not create it)")
        updates = TrustUpdates.open(state_dir, trust.signers_dir, trust.paths)
    except QrgateError as exc:  # TrustStoreError: an unreadable anchor, no signer key, an unusable state directory
        return CheckResult("trust", False, str(exc))
    state = updates.authority.state
    if updates.version is None:
        return CheckResult("trust", False, f"no signed trust list in {state_dir}: the gate verifies with "
                                           f"{_count(len(state.store), 'static anchor')} of trust.paths until one is "
                                           "accepted")
    age = updates.age_s(now) or 0.0
    facts = updates.report(now, trust.max_age_h * 3600)
    measured = f"trust list v{updates.version}, {_count(len(state.store), 'key')}, issued {_ago(age)} ago"
    if facts.get("revocation_version") is not None:
        measured += f"; revocation list v{facts['revocation_version']}"
    if state.list_expires_at is not None and now > state.list_expires_at:
        return CheckResult("trust", False, f"stale: expired {_ago(now - state.list_expires_at)} ago ({measured})")
    if facts.get("trust_stale"):
        return CheckResult("trust", False, f"stale: older than trust.max_age_h = {trust.max_age_h:g} h ({measured})")
    return CheckResult("trust", True, measured)


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}{'s' if number != 1 else ''}"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 7200:
        return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172_800 else f"{seconds / 86_400:.1f} days"


__all__ = ["CheckResult", "check_broker", "report", "run_self_test"]
