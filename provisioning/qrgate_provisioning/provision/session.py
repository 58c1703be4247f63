"""Opening one gate's run: the SSH link (its host key checked), the shared context, the audit line at the end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .audit import AuditLogError
from .checklist import Checklist, HostKeyRefused, ProvisionError
from .context import SOFTWARE, Context, RunOptions
from .inventory import GateSpec
from .layout import Layout
from .transport import Remote, SshOptions

if TYPE_CHECKING:
    from .provisioner import Shared


@dataclass
class Session:
    ctx: Context
    action: str

    async def close(self) -> None:
        """Close the link and append what this run did to the device CA's audit log."""
        ctx = self.ctx
        await ctx.remote.close()
        checklist = ctx.checklist
        entry = {"time": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                 "action": f"{self.action}_run" if not ctx.options.check_only else f"{self.action}_check",
                 "outcome": "ok" if checklist.ok else "failed", "gate_id": ctx.spec.gate, "host": ctx.spec.host,
                 "technician": ctx.options.technician, "software_version": SOFTWARE,
                 "changed": ", ".join(item.name for item in checklist.changes)[:250],
                 "failed": ", ".join(item.name for item in checklist.failures)[:250]}
        async with ctx.ca_lock:
            try:
                await asyncio.to_thread(ctx.ca.audit.append, entry)
            except (OSError, AuditLogError) as exc:
                checklist.failed("audit log", f"{ctx.ca.audit.path}: {exc}")


def ssh_for(spec: GateSpec, ssh: SshOptions) -> SshOptions:
    """The command line's SSH options with the inventory row's user, port and pinned host key."""
    return replace(ssh, user=spec.ssh_user or ssh.user, port=spec.ssh_port,
                   host_key_fingerprint=spec.host_key or ssh.host_key_fingerprint)


async def open_session(spec: GateSpec, ssh: SshOptions, options: RunOptions, shared: Shared, checklist: Checklist,
                       layout: Layout, action: str = "provision") -> Session | None:
    """The link to ``spec.host`` and the run's context; None (with the reason in ``checklist``) if unreachable."""
    options_for = ssh_for(spec, ssh)
    try:
        remote = await Remote.connect(spec.host, options_for)
    except HostKeyRefused as exc:
        checklist.failed("ssh host key", str(exc))
        return None
    except ProvisionError as exc:
        checklist.failed("ssh", str(exc))
        return None
    how = "root" if not remote.sudo else f"{remote.user} with sudo"
    checklist.ok_item("ssh", f"{remote.user}@{spec.host}:{options_for.port} as {how}, host key {remote.host_key}")
    ctx = Context(remote=remote, layout=layout, spec=spec, options=options, wheelhouse=shared.wheelhouse,
                  ca=shared.ca, ca_lock=shared.ca_lock, inventory_ids=shared.inventory_ids, checklist=checklist)
    return Session(ctx, action)
