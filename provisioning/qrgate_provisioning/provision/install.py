"""The install steps: Debian packages, the service user, directories, the venv and qrgate, files, signed lists.

Each step looks first and changes only what differs (``ctx.applying``: the first pass only looks, which is the
plan the technician sees and all that ``--check`` does). Each leaves one checklist item or more saying what it
found or did. Re-running a step after a cut is safe: files are replaced by rename, the wheelhouse is sent as
``NAME.part`` and checked by hash, pip re-runs from the same wheels, and a user or directory that exists is
left alone.
"""

from __future__ import annotations

import hashlib
import json

from qrgate_provisioning.trustlist import describe_list

from .checklist import ProvisionError
from .context import Context
from .layout import SERVICE_GROUPS, SERVICE_USER
from .remote_scripts import OUTBOX, TRUST, VENV
from .render import DesiredFile

BASE_PACKAGES = ("python3", "python3-venv", "libzbar0")  # firmware/image/stage-qrgate/00-qrgate/00-packages
PICAMERA_PACKAGE = "python3-picamera2"  # Raspberry Pi OS's archive only
LGPIO_PACKAGE = "python3-lgpio"
PIP_ENV = {"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def packages_for(config: dict[str, dict[str, object]], extra: tuple[str, ...]) -> list[str]:
    wanted = list(BASE_PACKAGES)
    if config.get("camera", {}).get("source", "picamera2") == "picamera2":
        wanted.append(PICAMERA_PACKAGE)
    if not config.get("feedback", {}).get("mock_pins"):
        wanted.append(LGPIO_PACKAGE)
    return list(dict.fromkeys([*wanted, *extra]))


async def packages(ctx: Context, wanted: list[str]) -> None:
    """dpkg-query says what is installed; apt-get installs only what is missing (never upgrades the rest)."""
    await ctx.step("packages")
    installed = ctx.facts.get("packages", {})
    assert isinstance(installed, dict)
    if ctx.applying:  # look again: the first pass's answer may be minutes old
        query = await ctx.remote.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *wanted], check=False)
        installed = {line.split()[0]: line.endswith("install ok installed") for line in query.stdout.splitlines()}
    missing = [name for name in wanted if not installed.get(name)]
    if not missing:
        ctx.checklist.ok_item("packages", f"all {len(wanted)} installed ({' '.join(wanted)})")
        return
    if ctx.options.no_apt:
        ctx.checklist.failed("packages", f"missing {' '.join(missing)} (--no-apt: install them, e.g. apt-get install "
                                         f"{' '.join(missing)})")
        return
    if ctx.applying:
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        # A dpkg run a dropped link interrupted must be finished first, or apt-get refuses to go on.
        await ctx.remote.run(["dpkg", "--configure", "-a"], env=env, what="dpkg --configure -a", timeout=900)
        await ctx.remote.run(["apt-get", "update", "-qq"], env=env, what="apt-get update", timeout=900)
        await ctx.remote.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
                             what=f"apt-get install {' '.join(missing)}", timeout=1800)
    ctx.change("packages", f"apt-get install {' '.join(missing)}", what="packages")


async def service_user(ctx: Context) -> None:
    """The system user the unit runs as, in the gpio and video groups (as the image stage makes it)."""
    await ctx.step("service user")
    groups = " ".join(SERVICE_GROUPS)
    probe = await ctx.remote.sh(f'for g in {groups}; do getent group "$g" >/dev/null || echo "group:$g"; done; '
                                f'id -nG {SERVICE_USER} 2>/dev/null || echo nouser', what="the service user")
    lines = probe.stdout.split()
    missing_groups = [line.split(":", 1)[1] for line in lines if line.startswith("group:")]
    has_user = "nouser" not in lines
    member_of = set(lines) if has_user else set()
    lacking = [group for group in SERVICE_GROUPS if group not in member_of]
    if has_user and not missing_groups and not lacking:
        ctx.checklist.ok_item("service user", f"{SERVICE_USER} (groups {' '.join(SERVICE_GROUPS)})")
        return
    todo = [f"group {group}" for group in missing_groups]
    todo += [f"user {SERVICE_USER}"] if not has_user else [f"{SERVICE_USER} into {', '.join(lacking)}"]
    if ctx.applying:
        script = (f'for g in {groups}; do getent group "$g" >/dev/null || groupadd --system "$g"; done; '
                  f'id -u {SERVICE_USER} >/dev/null 2>&1 || useradd --system --user-group --home-dir /var/lib/qrgate '
                  f'--no-create-home --shell /usr/sbin/nologin {SERVICE_USER}; '
                  f'usermod -a -G {",".join(SERVICE_GROUPS)} {SERVICE_USER}')
        await ctx.remote.sh(script, what="creating the service user")
    ctx.change("service user", "created " + ", ".join(todo), what="user")


