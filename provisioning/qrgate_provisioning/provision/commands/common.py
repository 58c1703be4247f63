"""The options the subcommands share, and building what a run needs from them."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import tomllib
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ..checklist import Checklist, ProvisionError
from ..context import DEFAULT_BIRTH_TIMEOUT_S, Observer, RunOptions, StepHook
from ..device_ca import DeviceCA, DeviceCAError
from ..inventory import Inventory, load_inventory
from ..provisioner import Shared
from ..transport import SshOptions
from ..verify import BirthWatcher
from ..wheels import Wheelhouse, load_wheelhouse

CA_ENV = "QRGATE_DEVICE_CA"
TECHNICIAN_ENV = "QRGATE_TECHNICIAN"
_T = TypeVar("_T")


def add_common(parser: argparse.ArgumentParser, *, software: bool = True, files: bool = True) -> None:
    where = parser.add_argument_group("device CA, inventory, target")
    where.add_argument("--ca", metavar="DIR", default=os.environ.get(CA_ENV),
                       help=f"the site's device CA directory (default ${CA_ENV}); qrgate-provision ca init makes one")
    where.add_argument("--inventory", metavar="FILE", help="the inventory (TOML or CSV): defaults and gate rows")
    where.add_argument("--technician", default=os.environ.get(TECHNICIAN_ENV) or getpass.getuser(),
                       help=f"who does this, for the CA's audit log (default ${TECHNICIAN_ENV} or the login name)")
    where.add_argument("--root", default="/", metavar="PREFIX",
                       help="install under this prefix on the target instead of / (staging, tests)")
    where.add_argument("--check", action="store_true", help="print what differs and change nothing")
    ssh = parser.add_argument_group("SSH")
    ssh.add_argument("--user", help="login user on the gate (default: the inventory's ssh_user, else your name); "
                                    "root, or a user with passwordless sudo")
    ssh.add_argument("--ssh-port", type=int, help="SSH port (default 22)")
    ssh.add_argument("-i", "--identity", action="append", default=[], metavar="KEY",
                     help="the technician's SSH private key (default: the agent and ~/.ssh/id_*)")
    ssh.add_argument("--known-hosts", metavar="FILE", help="known_hosts file (default ~/.ssh/known_hosts)")
    ssh.add_argument("--host-key-fingerprint", metavar="SHA256:...",
                     help="trust exactly this host key (read it on the gate: ssh-keygen -lf "
                          "/etc/ssh/ssh_host_ed25519_key.pub)")
    ssh.add_argument("--accept-new-host-key", action="store_true",
                     help="trust a host not yet in known_hosts and add it (a changed key is always refused)")
    broker = parser.add_argument_group("site broker")
    broker.add_argument("--broker", metavar="HOST[:PORT]", help="the site broker as the gate reaches it")
    broker.add_argument("--broker-ca", metavar="FILE", help="the CA of the broker's certificate (default: the "
                                                           "device CA)")
    broker.add_argument("--observer-cert", metavar="FILE", help="the laptop's site-reader certificate, to watch for "
                                                               "the gate's birth message")
    broker.add_argument("--observer-key", metavar="FILE", help="its key")
    broker.add_argument("--observer-ca", metavar="FILE", help="the CA of the broker's certificate, for the laptop "
                                                             "(default: --broker-ca)")
    broker.add_argument("--observe-via", metavar="HOST[:PORT]", help="the broker's address from the laptop (default: "
                                                                    "the gate's)")
    broker.add_argument("--birth-timeout", type=float, default=DEFAULT_BIRTH_TIMEOUT_S, metavar="S",
                        help=f"how long to wait for the birth message (default {DEFAULT_BIRTH_TIMEOUT_S:g} s)")
    broker.add_argument("--crl-out", type=Path, metavar="FILE",
                        help="write the device CA's CRL here after a revocation (the broker's crlfile)")
    if software:
        soft = parser.add_argument_group("software")
        soft.add_argument("--wheel", metavar="FILE", help="the qrgate wheel (dependencies from the gate's apt "
                                                         "packages and venv)")
        soft.add_argument("--wheelhouse", metavar="DIR", help="the qrgate wheel and its dependencies "
                                                             "(firmware/image/build-wheelhouse.sh)")
        soft.add_argument("--python", default="python3", help="the gate's interpreter for the venv (default python3)")
        soft.add_argument("--no-apt", action="store_true", help="never run apt-get: report missing packages")
        soft.add_argument("--allow-unsynced-clock", action="store_true",
                          help="accept a gate whose clock no time source vouches for (its events are flagged)")
    if files:
        lists = parser.add_argument_group("files for the gate (else the inventory's)")
        lists.add_argument("--trust-list", metavar="FILE", help="the province's signed trust list")
        lists.add_argument("--revocation", metavar="FILE", help="the signed revocation snapshot")
        lists.add_argument("--signer", action="append", default=[], metavar="PEM",
                           help="a list-signing public key to pin (repeat)")
        lists.add_argument("--anchor", action="append", default=[], metavar="FILE",
                           help="a static trust anchor (repeat)")
        lists.add_argument("--operator-keys", metavar="FILE",
                           help="the province's operators.json (qrgate-province command-key new): installed as "
                                "/etc/qrgate/operators.json, it turns the gate's signed commands on")
        lists.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                           help="a further qrgate.toml setting, e.g. camera.source=usb (repeat)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's values for the inventory's fields (empty ones left out by ``merge``)."""
    values: dict[str, Any] = {
        "broker": args.broker, "broker_ca": _absolute(args.broker_ca), "ssh_user": args.user,
        "ssh_port": args.ssh_port, "host_key": args.host_key_fingerprint,
    }
    if hasattr(args, "trust_list"):
        values.update(trust_list=_absolute(args.trust_list), revocation=_absolute(args.revocation),
                      signers=[_absolute(p) for p in args.signer], anchors=[_absolute(p) for p in args.anchor],
                      operator_keys=_absolute(args.operator_keys), config=settings(args.set))
    return values


