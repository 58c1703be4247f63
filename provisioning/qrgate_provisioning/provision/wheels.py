"""The wheelhouse the laptop carries to the gate: the qrgate wheel and, for a gate without PyPI, its dependencies.

``--wheel FILE`` (one wheel; the gate's apt packages and what its venv already has must cover the dependencies)
or ``--wheelhouse DIR`` (firmware/image/build-wheelhouse.sh fills one for aarch64). The gate installs with
``pip install --no-index --find-links``: it never reaches an index. Wheel file names carry their Python and
platform tags, so the target check can say before anything is copied whether they fit the gate.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .checklist import ProvisionError

# name-version(-build)?-python-abi-platform.whl (PEP 427)
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)"
                    r"-(?P<plat>[^-]+)\.whl$")
_MB = 1024 * 1024
# Room the gate needs beyond the wheels: the outbox's floor (qrgate.selftest.MIN_DISK_FREE_MB) and the logs.
BASE_FREE_MB = 150


@dataclass(frozen=True, slots=True)
class Wheel:
    path: Path
    name: str
    version: str
    python: str
    abi: str
    platform: str
    size: int
    sha256: str

    def fits(self, machine: str, python: str) -> str | None:
        """Why this wheel cannot install on ``machine`` with CPython ``python`` ("3.11.2"); None if it can."""
        if self.platform != "any" and not any(tag.endswith(f"_{machine}") or tag == f"linux_{machine}"
                                             for tag in self.platform.split(".")):
            return f"{self.path.name} is for {self.platform}, the gate is {machine}"
        major, minor = python.split(".")[:2]
        tags = self.python.split(".")
        if any(tag in ("py3", f"py{major}", f"py{major}{minor}") for tag in tags):
            return None
        wanted = f"cp{major}{minor}"
        if wanted in tags:
            return None
        if self.abi == "abi3" and any(tag.startswith("cp3") and int(tag[3:] or 0) <= int(minor) for tag in tags):
            return None
        return f"{self.path.name} is for Python {self.python}, the gate has {major}.{minor}"


@dataclass(frozen=True, slots=True)
class Wheelhouse:
    wheels: tuple[Wheel, ...]

    @property
    def qrgate(self) -> Wheel:
        return next(wheel for wheel in self.wheels if wheel.name.lower().replace("-", "_") == "qrgate")

    @property
    def size(self) -> int:
        return sum(wheel.size for wheel in self.wheels)

    @property
    def needed_free_mb(self) -> int:
        """Free space the gate needs: the upload, pip's unpacked copy of it, the outbox's floor."""
        return BASE_FREE_MB + (3 * self.size) // _MB

    def misfits(self, machine: str, python: str) -> list[str]:
        return [reason for wheel in self.wheels if (reason := wheel.fits(machine, python))]


def load_wheelhouse(*, wheel: str | Path | None = None, directory: str | Path | None = None) -> Wheelhouse:
    """The wheels of ``directory`` or the one ``wheel``; ProvisionError without a qrgate wheel."""
    if (wheel is None) == (directory is None):
        raise ProvisionError("give the software to install: --wheel qrgate-VERSION-py3-none-any.whl or --wheelhouse "
                             "DIR (firmware/image/build-wheelhouse.sh makes one)")
    paths = [Path(wheel)] if wheel is not None else sorted(Path(directory or ".").glob("*.whl"))
    found = []
    for path in paths:
        match = _WHEEL.match(path.name)
        if match is None:
            raise ProvisionError(f"{path}: not a wheel file name (NAME-VERSION-PY-ABI-PLATFORM.whl)")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ProvisionError(f"{path}: cannot read: {exc.strerror or exc}") from None
        found.append(Wheel(path, match["name"], match["version"], match["py"], match["abi"], match["plat"],
                           len(data), hashlib.sha256(data).hexdigest()))
    house = Wheelhouse(tuple(found))
    if not any(w.name.lower().replace("-", "_") == "qrgate" for w in found):
        raise ProvisionError(f"no qrgate wheel in {directory or wheel}")
    return house
