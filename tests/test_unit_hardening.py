"""The systemd unit's sandbox (firmware/systemd/qrgate.service) and the image's systemd drop-ins beside it.

``systemd-analyze security --offline`` scores the unit as written (exposure at most 2.5 of 10), ``systemd-analyze
verify`` checks its syntax on a copy whose commands exist here, and the rest reads the files: the devices the
gate opens are allowed, the state it writes is in its StateDirectory, the watchdog settings are there. What only
a Raspberry Pi shows (libcamera opening the sensor, lgpio the GPIO chip) is listed at the top of the unit.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from qrgate.config import OutboxConfig, TrustConfig

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD_DIR = ROOT / "firmware" / "systemd"
UNIT = SYSTEMD_DIR / "qrgate.service"
WATCHDOG_CONF = SYSTEMD_DIR / "system.conf.d" / "qrgate-watchdog.conf"
JOURNALD_CONF = SYSTEMD_DIR / "journald.conf.d" / "qrgate.conf"
EXAMPLE_CONFIG = ROOT / "firmware" / "qrgate.example.toml"

MAX_EXPOSURE = 2.5
EXEC_START = "/opt/qrgate/venv/bin/qrgate run --config /etc/qrgate/qrgate.toml"
EXEC_START_PRE = "/opt/qrgate/venv/bin/qrgate check-config /etc/qrgate/qrgate.toml"
# /proc/devices names of what the gate opens: cameras and ISP (/dev/video*, /dev/v4l-subdev*), libcamera's
# media graph (/dev/media*), frame buffers (/dev/dma_heap/*), lgpio (/dev/gpiochip*).
DEVICE_CLASSES = ("char-video4linux", "char-media", "char-dma_heap", "char-gpiochip")
HARDWARE_WATCHDOG_MAX_S = 15  # bcm2835-wdt's register holds at most ~16 s

# Where this systemd keeps its configuration keys (Debian's paths), to check the drop-ins name real ones.
PID1_BINARY = Path("/lib/systemd/systemd")
JOURNALD_BINARY = Path("/lib/systemd/systemd-journald")


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in file order (a unit may repeat a key; order matters)."""
    found = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        assert equals, f"not an assignment: {raw!r}"
        found.append((section, key.strip(), value.strip()))
    return found


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for s, k, v in directives(path.read_text()) if s == section and k == key]


def one(path: Path, section: str, key: str) -> str:
    found = values(path, section, key)
    assert len(found) == 1, f"{path.name}: [{section}] {key}= set {len(found)} times: {found}"
    return found[0]


def systemd_analyze() -> tuple[str, int]:
    """The systemd-analyze binary and systemd's version, or a skip when it is missing or too old for --offline."""
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"systemd (\d+)", out)
    if match is None:
        pytest.skip(f"cannot tell the systemd version from {out[:80]!r}")
    version = int(match.group(1))
    if version < 250:
        pytest.skip(f"systemd {version}: `security --offline` and `--threshold` need systemd 250 or later")
    return binary, version


# --- the exposure score ----------------------------------------------------------------------------------------


def test_exposure_is_at_most_2_5() -> None:
    binary, _ = systemd_analyze()
    done = subprocess.run(
        [binary, "security", "--offline=true", f"--threshold={round(MAX_EXPOSURE * 10)}", "--no-pager", str(UNIT)],
        capture_output=True, text=True, check=False,
    )
    match = re.search(r"Overall exposure level for qrgate\.service: (\d+(?:\.\d+)?)", done.stdout)
    assert match, f"no exposure line in:\n{done.stdout}\n{done.stderr}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{done.stdout}"
    assert done.returncode == 0, f"--threshold refused it (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"


# --- systemd-analyze verify ------------------------------------------------------------------------------------


