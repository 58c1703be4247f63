"""One gate, end to end: connect, check, plan, change what differs, verify, report.

The run has two passes over the same steps. The first only looks, and its changes are the plan printed before
anything happens (and all that ``--check`` does). If the plan is empty, nothing is touched: the second run of
an unchanged inventory row changes nothing and says so. Otherwise the unit is stopped (if it runs), the steps
run again, this time changing what differs, and then the gate is verified: ``qrgate check-config``, the
self-test (pins and camera free), the unit started, the birth message on the broker. Every step's outcome is a
checklist item; the run is green only if every item is ok.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from .checklist import Checklist, ProvisionError, TargetLost
from .checks import gather_facts, judge
from .context import Context, IdentityAction, RunOptions
from .device_ca import DeviceCA
from .identity import identity
from .install import files, make_directories, outbox, packages, packages_for, service_user, signed_lists, software
from .inventory import GateSpec
from .layout import Layout
from .render import config_data, config_hash_of, desired_files
from .render import signed_lists as documents_for
from .session import open_session
from .transport import SshOptions
from .unit import Unit, parse_unit, service_environment
from .verify import BirthWatcher, birth, check_config, self_test
from .wheels import Wheelhouse

Report = Callable[[str], None]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Shared:
    """What every gate of a run shares: the CA (one at a time), the software, a broker watcher per site broker."""

    ca: DeviceCA
    ca_lock: asyncio.Lock
    wheelhouse: Wheelhouse | None
    inventory_ids: frozenset[str]
    watchers: Mapping[str, BirthWatcher] = field(default_factory=dict)  # by the gates' broker address
    root: str = "/"

    def watcher_for(self, spec: GateSpec) -> BirthWatcher | None:
        return self.watchers.get(spec.broker)


async def provision_gate(spec: GateSpec, ssh: SshOptions, options: RunOptions, shared: Shared, *,
                         action: IdentityAction = "provision", report: Report | None = None) -> Checklist:
    """Provision (or, ``action="replace"``, re-provision on a new SD card) one gate; its checklist."""
    checklist = Checklist(spec.gate, check_only=options.check_only)
    layout = Layout(spec.root or shared.root)
    wheelhouse = shared.wheelhouse
    if wheelhouse is None:
        checklist.failed("software", "no wheel or wheelhouse given (--wheel or --wheelhouse)")
        return checklist
    try:
        desired_config = config_data(spec, layout)
        desired = desired_files(spec, layout, broker_ca_pem=_broker_ca(spec, shared.ca))
        documents = documents_for(spec)
        config_text = desired[0].data.decode()
    except ProvisionError as exc:
        checklist.failed("inventory", str(exc))
        return checklist
    session = await open_session(spec, ssh, options, shared, checklist, layout)
    if session is None:
        return checklist
    ctx = session.ctx
    try:
        wanted = packages_for(desired_config, spec.packages)
        ctx.facts = await gather_facts(ctx.remote, layout, wanted)
        judged = judge(ctx.facts, desired_config, wheelhouse, allow_unsynced_clock=options.allow_unsynced_clock)
        checklist.items += [j.item for j in judged]
        if any(j.blocking and not j.item.ok for j in judged):
            checklist.failed("plan", "nothing was changed: the target checks above must pass first")
            return checklist

        steps: list[Callable[[Context], Awaitable[None]]] = [
            lambda c: packages(c, wanted), service_user, make_directories, software, lambda c: identity(c, action),
            lambda c: files(c, desired, what="files"), lambda c: signed_lists(c, documents), outbox,
        ]
        unit = Unit(ctx)
        plan, state = await asyncio.gather(_plan(ctx, steps), unit.state(), return_exceptions=True)
        if isinstance(plan, BaseException):
            raise plan
        if isinstance(state, BaseException):
            raise state
        if report is not None:
            for item in plan.changes:
                report(f"{spec.gate}: will change: {item.name}: {item.detail}")
            if not plan.changes:
                report(f"{spec.gate}: nothing to change")
        ctx.checklist = checklist
        if plan.failures and not options.check_only:
            checklist.items += plan.items
            checklist.failed("plan", "nothing was changed: the items above must pass first")
            return checklist
        if options.check_only or not plan.changes:
            checklist.items += plan.items
        else:
            if state.running:
                await ctx.step("stop")
                await unit.stop()
                checklist.changed_item("unit stopped", "for the changes and the self-test (pins and camera)")
            ctx.applying = True
            for step in steps:  # in order: each builds on the one before
                await step(ctx)
        await _unit_and_verify(ctx, unit, config_text, changed=bool(plan.changes), software=wheelhouse.qrgate.version,
                               watcher=shared.watcher_for(spec))
    except TargetLost as exc:
        checklist.failed("link", f"{exc}. Files are replaced by rename and a new key waits as device.key.new, so "
                                 "nothing is half-written: run the same command again to finish")
    except ProvisionError as exc:
        checklist.failed("stopped", str(exc))
    finally:
        await session.close()
    return checklist


async def gather_all(*work: Awaitable[_T]) -> list[_T]:
    """``asyncio.gather`` that lets every task finish before raising the first failure (a dropped link first)."""
    results = await asyncio.gather(*work, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise next((f for f in failures if isinstance(f, TargetLost)), failures[0])
    return [r for r in results if not isinstance(r, BaseException)]


async def _plan(ctx: Context, steps: list[Callable[[Context], Awaitable[None]]]) -> Checklist:
    """The first pass: every step only looks, so they run at once (one SSH channel each) on copies of the context
    with a checklist each, merged in step order."""
    views = [replace(ctx, checklist=Checklist(ctx.spec.gate, check_only=True), changed=set()) for _ in steps]
    await gather_all(*(step(view) for step, view in zip(steps, views, strict=True)))
    plan = Checklist(ctx.spec.gate, check_only=True)
    for view in views:
        plan.items += view.checklist.items
    return plan


def _broker_ca(spec: GateSpec, ca: DeviceCA) -> bytes:
    """The CA the gate checks the broker's certificate with: the inventory's, else the device CA itself."""
    if not spec.broker_ca:
        return ca.chain_pem
    try:
        with open(spec.broker_ca, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ProvisionError(f"broker_ca {spec.broker_ca}: {exc.strerror or exc}") from None


async def _unit_and_verify(ctx: Context, unit: Unit, config_text: str, *, changed: bool, software: str,
                           watcher: BirthWatcher | None) -> None:
    checklist, layout = ctx.checklist, ctx.layout
    unit_text = await ctx.remote.read(layout.unit)
    if unit_text is None:  # only under --check on a new gate
        checklist.changed_item("unit", f"install and enable {layout.unit}")
        return
    env = service_environment(parse_unit(unit_text.decode()))
    config = Checklist(ctx.spec.gate)  # check-config runs beside the two others; its item goes after theirs
    problems, current, config_ok = await asyncio.gather(unit.verify(), unit.state(),
                                                        check_config(replace(ctx, checklist=config), env))
    if problems:
        checklist.failed("unit verify", "; ".join(problems[:4]))
    else:
        checklist.ok_item("unit verify", f"systemd-analyze verify {layout.unit}: no problem")
    if not current.enabled:
        if not ctx.options.check_only:
            await unit.enable(reload=True)
        ctx.change("unit enabled", f"{'would enable' if ctx.options.check_only else 'enabled'} for the next boot",
                   what="unit")
    checklist.items += config.items
    expected = config_hash_of(config_text)
    if ctx.options.check_only:
        if current.running:
            checklist.ok_item("unit running", current.detail)
        else:
            checklist.changed_item("unit", "would run the self-test and start it")
        if current.running and watcher is not None:
            await birth(ctx, watcher, config_hash=expected, software=software, fresh_after=None)
        return
    if current.running and not changed:
        checklist.ok_item("self-test", "skipped: nothing changed and the unit is running (it holds the pins and the "
                                       "camera); to repeat it, stop the unit and run qrgate self-test on the gate")
        await birth(ctx, watcher, config_hash=expected, software=software, fresh_after=None)
        return
    if current.running:  # changed only by enabling: stop it for the self-test
        await unit.stop()
    await self_test(ctx, env)
    if not config_ok:
        checklist.failed("unit started", "not started: check-config failed (its ExecStartPre would refuse it)")
        return
    mark = watcher.mark() if watcher is not None else None
    await ctx.step("start")
    await unit.start()
    after = await unit.state()
    checklist.add("unit started", after.running, after.detail if after.running else
                  f"not running after start ({after.detail}); see journalctl -u qrgate or {layout.daemon_log}",
                  changed=True)
    ctx.changed.add("unit")
    await birth(ctx, watcher, config_hash=expected, software=software, fresh_after=mark)