def directories(ctx: Context) -> list[tuple[str, int, str, str]]:
    layout, user = ctx.layout, SERVICE_USER
    dirs = [(layout.etc, 0o750, "root", user), (layout.pki, 0o750, "root", user), (layout.trust, 0o750, "root", user),
            (layout.signers, 0o750, "root", user), (layout.var, 0o750, user, user),
            (layout.drop_dir, 0o750, user, user), (layout.opt, 0o755, "root", "root"),
            (layout.profiles, 0o755, "root", "root"), (layout.path("/etc/systemd/system"), 0o755, "root", "root"),
            (layout.wheelhouse, 0o755, ctx.login_user, ctx.login_user)]
    if not ctx.facts.get("systemd") or layout.prefixed:
        dirs.append((layout.run_dir, 0o755, "root", "root"))
    return dirs


async def make_directories(ctx: Context) -> None:
    await ctx.step("directories")
    wanted = directories(ctx)
    args = [word for path, mode, owner, group in wanted for word in (path, f"{mode:o}", owner, group)]
    script = ('dry="$1"; shift; while [ $# -gt 0 ]; do p="$1" m="$2" o="$3" g="$4"; shift 4; '
              'if [ ! -d "$p" ]; then echo "created $p"; [ "$dry" = 1 ] || install -d -m "$m" -o "$o" -g "$g" "$p"; '
              'elif [ "$(stat -c "%a %U %G" "$p")" != "$m $o $g" ]; then echo "fixed $p"; '
              '[ "$dry" = 1 ] || { chown "$o:$g" "$p"; chmod "$m" "$p"; }; fi; done')
    done = await ctx.remote.sh(script, "0" if ctx.applying else "1", *args, what="directories")
    changes = done.stdout.split("\n")
    changes = [line for line in changes if line]
    if changes:
        ctx.change("directories", f"{len(changes)} created or fixed: " + ", ".join(c.split()[1] for c in changes[:4])
                   + (" ..." if len(changes) > 4 else ""), what="directories")
    else:
        ctx.checklist.ok_item("directories", f"{len(wanted)} in place with their owners and modes")


async def software(ctx: Context) -> None:
    """The venv (--system-site-packages) and qrgate in it from the wheelhouse, when the installed wheel differs."""
    await ctx.step("software")
    assert ctx.wheelhouse is not None
    layout, wheel = ctx.layout, ctx.wheelhouse.qrgate
    state = await venv_state(ctx)
    stamp = f"{wheel.path.name} {wheel.sha256}"
    if state is not None and state["version"] == wheel.version and state["stamp"] == stamp and state["system_site"]:
        ctx.checklist.ok_item("software", f"qrgate {wheel.version} in {layout.venv} (from {wheel.path.name}, "
                                          "unchanged)")
        return
    before = "no venv" if state is None else f"qrgate {state['version'] or 'not installed'}"
    if not ctx.applying:
        ctx.change("software", f"install qrgate {wheel.version} from {wheel.path.name} ({before} now)",
                   what="software")
        return
    sent = await send_wheelhouse(ctx)
    if state is None:
        await ctx.remote.run([ctx.options.python, "-m", "venv", "--system-site-packages", layout.venv],
                             what="creating the venv", timeout=300)
    elif not state["system_site"]:
        # What `python -m venv --system-site-packages` writes: apt's picamera2 and lgpio must be visible.
        await ctx.remote.sh('sed -i "s/^include-system-site-packages = .*/include-system-site-packages = true/" "$1"',
                            f"{layout.venv}/pyvenv.cfg", what="the venv's system site packages")
    remote_wheel = f"{layout.wheelhouse}/{wheel.path.name}"
    pip = [layout.venv_python, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--find-links",
           layout.wheelhouse]
    if state is not None and state["version"] == wheel.version:
        # The same version from a different wheel (a rebuilt checkout): pip would call it installed already.
        await ctx.remote.run([*pip, "--force-reinstall", "--no-deps", remote_wheel], env=PIP_ENV,
                             what="pip install (reinstall)", timeout=900)
    await ctx.remote.run([*pip, remote_wheel], env=PIP_ENV, what="pip install", timeout=1800)
    await ctx.remote.write(layout.wheel_stamp, (stamp + "\n").encode(), mode=0o644, owner="root", group="root")
    ctx.change("software", f"qrgate {wheel.version} installed from {wheel.path.name} ({before} before; {sent} of "
                           f"{len(ctx.wheelhouse.wheels)} wheel(s) sent)", what="software")


async def venv_state(ctx: Context) -> dict[str, object] | None:
    layout = ctx.layout
    done = await ctx.remote.run([layout.venv_python, "-", layout.wheel_stamp], input=VENV.encode(), check=False,
                                what="the venv")
    if not done.ok:
        return None
    state: dict[str, object] = json.loads(done.stdout)
    return state