def verify_problems(unit_text: str, tmp_path: Path) -> list[str]:
    """What ``systemd-analyze verify`` says about ``unit_text`` with its commands pointed at an existing binary.

    verify exits 0 on an unknown key or an unparsable value (it only warns), so every line it prints about the
    unit counts, as does a non-zero exit. The only thing changed is the executable of ExecStart= and
    ExecStartPre= (``/opt/qrgate/venv`` exists on a gate only); their arguments stay. User=qrgate needs no
    rewriting: verify does not look the user up.
    """
    binary, _ = systemd_analyze()
    true = shutil.which("true")
    assert true, "no `true` binary to stand in for the daemon"
    text, count = re.subn(r"(?m)^(ExecStart(?:Pre)?=)/opt/qrgate/venv/bin/qrgate\b", rf"\g<1>{true}", unit_text)
    assert count == 2 or "ExecStart" not in unit_text, "the unit's ExecStart=/ExecStartPre= lines moved"
    copy = tmp_path / "qrgate.service"
    copy.write_text(text)
    done = subprocess.run([binary, "verify", "--man=no", str(copy)], capture_output=True, text=True, check=False,
                          cwd=tmp_path)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "qrgate.service" in line]
    if done.returncode != 0:
        problems.append(f"exit status {done.returncode}: {done.stderr.strip()}")
    return problems


def test_unit_passes_verify(tmp_path: Path) -> None:
    assert verify_problems(UNIT.read_text(), tmp_path) == []


