"""What a provisioning run reports: one item per thing checked or done, each ok or failed with why.

An item that changed the gate (or, under ``--check``, would change it) says so; the run's summary line says
whether anything changed at all, which is how a second run shows that it did nothing. Details never carry a
secret: no key material goes through this module, only paths, versions, fingerprints and reasons.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from qrgate.errors import QrgateError


class ProvisionError(QrgateError):
    """A step that cannot go on; the message says why and, where there is one, what to do."""


class TargetLost(ProvisionError):
    """The SSH connection dropped in the middle of a step: the run stops, and a re-run picks up from there."""


class HostKeyRefused(ProvisionError):
    """The target's SSH host key is not the one expected (or not known, and new keys are not accepted)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One line of the checklist."""

    name: str
    ok: bool
    detail: str
    changed: bool = False  # changed the gate (or would have, under --check)

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAILED"
        return "changed" if self.changed else "ok"


@dataclass
class Checklist:
    """The items of one gate's run, in the order they happened."""

    gate: str
    check_only: bool = False
    items: list[Item] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str, *, changed: bool = False) -> Item:
        item = Item(name, ok, detail, changed)
        self.items.append(item)
        return item

    def ok_item(self, name: str, detail: str) -> Item:
        return self.add(name, True, detail)

    def changed_item(self, name: str, detail: str) -> Item:
        return self.add(name, True, detail, changed=True)

    def failed(self, name: str, detail: str) -> Item:
        return self.add(name, False, detail)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def changes(self) -> list[Item]:
        return [item for item in self.items if item.changed]

    @property
    def failures(self) -> list[Item]:
        return [item for item in self.items if not item.ok]

    def summary(self) -> str:
        failed, changed = len(self.failures), len(self.changes)
        verb = "would change" if self.check_only else "changed"
        if failed:
            head = f"{self.gate}: {failed} of {len(self.items)} FAILED"
        else:
            head = f"{self.gate}: all {len(self.items)} ok"
        if changed:
            return f"{head}, {changed} {verb}"
        return f"{head}, nothing {'to change' if self.check_only else 'changed'}"

    def render(self) -> str:
        """The checklist as a technician reads it: status, item, detail; then the summary line."""
        if not self.items:
            return self.summary()
        width = max(len(item.name) for item in self.items)
        marks = {"changed": "would" if self.check_only else "changed"}
        lines = [f"{marks.get(item.status, item.status):<7} {item.name:<{width}}  {item.detail}" for item in self.items]
        return "\n".join([*lines, self.summary()])
