"""docs/architecture.md matches the code: every module, class and member it names in backticks exists.

A renamed class or a moved module makes the page lie to the next engineer; this catches it the day it happens.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
GATE = ROOT / "edge" / "qrgate"
CODE_DIRS = (GATE, ROOT / "provisioning" / "qrgate_provisioning", ROOT / "provisioning" / "qrgate_tools")

# `Name` or `Name.member`, a CamelCase class (or a constant) with an optional attribute or method.
_QUALIFIED = re.compile(r"^([A-Z][A-Za-z0-9]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?$")
_PATH = re.compile(r"^[\w./-]+(\.py|/)$")
_BUILTINS = {"None", "EOFError"}


def _spans() -> list[str]:
    return re.findall(r"`([^`\n]+)`", PAGE.read_text(encoding="utf-8"))


@cache
def _definitions() -> dict[str, set[str]]:
    """Every class in the two packages with the names defined in its body (methods, attributes), and the
    module-level names (constants, type aliases) under the key ''."""
    found: dict[str, set[str]] = {"": set()}
    for directory in CODE_DIRS:
        for path in directory.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                for target in _assigned(node):
                    found[""].add(target)
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    members = found.setdefault(node.name, set())
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                            members.add(item.name)
                        members.update(_assigned(item))
                    for item in ast.walk(node):  # self.x = ... in any method
                        if isinstance(item, (ast.Assign, ast.AnnAssign)):
                            targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                            for target in targets:
                                for element in ast.walk(target):
                                    if isinstance(element, ast.Attribute) and isinstance(element.value, ast.Name) \
                                            and element.value.id == "self":
                                        members.add(element.attr)
                    if any(isinstance(base, ast.Name) and base.id.endswith("Enum") for base in node.bases) \
                            or any(isinstance(base, ast.Attribute) and base.attr.endswith("Enum")
                                   for base in node.bases):
                        members.update(_assigned_in(node.body))
    return found


def _assigned(node: ast.stmt) -> set[str]:
    return _assigned_in([node])


def _assigned_in(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(element.id for element in ast.walk(target) if isinstance(element, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def test_every_path_it_names_exists():
    missing = []
    for span in _spans():
        if not _PATH.match(span) or span.startswith("/"):
            continue
        candidates = [ROOT / span, GATE / span, *(GATE / sub / span for sub in ("frames", "decoding", "uplink"))]
        if not any(candidate.exists() for candidate in candidates):
            missing.append(span)
    assert missing == []


def test_every_class_and_member_it_names_exists():
    definitions = _definitions()
    missing = []
    checked = 0
    for span in _spans():
        match = _QUALIFIED.match(span)
        if match is None or span in _BUILTINS or "=" in span:
            continue
        name, member = match.groups()
        if name.isupper() or (member is None and name in definitions[""]):
            ok = name in definitions[""] or name in definitions  # a constant or an alias
        elif name not in definitions:
            ok = False
        else:
            ok = member is None or member in definitions[name]
        checked += 1
        if not ok:
            missing.append(span)
    assert checked > 100  # the page names the code it describes: a parser that finds nothing checks nothing
    assert missing == []


def test_the_checker_finds_a_name_that_does_not_exist():
    definitions = _definitions()
    assert "handle" in definitions["Gate"] and "_present" in definitions["Gate"]
    assert "no_such_method" not in definitions["Gate"] and "NoSuchClass" not in definitions
