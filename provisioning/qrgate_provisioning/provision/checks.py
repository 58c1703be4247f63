"""The target checks, before anything changes: what the gate is, and whether it can become this gate.

One round trip (``remote_scripts.FACTS`` with the system's python3) collects the facts; this module judges
them. Blocking failures (an OS, architecture or Python the wheels do not fit, too little free space, a
read-only root) stop the run before the first change. The hardware checks (camera and GPIO device nodes) and
the clock are reported and the run goes on, so a gate whose camera ribbon is loose is otherwise installed and
a re-run after fixing it only verifies; the checklist fails until they pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .checklist import Item, ProvisionError
from .layout import Layout
from .remote_scripts import FACTS
from .transport import Remote
from .wheels import Wheelhouse

SUPPORTED_OS = {"debian": ("12", "13"), "raspbian": ("12", "13")}
MIN_PYTHON = (3, 11)
PI_MACHINES = ("aarch64", "armv7l")
_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Judged:
    item: Item
    blocking: bool = False


async def gather_facts(remote: Remote, layout: Layout, packages: Sequence[str]) -> dict[str, Any]:
    done = await remote.run(["python3", "-", layout.root, *packages], input=FACTS.encode(), check=False,
                            what="the target checks")
    if not done.ok:
        raise ProvisionError(f"{remote.host}: the target checks need python3 on the gate (Raspberry Pi OS has it): "
                             f"{done.stderr.strip()[-300:] or done.exit_status}")
    facts: dict[str, Any] = json.loads(done.stdout)
    return facts


def judge(facts: Mapping[str, Any], config: Mapping[str, Mapping[str, Any]], wheelhouse: Wheelhouse, *,
          allow_unsynced_clock: bool = False) -> list[Judged]:
    """Every target check as a checklist item, blocking or not."""
    return [
        _os(facts), _architecture(facts, wheelhouse), _python(facts, wheelhouse), _disk(facts, wheelhouse),
        _camera(facts, config.get("camera", {})), _gpio(facts, config.get("feedback", {})),
        _clock(facts, allow_unsynced_clock), _systemd(facts),
    ]


def _os(facts: Mapping[str, Any]) -> Judged:
    os_id, version, name = facts["os_id"], facts["os_version"], facts["os_name"] or "unknown OS"
    family = os_id if os_id in SUPPORTED_OS else next((f for f in facts["os_like"].split() if f in SUPPORTED_OS), "")
    if family and version in SUPPORTED_OS[family]:
        return Judged(Item("target os", True, name))
    wanted = "Debian or Raspberry Pi OS 12 (bookworm) or 13 (trixie)"
    return Judged(Item("target os", False, f"{name} (ID={os_id}, VERSION_ID={version}): need {wanted}"), True)


def _architecture(facts: Mapping[str, Any], wheelhouse: Wheelhouse) -> Judged:
    machine = facts["machine"]
    misfits = [m for m in wheelhouse.misfits(machine, facts["python"]) if "is for Python" not in m]
    if misfits:
        return Judged(Item("architecture", False, f"{machine}: {'; '.join(misfits[:3])}"), True)
    note = "" if machine in PI_MACHINES else " (not a Raspberry Pi's: the board checks below decide)"
    platform_wheels = sum(1 for w in wheelhouse.wheels if w.platform != "any")
    return Judged(Item("architecture", True, f"{machine}{note}; {len(wheelhouse.wheels)} wheel(s) fit it "
                                             f"({platform_wheels} platform-specific)"))


def _python(facts: Mapping[str, Any], wheelhouse: Wheelhouse) -> Judged:
    version = facts["python"]
    if tuple(int(p) for p in version.split(".")[:2]) < MIN_PYTHON:
        return Judged(Item("python", False, f"python3 is {version}; qrgate needs 3.11 or later"), True)
    misfits = [m for m in wheelhouse.misfits(facts["machine"], version) if "is for Python" in m]
    if misfits:
        return Judged(Item("python", False, f"{version}: {'; '.join(misfits[:3])} (build the wheelhouse with "
                                            f"--python {'.'.join(version.split('.')[:2])})"), True)
    return Judged(Item("python", True, f"python3 {version}"))


def _disk(facts: Mapping[str, Any], wheelhouse: Wheelhouse) -> Judged:
    free, total, where = facts["disk_free"] // _MB, facts["disk_total"] // _MB, facts["disk_dir"]
    needed = wheelhouse.needed_free_mb
    measured = f"{free} MB free of {total} MB on {where}"
    if facts["read_only"]:
        return Judged(Item("free space", False, f"{where} is mounted read-only ({measured}); with the read-only "
                                                "root enabled, run qrgate-readonly-root disable and reboot first"),
                      True)
    if free < needed:
        return Judged(Item("free space", False, f"{measured}: need at least {needed} MB (the wheels, pip's copy, "
                                                "the outbox's floor): free some space or use a larger card"), True)
    return Judged(Item("free space", True, f"{measured} (need {needed} MB)"))


def _camera(facts: Mapping[str, Any], camera: Mapping[str, Any]) -> Judged:
    source = camera.get("source", "picamera2")
    if source in ("synthetic", "files", "video"):
        return Judged(Item("camera device", True, f"not needed (camera.source = {source!r})"))
    nodes = facts["video"]
    if source == "usb":
        device = camera.get("usb_device", 0)
        wanted = device if isinstance(device, str) else f"/dev/video{device}"
        if wanted in nodes:
            return Judged(Item("camera device", True, f"{wanted} (usb)"))
        return Judged(Item("camera device", False, f"no {wanted} for the USB camera (camera.usb_device): is it "
                                                   f"plugged in? (found: {', '.join(nodes) or 'none'})"))
    if nodes:
        return Judged(Item("camera device", True, f"{len(nodes)} video/media node(s): {', '.join(nodes[:4])}"))
    return Judged(Item("camera device", False, "no /dev/video* or /dev/media* node: the Pi camera is not detected "
                                               "(ribbon seated, contacts the right way round? camera_auto_detect=1 "
                                               "in /boot/firmware/config.txt?)"))


def _gpio(facts: Mapping[str, Any], feedback: Mapping[str, Any]) -> Judged:
    if feedback.get("mock_pins"):
        return Judged(Item("gpio device", True, "not needed (feedback.mock_pins = true)"))
    chips = facts["gpio"]
    if chips:
        return Judged(Item("gpio device", True, ", ".join(chips)))
    return Judged(Item("gpio device", False, "no /dev/gpiochip*: the LEDs, buzzer and relay cannot be driven (is "
                                             "this a Raspberry Pi?)"))


def _clock(facts: Mapping[str, Any], allow_unsynced: bool) -> Judged:
    sources = facts["clock"]
    if sources:
        return Judged(Item("clock", True, f"synchronised ({', '.join(sources)})"))
    detail = ("not synchronised: no time source vouches for it (timesyncd, chrony, the kernel; is NTP reachable "
              "from the site?)")
    if allow_unsynced:
        return Judged(Item("clock", True, f"{detail}; allowed by --allow-unsynced-clock"))
    return Judged(Item("clock", False, detail))


def _systemd(facts: Mapping[str, Any]) -> Judged:
    if facts["systemd"]:
        return Judged(Item("init", True, "systemd is running: the unit is enabled and started with systemctl"))
    return Judged(Item("init", True, f"systemd is not running (PID 1 is {facts['pid1']}): the unit is checked with "
                                     "systemd-analyze verify and its ExecStart started in the background"))