@pytest.mark.parametrize(("what", "old", "new"), [
    ("misspelt key", "RestrictRealtime=yes", "RestrictRealTime=yes"),
    ("bad value", "ProtectSystem=strict", "ProtectSystem=stricter"),
    ("unknown section", "[Service]", "[Servce]"),
    ("unknown system call group", "SystemCallFilter=@system-service", "SystemCallFilter=@system-servce"),
    ("unknown address family", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET7 AF_NETLINK"),
])
def test_verify_catches_a_broken_copy(tmp_path: Path, what: str, old: str, new: str) -> None:
    """Each case replaces one whole line of the unit (not a mention of it in a comment)."""
    broken, count = re.subn(rf"(?m)^{re.escape(old)}$", new, UNIT.read_text(), count=1)
    assert count == 1, f"the mutation for {what} no longer applies"
    assert verify_problems(broken, tmp_path), f"verify missed a {what}"


# --- what the gate needs ---------------------------------------------------------------------------------------


def test_the_unit_keeps_its_commands_and_service_type() -> None:
    assert one(UNIT, "Service", "ExecStart") == EXEC_START
    assert one(UNIT, "Service", "ExecStartPre") == EXEC_START_PRE
    assert one(UNIT, "Service", "Type") == "notify"
    assert one(UNIT, "Service", "NotifyAccess") == "main"
    assert one(UNIT, "Service", "Restart") == "on-failure"
    assert int(one(UNIT, "Unit", "StartLimitBurst")) > 1
    assert int(one(UNIT, "Unit", "StartLimitIntervalSec")) > 0
    assert (one(UNIT, "Service", "User"), one(UNIT, "Service", "Group")) == ("qrgate", "qrgate")
    assert set(one(UNIT, "Service", "SupplementaryGroups").split()) == {"gpio", "video"}


def test_device_allow_list_has_the_camera_and_gpio_classes() -> None:
    assert one(UNIT, "Service", "DevicePolicy") == "closed"
    allowed = {}
    for value in values(UNIT, "Service", "DeviceAllow"):
        device, _, access = value.partition(" ")
        allowed[device] = access or "rwm"
    for device in DEVICE_CLASSES:
        assert device in allowed, f"{device} missing from DeviceAllow="
        assert set(allowed[device]) == {"r", "w"}, f"{device}: {allowed[device]!r}, want rw (no mknod)"
    assert not [d for d in allowed if "watchdog" in d], "PID 1 feeds the hardware watchdog, not the daemon"
    assert values(UNIT, "Service", "PrivateDevices") in ([], ["no"]), "PrivateDevices=yes would hide the camera"


def test_modules_behind_the_device_classes_load_before_the_unit() -> None:
    """A DeviceAllow=char-* class is looked up in /proc/devices when the unit starts: videodev and mc first."""
    for key in ("Wants", "After"):
        units = " ".join(values(UNIT, "Unit", key)).split()
        assert {"modprobe@videodev.service", "modprobe@mc.service"} <= set(units), f"{key}= {units}"


def test_state_is_written_only_in_the_state_directory() -> None:
    assert one(UNIT, "Service", "ProtectSystem") == "strict"
    state = Path("/var/lib") / one(UNIT, "Service", "StateDirectory")
    writable = [Path(p.lstrip("-")) for v in values(UNIT, "Service", "ReadWritePaths") for p in v.split()]
    places = [state, *writable]
    written = [OutboxConfig.model_fields["path"].default, TrustConfig.model_fields["state_dir"].default,
               TrustConfig.model_fields["drop_dir"].default]
    example = tomllib.loads(EXAMPLE_CONFIG.read_text())
    written.append(example["outbox"]["path"])
    for path in written:
        assert any(Path(path).is_relative_to(place) for place in places), f"{path} is read-only under the unit"


def test_privileges_and_system_calls() -> None:
    assert one(UNIT, "Service", "CapabilityBoundingSet") == ""
    assert one(UNIT, "Service", "AmbientCapabilities") == ""
    for key in ("NoNewPrivileges", "PrivateUsers", "MemoryDenyWriteExecute", "RestrictNamespaces",
                "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectHostname"):
        assert one(UNIT, "Service", key) == "yes", key
    assert one(UNIT, "Service", "SystemCallArchitectures") == "native"
    assert set(one(UNIT, "Service", "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6",
                                                                           "AF_NETLINK"}
    filters = values(UNIT, "Service", "SystemCallFilter")
    assert filters[0] == "@system-service", "the first line must be the allow-list"
    deny = next(i for i, f in enumerate(filters) if f.startswith("~"))
    assert {"~@privileged", "@resources"} <= set(filters[deny].split())
    # The clock's read-only NTP query (qrgate.clock.KernelSource): allowed again only by a line after the ~ one.
    clock = next(i for i, f in enumerate(filters) if "clock_adjtime" in f.split())
    assert clock > deny
    assert values(UNIT, "Service", "ProtectClock") in ([], ["no"]), "ProtectClock=yes refuses adjtimex again"


# --- the watchdogs ---------------------------------------------------------------------------------------------


def seconds(binary: str, span: str) -> float:
    """A systemd time span in seconds, as this systemd parses it."""
    done = subprocess.run([binary, "timespan", span], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{span!r} is not a time span: {done.stderr}"
    match = re.search(r"μs: (\d+)", done.stdout)
    assert match, done.stdout
    return int(match.group(1)) / 1e6


def known_keys(binary: Path, keys: list[str], prefix: str = "") -> list[str]:
    """The keys whose name (with ``prefix``) appears in ``binary``: its configuration tables hold every name."""
    if not binary.exists():
        pytest.skip(f"{binary} not found: cannot check the key names against this systemd")
    data = binary.read_bytes()
    return [key for key in keys if (prefix + key).encode() in data]


def test_service_watchdog_is_set() -> None:
    binary, _ = systemd_analyze()
    assert 0 < seconds(binary, one(UNIT, "Service", "WatchdogSec")) <= 60


def test_hardware_watchdog_drop_in() -> None:
    binary, _ = systemd_analyze()
    runtime = seconds(binary, one(WATCHDOG_CONF, "Manager", "RuntimeWatchdogSec"))
    reboot = seconds(binary, one(WATCHDOG_CONF, "Manager", "RebootWatchdogSec"))
    assert 0 < runtime <= HARDWARE_WATCHDOG_MAX_S
    assert reboot >= 60
    keys = [k for _, k, _ in directives(WATCHDOG_CONF.read_text())]
    assert {s for s, _, _ in directives(WATCHDOG_CONF.read_text())} == {"Manager"}
    assert known_keys(PID1_BINARY, keys) == keys


def test_journald_drop_in_bounds_the_journal() -> None:
    entries = directives(JOURNALD_CONF.read_text())
    assert {s for s, _, _ in entries} == {"Journal"}
    settings = {k: v for _, k, v in entries}
    assert {"SystemMaxUse", "RuntimeMaxUse"} <= set(settings)
    for key in ("SystemMaxUse", "RuntimeMaxUse", "SystemMaxFileSize"):
        if key in settings:
            assert re.fullmatch(r"\d+[KMG]", settings[key]), f"{key}={settings[key]}"
    keys = list(settings)
    assert known_keys(JOURNALD_BINARY, keys, prefix="Journal.") == keys
