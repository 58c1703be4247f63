"""Many gates at once: asyncio tasks, at most ``concurrency`` in flight, a live progress view and a summary table.

Each gate is its own ``provision_gate`` run with its own SSH connection and checklist; one that fails (an
unreachable Pi, a refused host key, a full card) ends with its checklist red and the others go on. The device
CA is used one gate at a time (its registry is one SQLite file) and one broker watcher per site broker serves
them all. The view is rich's when it is installed (the tools extra) and the output is a terminal, else plain
lines.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, TextIO

from .checklist import Checklist
from .context import RunOptions
from .inventory import GateSpec
from .provisioner import Shared, provision_gate
from .transport import Remote, SshOptions

if TYPE_CHECKING:
    from rich.table import Table

log = logging.getLogger(__name__)
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class GateResult:
    spec: GateSpec
    checklist: Checklist
    seconds: float


class Display(Protocol):
    def started(self, spec: GateSpec) -> None: ...
    def step(self, gate: str, step: str) -> None: ...
    def finished(self, result: GateResult) -> None: ...
    def close(self) -> None: ...


async def run_batch(specs: Sequence[GateSpec], ssh: SshOptions, options: RunOptions, shared: Shared, *,
                    concurrency: int = DEFAULT_CONCURRENCY, display: Display | None = None) -> list[GateResult]:
    """Provision every gate of ``specs``; the results in inventory order."""
    view = display or PlainDisplay(sys.stderr)
    limit = asyncio.Semaphore(max(1, concurrency))
    results: dict[str, GateResult] = {}

    async def one(spec: GateSpec) -> None:
        async with limit:
            view.started(spec)
            started = time.monotonic()
            test_hook = options.hook

            async def hook(step: str, remote: Remote) -> None:
                view.step(spec.gate, step)
                if test_hook is not None:
                    await test_hook(step, remote)

            try:
                checklist = await provision_gate(spec, ssh, replace(options, hook=hook), shared)
            except Exception as exc:  # a bug in one gate's run must not stop the others
                log.error("%s: unexpected %s", spec.gate, type(exc).__name__, exc_info=True)
                checklist = Checklist(spec.gate, check_only=options.check_only)
                checklist.failed("run", f"unexpected {type(exc).__name__}: {exc}")
            result = GateResult(spec, checklist, time.monotonic() - started)
            results[spec.gate] = result
            view.finished(result)

    try:
        await asyncio.gather(*(one(spec) for spec in specs))
    finally:
        view.close()
    return [results[spec.gate] for spec in specs]


def summary_rows(results: Sequence[GateResult]) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for result in results:
        checklist = result.checklist
        status = "ok" if checklist.ok else "FAILED"
        failed = "; ".join(f"{item.name}: {item.detail}" for item in checklist.failures)
        rows.append((result.spec.gate, result.spec.host, status, str(len(checklist.changes)), f"{result.seconds:.0f} s",
                     failed[:160] + ("..." if len(failed) > 160 else "")))
    return rows


SUMMARY_HEADER = ("gate", "host", "result", "changed", "time", "failed items")


def summary_text(results: Sequence[GateResult]) -> str:
    """The summary table as plain text (the rich view prints its own)."""
    rows = [SUMMARY_HEADER, *summary_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_HEADER) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in rows]
    ok = sum(1 for r in results if r.checklist.ok)
    lines.append(f"{ok} of {len(results)} gates ok, {len(results) - ok} failed")
    return "\n".join(lines)


class PlainDisplay:
    """One line per gate start, step and end: for logs and terminals without rich."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._t0 = time.monotonic()

    def _line(self, text: str) -> None:
        print(f"[{time.monotonic() - self._t0:6.1f} s] {text}", file=self.out, flush=True)

    def started(self, spec: GateSpec) -> None:
        self._line(f"{spec.gate}: connecting to {spec.host}")

    def step(self, gate: str, step: str) -> None:
        self._line(f"{gate}: {step}")

    def finished(self, result: GateResult) -> None:
        verdict = "ok" if result.checklist.ok else f"FAILED ({len(result.checklist.failures)} item(s))"
        self._line(f"{result.spec.gate}: {verdict} in {result.seconds:.0f} s")

    def close(self) -> None:
        pass


class RichDisplay:
    """rich's live table: one row per gate with its current step, replaced by its result when done."""

    def __init__(self, specs: Sequence[GateSpec]) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(stderr=True)
        self._rows: dict[str, list[str]] = {spec.gate: [spec.gate, spec.host, "waiting", ""] for spec in specs}
        self._started: dict[str, float] = {}
        self._live = Live(self._table(), console=self._console, refresh_per_second=4, transient=False)
        self._live.start()

    def _table(self) -> Table:
        from rich.table import Table

        table = Table(title="qrgate-provision batch", expand=False)
        for column in ("gate", "host", "step", "time"):
            table.add_column(column)
        for gate, row in self._rows.items():
            elapsed = f"{time.monotonic() - self._started[gate]:.0f} s" if gate in self._started and not row[3] else \
                row[3]
            table.add_row(row[0], row[1], row[2], elapsed)
        return table

    def _refresh(self) -> None:
        self._live.update(self._table())

    def started(self, spec: GateSpec) -> None:
        self._started[spec.gate] = time.monotonic()
        self._rows[spec.gate][2] = "connecting"
        self._refresh()

    def step(self, gate: str, step: str) -> None:
        self._rows[gate][2] = step
        self._refresh()

    def finished(self, result: GateResult) -> None:
        row = self._rows[result.spec.gate]
        row[2] = "[green]ok[/green]" if result.checklist.ok else "[red]FAILED[/red]"
        row[3] = f"{result.seconds:.0f} s"
        self._refresh()

    def close(self) -> None:
        self._live.stop()


def make_display(specs: Sequence[GateSpec], *, plain: bool = False) -> Display:
    if not plain and sys.stderr.isatty():
        try:
            return RichDisplay(specs)
        except ImportError:
            pass
    return PlainDisplay(sys.stderr)
