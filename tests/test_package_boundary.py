"""The gate's package holds only what runs on a gate: no module of ``qrgate`` imports the province's side, the
tools (``qrgate_tools``: the demo, the benchmarks, the loopback broker, a package of their own beside the
province's) or a dependency only they need, except ``qrgate demo``/``qrgate bench``, which load the tools when
run; and the core dependencies in pyproject.toml leave those out (the ``tools`` extra has them)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qrgate.cli import main
from qrgate.commands import tools_missing

ROOT = Path(__file__).resolve().parents[1]
GATE = ROOT / "edge" / "qrgate"
TOOLS = ROOT / "provisioning" / "qrgate_tools"
# Imported only by qrgate_tools (the demo, the benchmarks) and by the province's side.
FORBIDDEN = {"qrgate_provisioning", "rich", "reportlab"}
# The two subcommands that run the tools, and load them only then.
TOOLS_COMMANDS = {Path("commands/demo.py"), Path("commands/bench.py")}
# segno is a core dependency for the synthetic camera source only (a bench-top gate's test card);
# no other gate module may come to rely on it.
SEGNO_ALLOWED = {Path("frames/scene_assets.py")}
# Third-party imports of gate modules that are not core dependencies, and where they come from.
NOT_CORE = {
    "picamera2": "apt (python3-picamera2)", "libcamera": "apt (python3-picamera2)",
    "systemd": "the systemd extra",
}
# Import name -> distribution name, where they differ.
DISTRIBUTION = {"cv2": "opencv-python-headless", "zxingcpp": "zxing-cpp", "paho": "paho-mqtt"}


def gate_modules() -> list[Path]:
    return sorted(GATE.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """The top-level names of every absolute import in ``path``, at any depth (lazy ones too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def core_dependencies() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower(): spec for spec in project["dependencies"]}


def test_the_walk_sees_the_gate_and_the_tools_are_outside_it() -> None:
    modules = {path.relative_to(GATE).as_posix() for path in gate_modules()}
    assert {"gate.py", "service.py", "decoding/cascade.py", "commands/demo.py"} <= modules
    assert not (GATE / "tools").exists() and (TOOLS / "demo.py").exists()
    assert "qrgate_provisioning" in imported(TOOLS / "demo.py")  # the walk would see one


@pytest.mark.parametrize("path", gate_modules(), ids=lambda path: path.relative_to(GATE).as_posix())
def test_no_gate_module_imports_the_tools_dependencies(path: Path) -> None:
    names = imported(path)
    assert not names & FORBIDDEN, f"{path.relative_to(ROOT)} imports {sorted(names & FORBIDDEN)}"
    if path.relative_to(GATE) not in TOOLS_COMMANDS:
        assert "qrgate_tools" not in names, f"{path.relative_to(ROOT)} imports the tools"
    if path.relative_to(GATE) not in SEGNO_ALLOWED:
        assert "segno" not in names, f"{path.relative_to(ROOT)} imports segno"


def test_core_dependencies_leave_the_tools_dependencies_out() -> None:
    core = core_dependencies()
    assert not FORBIDDEN & set(core), sorted(FORBIDDEN & set(core))
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    tools = {re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower() for spec in extras["tools"]}
    assert {"rich", "reportlab"} <= tools


def test_every_third_party_import_of_the_gate_is_a_core_dependency() -> None:
    core = core_dependencies()
    stdlib = sys.stdlib_module_names
    for path in gate_modules():
        # qrgate_tools ships in the same distribution (commands/demo.py and bench.py load it)
        for name in imported(path) - stdlib - {"qrgate", "qrgate_tools"} - set(NOT_CORE):
            distribution = DISTRIBUTION.get(name, name).lower()
            assert distribution in core, f"{path.relative_to(ROOT)}: {name} ({distribution}) is not a core dependency"


# The bench's sections left out, so a regression here costs seconds, not the whole bench.
BENCH_QUICK = ["bench", "--frames", "1", "--repeat", "1",
               *(f"--skip={name}" for name in ("sizes", "photos", "revocation", "uplink"))]


@pytest.mark.parametrize("argv", [["demo", "--headless"], BENCH_QUICK], ids=lambda argv: argv[0])
def test_demo_and_bench_say_what_to_install_without_the_tools_extra(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # As in the gate's own install: rich cannot be imported, nor any of its modules other tests loaded, and
    # the tools that use it are not loaded yet.
    for module in [name for name in sys.modules if name == "rich" or name.startswith("rich.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "rich", None)
    for module in [name for name in sys.modules if name.startswith("qrgate_tools.")]:
        monkeypatch.delitem(sys.modules, module)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"qrgate {argv[0]}: rich is not installed" in err
    assert "install qrgate[tools]" in err


def test_a_missing_gate_dependency_is_not_blamed_on_the_tools_extra() -> None:
    error = ModuleNotFoundError("No module named 'cv2'", name="cv2")
    with pytest.raises(ModuleNotFoundError):
        tools_missing("demo", error)


def test_every_gate_module_loads_without_the_tools_dependencies() -> None:
    # As the gate's own install (no tools extra) runs them: a fresh interpreter where they cannot be imported.
    modules = [".".join(("qrgate", *path.relative_to(GATE).with_suffix("").parts)).removesuffix(".__init__")
               for path in gate_modules()]
    code = ("import importlib, sys\n"
            f"for name in {sorted(FORBIDDEN)!r}: sys.modules[name] = None\n"
            f"for module in {modules!r}: importlib.import_module(module)\n")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
