"""The gate's identity: a key made on the gate, a CSR brought to the laptop, a certificate from the device CA.

The private key never leaves the gate: ``qrgate identity new --owner qrgate`` creates it there (0600, owned by
the service user) and prints only the CSR; the device CA (device_ca.py) signs it on the laptop with the gate id
as the subject's CN, and the certificate and the CA's chain go back. A new key is always made as
``device.key.new`` and its certificate written as ``device.pem.new``; only once both are on the gate are they
renamed over ``device.key`` and ``device.pem``. So a link dropped at any point leaves a state a re-run
completes without a second identity:

- ``device.key.new`` but no certificate yet: its CSR is printed again (``qrgate identity csr``) and the CA
  either hands back the certificate it already issued for that key (``already_issued``) or signs it now;
- ``device.pem.new`` left after the key was swapped: the swap is finished.

Idempotent: when the CA's active certificate for the gate certifies the key the gate holds, and the gate's
certificate file is that certificate, nothing is done. A gate whose key is not the one the CA certified for
its id is a different device (a new SD card): ``provision`` refuses and points at ``replace``.
"""

from __future__ import annotations

import asyncio
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .checklist import ProvisionError
from .context import SOFTWARE, Context
from .device_ca import DeviceCAError, Issued
from .layout import SERVICE_USER
from .registry import IssuedRecord