def _absolute(path: str | None) -> str | None:
    """A command-line path, relative to where the command runs (inventory paths are relative to the file)."""
    return str(Path(path).expanduser().resolve()) if path else None


def settings(assignments: list[str]) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        dotted, equals, text = assignment.partition("=")
        section, dot, key = dotted.strip().partition(".")
        if not equals or not dot or not section or not key:
            raise ProvisionError(f"--set {assignment!r}: write SECTION.KEY=VALUE, e.g. camera.source=usb")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        config.setdefault(section, {})[key] = value
    return config


def ssh_options(args: argparse.Namespace) -> SshOptions:
    return SshOptions(user=args.user or getpass.getuser(), key_files=tuple(args.identity),
                      known_hosts=args.known_hosts, host_key_fingerprint=args.host_key_fingerprint,
                      accept_new_host_key=args.accept_new_host_key)


def run_options(args: argparse.Namespace, hook: StepHook | None = None) -> RunOptions:
    return RunOptions(
        check_only=args.check, no_apt=getattr(args, "no_apt", False),
        allow_unsynced_clock=getattr(args, "allow_unsynced_clock", False), birth_timeout_s=args.birth_timeout,
        observer=observer(args), technician=args.technician, python=getattr(args, "python", "python3"),
        crl_out=args.crl_out, hook=hook,
    )


def observer(args: argparse.Namespace) -> Observer | None:
    if not (args.observer_cert and args.observer_key):
        return None
    ca_file = args.observer_ca or args.broker_ca
    if not ca_file:
        raise ProvisionError("--observer-cert needs the CA of the broker's certificate: --observer-ca or --broker-ca")
    return Observer(args.observer_cert, args.observer_key, ca_file, args.observe_via or "")


def open_ca(args: argparse.Namespace) -> DeviceCA:
    if not args.ca:
        raise ProvisionError(f"no device CA: give --ca DIR or set ${CA_ENV} (qrgate-provision ca init DIR makes one)")
    try:
        return DeviceCA.open(Path(args.ca))
    except DeviceCAError as exc:
        raise ProvisionError(f"the device CA: {exc}") from None


def wheelhouse(args: argparse.Namespace) -> Wheelhouse:
    return load_wheelhouse(wheel=args.wheel, directory=args.wheelhouse) if (args.wheel or args.wheelhouse) else \
        load_wheelhouse()


def inventory(args: argparse.Namespace) -> Inventory | None:
    return load_inventory(args.inventory) if args.inventory else None


def shared(args: argparse.Namespace, *, ca: DeviceCA, ids: frozenset[str], software: Wheelhouse | None,
           brokers: Iterable[str]) -> Shared:
    """What the run shares; one broker watcher per site broker the gates use (with the laptop's reader)."""
    found = observer(args)
    watchers = {broker: BirthWatcher(found, broker) for broker in brokers if broker} if found is not None else {}
    return Shared(ca=ca, ca_lock=asyncio.Lock(), wheelhouse=software, inventory_ids=ids, watchers=watchers,
                  root=args.root)


def run_with_watcher(state: Shared, body: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``body`` with the broker watchers connected for its duration."""

    async def main() -> _T:
        for watcher in state.watchers.values():
            try:
                await asyncio.to_thread(watcher.start)
            except ProvisionError as exc:  # provisioning goes on; the birth item says why it could not be seen
                watcher.unavailable = str(exc)
        try:
            return await body()
        finally:
            for watcher in state.watchers.values():
                watcher.close()

    return asyncio.run(main())


def print_checklist(checklist: Checklist) -> int:
    print(checklist.render(), flush=True)
    return 0 if checklist.ok else 1
