"""The province service's units (firmware/systemd/qrgate-province*.{service,timer}) and its example configuration:
each unit's sandbox scores at most 2.5 and passes ``systemd-analyze verify``; the timer fires at 06:00 Vietnam
time whatever zone the server is in; the example file is valid and every section of the model is in it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from qrgate.errors import ConfigError
from qrgate_provisioning.province.settings import ProvinceConfig, load_province_config, parse_province_config

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD_DIR = ROOT / "firmware" / "systemd"
SERVICES = ("qrgate-province.service", "qrgate-province-report.service")
TIMER = SYSTEMD_DIR / "qrgate-province-report.timer"
EXAMPLE = ROOT / "firmware" / "province" / "province.example.toml"
MAX_EXPOSURE = 2.5


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed (./dev test installs Debian's systemd)")
    return binary


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_is_sandboxed(name: str) -> None:
    done = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager", str(SYSTEMD_DIR / name)],
                          capture_output=True, text=True, check=False)
    match = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+(?:\.\d+)?)", done.stdout)
    assert match, f"no exposure line in:\n{done.stdout}\n{done.stderr}"
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout


@pytest.mark.parametrize("name", [*SERVICES, TIMER.name])
def test_each_unit_passes_verify(name: str, tmp_path: Path) -> None:
    true = shutil.which("true")
    assert true
    for unit in [*SERVICES, TIMER.name]:  # the timer names its service: verify looks for it beside it
        text = re.sub(r"(?m)^(ExecStart=)/opt/qrgate/venv/bin/qrgate-province\b", rf"\g<1>{true}",
                      (SYSTEMD_DIR / unit).read_text())
        (tmp_path / unit).write_text(text)
    done = subprocess.run([systemd_analyze(), "verify", "--man=no", str(tmp_path / name)], capture_output=True,
                          text=True, check=False, cwd=tmp_path)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "qrgate-province" in line]
    assert done.returncode == 0 and problems == [], (done.returncode, problems)


def test_the_report_runs_at_six_in_the_morning_vietnam_time() -> None:
    timer = TIMER.read_text()
    assert re.search(r"(?m)^OnCalendar=\*-\*-\* 06:00:00 Asia/Ho_Chi_Minh$", timer)
    assert re.search(r"(?m)^Persistent=true$", timer)  # a server that was off at 06:00 catches up
    done = subprocess.run([systemd_analyze(), "calendar", "--iterations=2", "*-*-* 06:00:00 Asia/Ho_Chi_Minh"],
                          capture_output=True, text=True, check=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
    elapses = re.findall(r"(?:Next elapse|Iter\. #2): \S+ \d{4}-\d\d-\d\d (\d\d:\d\d:\d\d) UTC", done.stdout)
    assert elapses == ["23:00:00", "23:00:00"], done.stdout  # 06:00 at UTC+7 (no summer time in Vietnam)


def test_the_services_run_the_command_the_package_installs() -> None:
    service = (SYSTEMD_DIR / "qrgate-province.service").read_text()
    report = (SYSTEMD_DIR / "qrgate-province-report.service").read_text()
    assert "ExecStart=/opt/qrgate/venv/bin/qrgate-province serve --config /etc/qrgate/province.toml" in service
    assert "ExecStart=/opt/qrgate/venv/bin/qrgate-province report --config /etc/qrgate/province.toml" in report
    assert "Type=oneshot" in report and "Type=notify" in service
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["qrgate-province"] == "qrgate_provisioning.province.cli:main"


def test_the_example_configuration_is_valid_and_names_every_section() -> None:
    config = load_province_config(EXAMPLE)
    assert config.report.timezone == "Asia/Ho_Chi_Minh" and config.web.secure_cookies
    written = tomllib.loads(EXAMPLE.read_text())
    assert set(written) == set(ProvinceConfig.model_fields)
    for section, table in written.items():
        assert set(table) <= set(type(getattr(config, section)).model_fields), section


def test_a_broken_file_is_refused_with_every_problem_and_its_line() -> None:
    text = '[web]\nport = 0\nlanguage = "fr"\n\n[fleet]\nmissed_heartbeat = 3\n'
    with pytest.raises(ConfigError) as raised:
        parse_province_config(text, "province.toml")
    message = str(raised.value)
    assert "3 problem(s)" in message
    assert "province.toml:2: web.port" in message and "province.toml:3: web.language" in message
    assert "province.toml:6: fleet.missed_heartbeat: unknown key" in message
    with pytest.raises(ConfigError, match="no such file"):
        load_province_config("/nonexistent/province.toml")