async def send_wheelhouse(ctx: Context) -> int:
    """Upload the wheels the gate's wheelhouse lacks or holds differently; returns how many were sent."""
    directory = ctx.layout.wheelhouse
    assert ctx.wheelhouse is not None
    states = await ctx.remote.file_states([f"{directory}/{w.path.name}" for w in ctx.wheelhouse.wheels])
    sent = 0
    for wheel in ctx.wheelhouse.wheels:
        state = states[f"{directory}/{wheel.path.name}"]
        if state is None or state.sha256 != wheel.sha256:
            await ctx.step(f"upload {wheel.path.name}")
            await ctx.remote.upload(wheel.path, directory, sha256=wheel.sha256)
            sent += 1
    return sent


async def files(ctx: Context, desired: list[DesiredFile], *, what: str) -> None:
    """Write each file whose content, mode, owner or group differs; one checklist item per file."""
    await ctx.step(what)
    states = await ctx.remote.file_states([item.path for item in desired])
    for item in desired:
        state = states[item.path]
        if state is not None and state.sha256 == _sha(item.data) and (state.mode, state.owner, state.group) == (
                item.mode, item.owner, item.group):
            ctx.checklist.ok_item(item.name, f"{item.path} unchanged")
            continue
        if state is None:
            why = "new"
        elif state.sha256 != _sha(item.data):
            why = "content differs"
        else:
            why = f"mode/owner {state.mode:o} {state.owner}:{state.group} -> {item.mode:o} {item.owner}:{item.group}"
        if ctx.applying:
            await ctx.remote.write(item.path, item.data, mode=item.mode, owner=item.owner, group=item.group)
        ctx.change(item.name, f"{item.path} written ({why})", what=what)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def signed_lists(ctx: Context, documents: list[tuple[str, bytes]]) -> None:
    """Hand the gate the signed lists newer than what it holds, through its drop directory, and have them
    accepted now, with the gate's own code as the service user (refusals are the gate's own reasons)."""
    await ctx.step("signed lists")
    layout = ctx.layout
    trust_args = [layout.state_dir, layout.signers, layout.drop_dir, layout.trust]
    have = await _trust_state(ctx, trust_args)
    offered = []
    for kind, document in documents:
        facts = describe_list(document)
        version = facts.get("version")
        held = have.get("trust_list_version" if kind == "trust list" else "revocation_version") if have else None
        name = kind.replace(" ", "-")
        if isinstance(held, int) and isinstance(version, int) and held >= version:
            ctx.checklist.ok_item(kind, f"the gate holds v{held} (given v{version}): unchanged")
            continue
        if not ctx.applying:
            ctx.change(kind, f"install v{version} (the gate holds {f'v{held}' if held is not None else 'none'})",
                       what="trust")
            continue
        await ctx.remote.write(f"{layout.drop_dir}/{name}.cose", document, mode=0o640, owner=SERVICE_USER,
                               group=SERVICE_USER)
        offered.append((kind, version, name))
    if not offered:
        return
    after = await _trust_state(ctx, trust_args)
    answers_seen = (after or {}).get("answers", [])
    answers = {answer["file"]: answer for answer in answers_seen} if isinstance(answers_seen, list) else {}
    for kind, version, name in offered:
        answer = answers.get(f"{name}.cose")
        if answer is not None and answer["accepted"]:
            ctx.change(kind, f"v{version} accepted by the gate", what="trust")
        else:
            detail = answer["detail"] if answer else "not offered"
            ctx.checklist.failed(kind, f"v{version} refused by the gate: {detail} (left as {name}.cose.refused in "
                                       f"{layout.drop_dir})")


async def _trust_state(ctx: Context, args: list[str]) -> dict[str, object] | None:
    done = await ctx.remote.run([ctx.layout.venv_python, "-", *args], input=TRUST.encode(), as_user=SERVICE_USER,
                                check=False, what="the signed lists")
    if not done.ok:
        if ctx.applying:
            raise ProvisionError(f"{ctx.remote.host}: cannot read the gate's signed lists: "
                                 f"{done.stderr.strip()[-400:]}")
        return None
    state: dict[str, object] = json.loads(done.stdout)
    return state


async def outbox(ctx: Context) -> None:
    """The outbox, created empty as the service user when missing (what the daemon does at its first start)."""
    await ctx.step("outbox")
    path = ctx.layout.outbox
    exists = await ctx.remote.run(["test", "-e", path], check=False)
    if exists.ok:
        ctx.checklist.ok_item("outbox", f"{path} exists")
        return
    if ctx.applying:
        await ctx.remote.run([ctx.layout.venv_python, "-", path, "create"], input=OUTBOX.encode(),
                             as_user=SERVICE_USER, what="creating the outbox")
    ctx.change("outbox", f"{path} created (empty, owned by {SERVICE_USER})", what="outbox")
