"""What every step of one gate's run shares: the link, the paths, the inventory row, the options, the checklist."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from qrgate import __version__

from .checklist import Checklist
from .device_ca import DeviceCA
from .inventory import GateSpec
from .layout import Layout
from .transport import Remote
from .wheels import Wheelhouse

SOFTWARE = f"qrgate-provision {__version__}"  # what the CA's audit log records as the software
DEFAULT_BIRTH_TIMEOUT_S = 60.0

# A hook the tests use to cut the link at a given step: called with the step's name before it runs.
StepHook = Callable[[str, Remote], Awaitable[None]]
IdentityAction = Literal["provision", "replace"]


@dataclass(frozen=True, slots=True)
class Observer:
    """The laptop's own credential on the site broker: a site reader (brokerconf.SiteBroker.readers), which may
    read every gate's status and availability and write nothing."""

    cert_file: str
    key_file: str
    ca_file: str  # the CA that signed the broker's certificate
    address: str = ""  # host[:port] the laptop reaches the broker at; default: the gate's broker address


@dataclass(frozen=True)
class RunOptions:
    check_only: bool = False
    no_apt: bool = False
    allow_unsynced_clock: bool = False
    birth_timeout_s: float = DEFAULT_BIRTH_TIMEOUT_S
    observer: Observer | None = None
    technician: str = ""
    python: str = "python3"  # the target's interpreter the venv is made from
    crl_out: Path | None = None  # where to write the CRL after a revocation (the broker's crlfile)
    hook: StepHook | None = None


@dataclass
class Context:
    remote: Remote
    layout: Layout
    spec: GateSpec
    options: RunOptions
    wheelhouse: Wheelhouse | None
    ca: DeviceCA
    ca_lock: asyncio.Lock
    inventory_ids: frozenset[str]
    checklist: Checklist
    facts: dict[str, object] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)  # what this run changed: "software", "config", "identity", ...
    applying: bool = False  # False: the first, read-only pass (the plan, and all of --check)

    async def step(self, name: str) -> None:
        if self.options.hook is not None:
            await self.options.hook(name, self.remote)

    @property
    def login_user(self) -> str:
        return self.remote.user

    def change(self, name: str, detail: str, *, what: str) -> None:
        """Record a change done (applying) or planned (first pass)."""
        self.checklist.changed_item(name, detail)
        if self.applying:
            self.changed.add(what)
