"""A provisioned gate's later life: a renewed certificate, and decommissioning.

``renew``: a new key on the gate (device.key.new), certified with action renew (the CA revokes the old
certificate as superseded in the same transaction), installed, swapped in, the unit restarted and its birth
message seen with the new certificate; the CRL is written for the broker when ``--crl-out`` names its file.

``decommission``: the gate's events first. Delivered ones are in the province's store and stay there; pending
ones are still only in the gate's outbox, so if the gate is reachable the provisioner waits for them to go out
and refuses to revoke while any remain (``--force`` revokes anyway and says what is left where). Then the unit
is stopped and disabled, the gate's retained status and availability are cleared on the broker (empty retained
messages, sent with the gate's own certificate: only it may write its topics), its key and certificate are
removed, the certificate revoked and the CRL written. An unreachable gate is revoked all the same, and the
checklist says what could not be done.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from .checklist import Checklist, ProvisionError, TargetLost
from .context import SOFTWARE, Context, RunOptions
from .device_ca import DeviceCAError
from .identity import renew
from .install import venv_state
from .inventory import GateSpec
from .layout import SERVICE_USER, Layout
from .provisioner import Shared
from .remote_scripts import CLEAR_RETAINED, OUTBOX
from .render import config_hash_of
from .session import open_session
from .transport import SshOptions
from .unit import Unit, parse_unit, service_environment
from .verify import birth

FLUSH_TIMEOUT_S = 60.0


async def renew_gate(spec: GateSpec, ssh: SshOptions, options: RunOptions, shared: Shared) -> Checklist:
    checklist = Checklist(spec.gate, check_only=options.check_only)
    layout = Layout(spec.root or shared.root)
    session = await open_session(spec, ssh, options, shared, checklist, layout, action="renew")
    if session is None:
        return checklist
    ctx = session.ctx
    try:
        ctx.facts = {"systemd": (await ctx.remote.run(["test", "-d", "/run/systemd/system"], check=False)).ok}
        ctx.applying = not options.check_only
        unit = Unit(ctx)
        before = await unit.state()
        watcher = shared.watcher_for(spec)
        mark = watcher.mark() if watcher is not None else None
        await renew(ctx)
        if ctx.applying:
            if before.running:
                await unit.stop()
            await unit.start()
            after = await unit.state()
            checklist.add("unit restarted", after.running, after.detail, changed=True)
            config = await ctx.remote.read(layout.config)
            venv = await venv_state(ctx)
            if config is not None and venv is not None:
                await birth(ctx, watcher, config_hash=config_hash_of(config.decode()),
                            software=str(venv["version"]), fresh_after=mark)
            await write_crl(ctx, "the old certificate (superseded)")
    except TargetLost as exc:
        checklist.failed("link", f"{exc}: run renew again; it completes the renewal it started")
    except ProvisionError as exc:
        checklist.failed("stopped", str(exc))
    finally:
        await session.close()
    return checklist


async def write_crl(ctx: Context, what: str) -> None:
    path = ctx.options.crl_out
    if path is None:
        ctx.checklist.ok_item("crl", f"not written (no --crl-out): the broker refuses {what} only once it has a CRL "
                                     "made after this (qrgate-provision crl --out FILE, then reload mosquitto)")
        return
    async with ctx.ca_lock:
        crl = await asyncio.to_thread(ctx.ca.write_crl, Path(path))
    ctx.checklist.changed_item("crl", f"{path}: CRL #{crl.number}, {len(crl.revoked_serials)} revoked; reload the "
                                      "broker (systemctl reload mosquitto) for it to take effect")


async def decommission_gate(spec: GateSpec | None, gate: str, ssh: SshOptions, options: RunOptions, shared: Shared, *,
                            force: bool = False, reason: str = "cessation_of_operation",
                            flush_timeout_s: float = FLUSH_TIMEOUT_S) -> Checklist:
    checklist = Checklist(gate, check_only=options.check_only)
    layout = Layout((spec.root if spec is not None else "") or shared.root)
    session = None
    if spec is not None:
        session = await open_session(spec, ssh, options, shared, checklist, layout, action="decommission")
    if session is None:
        unreachable = [item for item in checklist.items if item.name == "ssh"]
        checklist.items = [item for item in checklist.items if item.name != "ssh"]  # a refused host key stays failed
        why = unreachable[0].detail if unreachable else "no host given"
        checklist.ok_item("gate reachable", f"no ({why}): revoking all the same")
        checklist.ok_item("events", "delivered events are in the province's store; what the gate still held "
                                    "undelivered (if anything) stays in its outbox, unreachable from here")
        checklist.ok_item("retained topics", "not cleared: only the gate's own certificate may write them and the gate "
                                             "is unreachable; its availability shows offline (its Last Will)")
        await _revoke(checklist, gate, options, shared, reason)
        return checklist
    ctx = session.ctx
    ctx.applying = not options.check_only
    try:
        ctx.facts = {"systemd": (await ctx.remote.run(["test", "-d", "/run/systemd/system"], check=False)).ok}
        unit = Unit(ctx)
        pending = await _flush(ctx, unit, flush_timeout_s)
        if pending and not force:
            checklist.failed("events", f"{pending} event(s) still pending in {layout.outbox}: not revoked (a revoked "
                                       "gate can never deliver them). Restore its link to the broker and run again, "
                                       "or --force to revoke anyway (they stay in that file)")
            return checklist
        if ctx.applying:
            await unit.stop()
            await unit.disable()
        checklist.changed_item("unit", "stopped and disabled" if ctx.applying else "would stop and disable it")
        await _clear_retained(ctx)
        if ctx.applying:
            await ctx.remote.run(["rm", "-f", layout.key, layout.key + ".new", layout.cert, layout.cert + ".new"],
                                 what="removing the gate's identity")
        checklist.changed_item("identity on the gate", f"{layout.key} and {layout.cert} "
                                                       f"{'removed' if ctx.applying else 'would be removed'}")
        await _revoke(checklist, gate, options, shared, reason, ctx=ctx)
    except TargetLost as exc:
        checklist.failed("link", f"{exc}: run decommission again")
    except ProvisionError as exc:
        checklist.failed("stopped", str(exc))
    finally:
        await session.close()
    return checklist


async def _flush(ctx: Context, unit: Unit, timeout_s: float) -> int:
    """Wait (the unit running) until the outbox has nothing pending; what is left, and a checklist item."""
    state = await unit.state()
    deadline = time.monotonic() + timeout_s
    while True:
        done = await ctx.remote.run([ctx.layout.venv_python, "-", ctx.layout.outbox, "read"], input=OUTBOX.encode(),
                                    as_user=SERVICE_USER, check=False, what="the outbox")
        pending = json.loads(done.stdout).get("pending") if done.ok else None
        if not pending or not state.running or time.monotonic() >= deadline:
            break
        await asyncio.sleep(1)
    if pending is None:
        ctx.checklist.ok_item("events", f"no outbox readable at {ctx.layout.outbox}: nothing pending on the gate")
        return 0
    if not pending:
        ctx.checklist.ok_item("events", "0 pending on the gate: every event was delivered (they are in the "
                                        "province's store)")
    return int(pending)


async def _clear_retained(ctx: Context) -> None:
    if not ctx.applying:
        ctx.checklist.changed_item("retained topics", "would clear the gate's status and availability on the broker")
        return
    unit_text = await ctx.remote.read(ctx.layout.unit)
    env = service_environment(parse_unit(unit_text.decode())) if unit_text else {}
    done = await ctx.remote.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), ctx.layout.venv_python, "-",
                                 ctx.layout.config], input=CLEAR_RETAINED.encode(), check=False, timeout=60,
                                what="clearing the retained topics")
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        answer = {"cleared": [], "failed": [done.stderr.strip()[-300:]]}
    if answer.get("cleared"):
        ctx.checklist.changed_item("retained topics", "cleared on the broker: " + ", ".join(answer["cleared"]))
    else:
        ctx.checklist.failed("retained topics", f"not cleared: {'; '.join(answer.get('failed') or ['no answer'])}")


async def _revoke(checklist: Checklist, gate: str, options: RunOptions, shared: Shared, reason: str, *,
                  ctx: Context | None = None) -> None:
    if options.check_only:
        active = await asyncio.to_thread(shared.ca.active, gate)
        checklist.changed_item("certificate", f"would revoke {active.serial:x}" if active else "no active certificate")
        return
    async with shared.ca_lock:
        try:
            record = await asyncio.to_thread(shared.ca.revoke, gate, reason,  # type: ignore[arg-type]
                                             technician=options.technician, software_version=SOFTWARE)
        except DeviceCAError as exc:  # not_active: nothing to revoke
            checklist.failed("certificate", f"{exc} ({exc.reason})")
            return
    checklist.changed_item("certificate", f"{record.serial:x} revoked ({reason})")
    if ctx is not None:
        await write_crl(ctx, "the gate's certificate")
        return
    if options.crl_out is not None:
        async with shared.ca_lock:
            crl = await asyncio.to_thread(shared.ca.write_crl, options.crl_out)
        checklist.changed_item("crl", f"{options.crl_out}: CRL #{crl.number}; reload the broker")
    else:
        checklist.ok_item("crl", "not written (no --crl-out): write it and reload the broker")