def key_fingerprint(csr_pem: bytes) -> str:
    """SHA-256 of the CSR's SubjectPublicKeyInfo (DER): the registry's ``key_fingerprint``."""
    spki = x509.load_pem_x509_csr(csr_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


async def _exists(ctx: Context, *paths: str) -> dict[str, bool]:
    done = await ctx.remote.sh('for f; do if [ -e "$f" ]; then echo 1; else echo 0; fi; done', *paths,
                               what="the identity files")
    return dict(zip(paths, (line == "1" for line in done.stdout.split()), strict=True))


async def csr_of(ctx: Context, key_path: str) -> bytes:
    done = await ctx.remote.run([ctx.layout.qrgate, "identity", "csr", "--id", ctx.spec.gate, "--key", key_path],
                                what="qrgate identity csr")
    return done.stdout.encode()


async def new_key(ctx: Context, key_path: str) -> bytes:
    """A fresh key at ``key_path`` (made on the gate, owned by the service user); its CSR."""
    done = await ctx.remote.run([ctx.layout.qrgate, "identity", "new", "--id", ctx.spec.gate, "--key", key_path,
                                 "--owner", SERVICE_USER], what="qrgate identity new")
    return done.stdout.encode()


async def _ca(ctx: Context, call: str, csr: bytes, action: str = "provision") -> Issued | None:
    """The CA's answer, off the event loop and one gate at a time (the registry is one SQLite file)."""
    ca = ctx.ca

    def work() -> Issued | None:
        if call == "already_issued":
            return ca.already_issued(csr, gate_id=ctx.spec.gate)
        return ca.sign(csr, gate_id=ctx.spec.gate, inventory_ids=ctx.inventory_ids, action=action,  # type: ignore[arg-type]
                       technician=ctx.options.technician, software_version=SOFTWARE)

    async with ctx.ca_lock:
        try:
            return await asyncio.to_thread(work)
        except DeviceCAError as refusal:
            raise ProvisionError(f"the device CA refused {ctx.spec.gate} ({refusal.reason}): {refusal}") from None


async def _active(ctx: Context) -> IssuedRecord | None:
    async with ctx.ca_lock:
        return await asyncio.to_thread(ctx.ca.active, ctx.spec.gate)


async def identity(ctx: Context, action: str = "provision") -> None:
    """``provision`` (a gate without a certificate) or ``replace`` (a new SD card for a gate that has one)."""
    await ctx.step("identity")
    layout, gate = ctx.layout, ctx.spec.gate
    key, key_new, cert, cert_new = layout.key, layout.key + ".new", layout.cert, layout.cert + ".new"
    present = await _exists(ctx, key, key_new, cert, cert_new)
    active = await _active(ctx)
    if not ctx.applying and not (await ctx.remote.run(["test", "-x", layout.qrgate], check=False)).ok:
        if active is not None and action == "provision" and not present[key] and not present[key_new]:
            _refuse_provision(ctx, active, "holds no key")
        elif active is None and action == "replace":
            _refuse_replace(ctx)
        else:
            verb = "replace the gate's certificate (the old one is revoked)" if action == "replace" else \
                "a new key on the gate, certified by the device CA"
            ctx.change("identity", f"{verb} (qrgate is not installed yet)", what="identity")
        return
    if present[cert_new] and not present[key_new] and present[key]:
        await _finish_swap(ctx, "a swap a dropped link interrupted")
        present = await _exists(ctx, key, key_new, cert, cert_new)
    held = key_fingerprint(await csr_of(ctx, key)) if present[key] else None
    pending = key_fingerprint(await csr_of(ctx, key_new)) if present[key_new] else None
    if active is not None and pending == active.key_fingerprint:
        issued_pem = active.cert_pem  # signed before the link dropped: install it, no second identity
        how = f"certificate {active.serial:x} issued before the link dropped"
    elif active is not None and held == active.key_fingerprint:
        await _ensure_certificate(ctx, active.cert_pem, "identity", f"CN={gate}, serial {active.serial:x}, key on the "
                                  f"gate matches, valid to {active.not_after:%Y-%m-%d}")
        return
    elif active is not None and action == "provision":
        _refuse_provision(ctx, active, "holds another key")
        return
    elif active is None and action == "replace":
        _refuse_replace(ctx)
        return
    else:
        if not ctx.applying:
            verb = "replace the gate's certificate (the old one is revoked)" if action == "replace" else \
                "a new key on the gate, certified by the device CA"
            ctx.change("identity", verb, what="identity")
            return
        issued = await _issue(ctx, key_new, reuse=present[key_new], action=action)
        issued_pem = issued.cert_pem
        how = f"certificate {issued.serial:x} issued ({action}), valid to {issued.not_after:%Y-%m-%d}"
    if not ctx.applying:
        ctx.change("identity", f"install {how}", what="identity")
        return
    await ctx.step("identity install")
    await ctx.remote.write(cert_new, issued_pem, mode=0o644, owner="root", group=SERVICE_USER)
    await ctx.remote.write(layout.device_chain, ctx.ca.chain_pem, mode=0o644, owner="root", group=SERVICE_USER)
    await _finish_swap(ctx, how)


def _refuse_provision(ctx: Context, active: IssuedRecord, holds: str) -> None:
    gate = ctx.spec.gate
    ctx.checklist.failed("identity", f"{gate} already has an active certificate (serial {active.serial:x}, "
                         f"{active.action} on {active.issued_at:%Y-%m-%d} by {active.technician}) and this device "
                         f"{holds}: a new SD card for this gate is `qrgate-provision replace HOST --gate {gate}`; "
                         "another device needs its own gate id")


def _refuse_replace(ctx: Context) -> None:
    ctx.checklist.failed("identity", f"{ctx.spec.gate} has no active certificate to replace: provision it with "
                                     "`qrgate-provision gate`")


async def _issue(ctx: Context, key_new: str, *, reuse: bool, action: str) -> Issued:
    """Certify the pending key (made now unless ``reuse``); a pending key the CA certified before and revoked
    (key_reused: a gate decommissioned half-way) is replaced by a fresh one."""
    await ctx.step("identity key")
    csr = await csr_of(ctx, key_new) if reuse else await new_key(ctx, key_new)
    await ctx.step("identity sign")
    try:
        issued = await _ca(ctx, "already_issued", csr) or await _ca(ctx, "sign", csr, action)
    except ProvisionError as refusal:
        if not reuse or "(key_reused)" not in str(refusal):
            raise
        await ctx.remote.run(["rm", "-f", "--", key_new], what="removing a key certified before")
        csr = await new_key(ctx, key_new)
        issued = await _ca(ctx, "sign", csr, action)
    assert issued is not None
    return issued


async def _finish_swap(ctx: Context, how: str) -> None:
    """Rename the new key and certificate over the live ones (the key first), after checking they match."""
    layout = ctx.layout
    key, key_new, cert, cert_new = layout.key, layout.key + ".new", layout.cert, layout.cert + ".new"
    if not ctx.applying:
        ctx.change("identity", f"CN={ctx.spec.gate}: swap in {how}", what="identity")
        return
    present = await _exists(ctx, key_new)
    check_key = key_new if present[key_new] else key
    shown = await ctx.remote.run([layout.qrgate, "identity", "show", "--cert", cert_new, "--key", check_key],
                                 check=False, what="qrgate identity show")
    if not shown.ok:
        raise ProvisionError(f"{ctx.remote.host}: {cert_new} does not belong to {check_key}: "
                             f"{(shown.stderr or shown.stdout).strip()[-300:]}")
    await ctx.step("identity swap")
    await ctx.remote.sh('set -e; if [ -e "$1" ]; then mv -f "$1" "$2"; fi; mv -f "$3" "$4"; sync "$(dirname "$2")"',
                        key_new, key, cert_new, cert, what="swapping in the new identity")
    ctx.change("identity", f"CN={ctx.spec.gate}: {how}", what="identity")


async def _ensure_certificate(ctx: Context, cert_pem: bytes, name: str, detail: str) -> None:
    layout = ctx.layout
    current = await ctx.remote.read(layout.cert)
    chain = await ctx.remote.read(layout.device_chain)
    if current == cert_pem and chain == ctx.ca.chain_pem:
        ctx.checklist.ok_item(name, detail)
        return
    if ctx.applying:
        await ctx.remote.write(layout.cert, cert_pem, mode=0o644, owner="root", group=SERVICE_USER)
        await ctx.remote.write(layout.device_chain, ctx.ca.chain_pem, mode=0o644, owner="root", group=SERVICE_USER)
    ctx.change(name, f"{detail}; certificate file reinstalled from the CA's registry", what="identity")


async def renew(ctx: Context) -> None:
    """A new key on the gate (as device.key.new), certified with action renew (the CA revokes the old one as
    superseded), installed and swapped in. A renewal a dropped link interrupted is completed, not repeated."""
    await ctx.step("renew")
    layout, gate = ctx.layout, ctx.spec.gate
    key, key_new, cert_new = layout.key, layout.key + ".new", layout.cert + ".new"
    present = await _exists(ctx, key, key_new, cert_new)
    active = await _active(ctx)
    if active is None:
        raise ProvisionError(f"{gate} has no active certificate to renew: provision it with `qrgate-provision gate`")
    if present[cert_new] and not present[key_new]:
        await _finish_swap(ctx, "a renewal a dropped link interrupted")
        return
    held = key_fingerprint(await csr_of(ctx, key)) if present[key] else None
    pending = key_fingerprint(await csr_of(ctx, key_new)) if present[key_new] else None
    if pending is not None and pending == active.key_fingerprint:
        issued_pem, how = active.cert_pem, f"renewed certificate {active.serial:x} (issued before the link dropped)"
    else:
        if held != active.key_fingerprint:
            raise ProvisionError(f"{gate}'s key on {ctx.remote.host} is not the one its active certificate certifies: "
                                 "this is not that gate's SD card (use `replace` for a new card)")
        if not ctx.applying:
            ctx.change("identity", f"renew certificate {active.serial:x} (valid to {active.not_after:%Y-%m-%d})",
                       what="identity")
            return
        csr = await csr_of(ctx, key_new) if present[key_new] else await new_key(ctx, key_new)
        await ctx.step("identity sign")
        issued = await _ca(ctx, "sign", csr, "renew")
        assert issued is not None
        issued_pem = issued.cert_pem
        how = (f"certificate {issued.serial:x} issued (renew), valid to {issued.not_after:%Y-%m-%d}; "
               f"{active.serial:x} revoked (superseded)")
    await ctx.remote.write(cert_new, issued_pem, mode=0o644, owner="root", group=SERVICE_USER)
    await ctx.remote.write(layout.device_chain, ctx.ca.chain_pem, mode=0o644, owner="root", group=SERVICE_USER)
    await _finish_swap(ctx, how)
