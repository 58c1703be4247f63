#!/usr/bin/env bash
# ./dev image-check: prove the image stage (firmware/image/stage-qrgate) on ARM.
#
# Builds a Debian arm64 root (trixie, what current Raspberry Pi OS is based on) with mmdebstrap,
# runs the stage on it the way pi-gen does (00-packages-nr with apt-get inside the root, then the
# stage's own 00-run.sh with ROOTFS_DIR and on_chroot), then, inside the root under qemu-user
# emulation, runs the installed gate as user qrgate: `qrgate check-config` on the installed
# configuration (after a stand-in provisioning: trust anchors, list signer, TLS files), `qrgate verify`
# on a pass minted on this machine, `qrgate scan` on a real photo.
# Last, the data partition: add-data-partition.sh on a stand-in image, mounted with the image's
# fstab options on /var/lib/qrgate, written by user qrgate.
#
# Downloads come only from the package registries: Debian's archive (mmdebstrap) and PyPI (the
# aarch64 wheels, firmware/image/build-wheelhouse.sh). They are cached, with the base root, in
# ~/.cache/qrgate-image-check, so a second run is faster.
#
# Emulation: binfmt_misc with qemu-user-static when it can be registered (mounted and registered
# here if needed, and put back as found at the end). Where it cannot (some containers), the root is
# made with `mmdebstrap --variant=extract` (usr-merge links and passwd made by hand), the root's
# own Python is run with `qemu-aarch64-static -L ROOT`, and the stage's in-image steps with proot's
# qemu mode. That fallback has no dpkg inside, so apt-get there only confirms what was extracted; and
# it is not complete: under proot, pip installs into /root/.local instead of the venv, so it stops at
# the 00-run.sh step (the root's own Python under qemu -L does print machine: aarch64).
#
# Environment: QRGATE_IMAGE_SUITE (trixie; falls back to bookworm, saying so, if the mirror lacks
# it), QRGATE_IMAGE_MIRROR (http://deb.debian.org/debian), QRGATE_IMAGE_CHECK_MODE (auto | binfmt |
# extract), QRGATE_IMAGE_CHECK_FRESH=1 (rebuild the cached base root), QRGATE_IMAGE_CHECK_KEEP=1
# (keep the work directory), QRGATE_IMAGE_CHECK_CACHE, QRGATE_SHARED (the shared/ directory).
# Exit 0 when every step passed; otherwise non-zero with the failed step named.
set -euo pipefail

t_start=$(date +%s)
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
substage="$here/stage-qrgate/00-qrgate"

if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env=HOME,QRGATE_IMAGE_SUITE,QRGATE_IMAGE_MIRROR,QRGATE_IMAGE_CHECK_MODE,QRGATE_IMAGE_CHECK_FRESH,QRGATE_IMAGE_CHECK_KEEP,QRGATE_IMAGE_CHECK_CACHE,QRGATE_SHARED "$0" "$@"
fi

cache="${QRGATE_IMAGE_CHECK_CACHE:-$HOME/.cache/qrgate-image-check}"
suite="${QRGATE_IMAGE_SUITE:-trixie}"
mirror="${QRGATE_IMAGE_MIRROR:-http://deb.debian.org/debian}"
mode="${QRGATE_IMAGE_CHECK_MODE:-auto}"
shared="${QRGATE_SHARED:-$repo/../shared}"
mkdir -p "$cache"
work="$(mktemp -d /var/tmp/qrgate-image-check.XXXXXX)"
export ROOTFS_DIR="$work/rootfs"
chroot_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Raspberry Pi OS's own packages (archive.raspberrypi.com): not in Debian, left out of the check root.
rpi_only_packages=(python3-picamera2 python3-lgpio)
# Raspberry Pi OS Lite has these; Debian's minbase does not (systemctl enable needs systemd).
lite_packages=(systemd)

step="start"
step_t=$t_start
mounted_binfmt=0
registered_binfmt=0
log() { printf '\033[1m[image-check]\033[0m %s\n' "$*" >&2; }
begin() { step="$1"; step_t=$(date +%s); log "== $1"; }
end_step() { log "   $step: ok ($(( $(date +%s) - step_t )) s)"; }
out() { sed 's/^/    | /'; }   # a command's own output, indented

unmount_root() {
    local target
    [ -d "$ROOTFS_DIR" ] || return 0
    for target in $(findmnt -rn -o TARGET | grep -F "$ROOTFS_DIR" | sort -r); do
        umount -l "$target" 2>/dev/null || true
    done
}

on_exit() {
    local rc=$?
    set +e
    unmount_root
    [ -n "${data_loop:-}" ] && losetup -d "$data_loop" 2>/dev/null
    if [ "$registered_binfmt" = 1 ]; then echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64; fi
    if [ "$mounted_binfmt" = 1 ]; then umount /proc/sys/fs/binfmt_misc; fi
    if [ "${QRGATE_IMAGE_CHECK_KEEP:-0}" = 1 ]; then log "work directory kept: $work"; else rm -rf "$work"; fi
    local total=$(( $(date +%s) - t_start ))
    if [ "$rc" -eq 0 ]; then
        log "image-check PASSED (${emulation:-?}, $suite arm64) in ${total} s ($(( total / 60 )) min $(( total % 60 )) s)"
    else
        log "image-check FAILED at step: $step (exit $rc) after ${total} s"
    fi
    exit "$rc"
}
trap on_exit EXIT

# ---------------------------------------------------------------------------------------------------
begin "host tools"
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v arch-test >/dev/null || need+=(arch-test)
command -v parted >/dev/null || need+=(parted)
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
end_step

# ---------------------------------------------------------------------------------------------------
begin "emulation"
binfmt_works() {
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 &&
        arch-test arm64 >/dev/null 2>&1
}
try_binfmt() {
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || return 1
        mounted_binfmt=1
        log "mounted binfmt_misc (unmounted again at the end)"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        local conf
        conf="$(ls /usr/lib/binfmt.d/qemu-aarch64*.conf 2>/dev/null | head -n1)"
        [ -n "$conf" ] || return 1
        grep -v '^#' "$conf" > /proc/sys/fs/binfmt_misc/register 2>/dev/null || return 1
        registered_binfmt=1
        log "registered qemu-aarch64 with binfmt_misc from $conf (removed again at the end)"
    fi
    binfmt_works
}
case "$mode" in
    auto) if try_binfmt; then emulation=binfmt; else emulation=extract; fi ;;
    binfmt) try_binfmt || { log "binfmt_misc cannot be used here"; exit 1; }; emulation=binfmt ;;
    extract) emulation=extract ;;
    *) log "QRGATE_IMAGE_CHECK_MODE must be auto, binfmt or extract"; exit 2 ;;
esac
if [ "$emulation" = extract ]; then
    log "no binfmt_misc: --variant=extract root, qemu-aarch64-static -L for its Python, proot for the stage's steps"
    command -v proot >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends proot >/dev/null
fi
log "emulation: $emulation ($(qemu-aarch64-static --version | head -n1))"
end_step

# ---------------------------------------------------------------------------------------------------
begin "suite"
suite_on_mirror() {
    python3 - "$mirror/dists/$1/InRelease" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=30)
except Exception as error:
    print(f"{sys.argv[1]}: {error}", file=sys.stderr)
    sys.exit(1)
EOF
}
if ! suite_on_mirror "$suite"; then
    log "FALLBACK: $suite is not on $mirror; using bookworm (Raspberry Pi OS 12's base, Python 3.11) instead"
    suite=bookworm
    suite_on_mirror "$suite"
fi
case "$suite" in
    trixie) py_version=3.13 ;;
    bookworm) py_version=3.11 ;;
    *) py_version="${QRGATE_IMAGE_PYTHON:?set QRGATE_IMAGE_PYTHON for suite $suite}" ;;
esac
log "suite: $suite arm64 from $mirror (Python $py_version)"
end_step

# ---------------------------------------------------------------------------------------------------
begin "host python"
# qrgate-issuer (mint the pass) and pip (the wheelhouse): the dev venv, else one made in the cache.
if [ -x "$repo/.venv/bin/qrgate-issuer" ]; then
    host_venv="$repo/.venv"
else
    host_venv="$cache/host-venv"
    if [ ! -x "$host_venv/bin/qrgate-issuer" ]; then
        python3 -m venv "$host_venv"
        "$host_venv/bin/python" -m pip install -q "$repo"
    fi
fi
log "host venv: $host_venv"
end_step

# ---------------------------------------------------------------------------------------------------
begin "wheelhouse (build-wheelhouse.sh, aarch64 cp${py_version/./})"
wheelhouse="$cache/wheelhouse-$suite"
PYTHON="$host_venv/bin/python" "$here/build-wheelhouse.sh" --python "$py_version" --out "$wheelhouse" 2>&1 |
    grep -v "^WARNING: Location 'file://" | out
end_step

# ---------------------------------------------------------------------------------------------------
begin "base root ($suite arm64, mmdebstrap)"
# The Debian packages of the stage: 00-packages-nr (as pi-gen reads it: comment and empty lines
# dropped) without Raspberry Pi OS's own, the read-only option's, and what Lite has over minbase.
# shellcheck source=stage-qrgate/00-qrgate/install-steps.sh
. "$substage/install-steps.sh"
stage_packages="$(sed -e '/^ *#/d' -e '/^ *$/d' "$substage/00-packages-nr" | tr -s ' \n' ' ')"
debian_packages=()
for pkg in $stage_packages $QRGATE_READONLY_PACKAGES "${lite_packages[@]}"; do
    skip=0
    for rpi in "${rpi_only_packages[@]}"; do [ "$pkg" = "$rpi" ] && skip=1; done
    [ "$skip" = 1 ] || debian_packages+=("$pkg")
done
log "Raspberry Pi OS packages not in Debian, left out here: ${rpi_only_packages[*]}"
if [ "$emulation" = binfmt ]; then
    variant=minbase
    include=("${debian_packages[@]}")
else
    variant=extract
    include=(base-files base-passwd bash coreutils dash debianutils findutils grep sed util-linux libc-bin
             passwd login "${debian_packages[@]}")
fi
# Bump base_recipe when the way the base root is made changes (the hand fixes below).
base_recipe=2
key="$(printf '%s\n' "$base_recipe" "$suite" "$mirror" "$variant" "${include[@]}" "$(mmdebstrap --version)" | sha256sum | cut -c1-16)"
base_tar="$cache/roots/$suite-arm64-$variant-$key.tar"
mkdir -p "$cache/roots" "$cache/debs"
if [ -f "$base_tar" ] && [ "${QRGATE_IMAGE_CHECK_FRESH:-0}" != 1 ]; then
    log "cached base root: $base_tar"
    mkdir -p "$ROOTFS_DIR"
    tar -C "$ROOTFS_DIR" --numeric-owner -xpf "$base_tar"
else
    log "mmdebstrap --variant=$variant, packages: ${include[*]}"
    mmdebstrap_args=(--arch=arm64 --variant="$variant" --include="$(IFS=,; echo "${include[*]}")"
        --skip=cleanup/apt --skip=essential/unlink
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/'
        --setup-hook="sync-in $cache/debs /var/cache/apt/archives/")
    if [ "$variant" = extract ]; then
        mmdebstrap_args+=(--skip=check/qemu)
    else
        mmdebstrap_args+=(--customize-hook="sync-out /var/cache/apt/archives $cache/debs")
    fi
    mmdebstrap "${mmdebstrap_args[@]}" "$suite" "$ROOTFS_DIR" "$mirror" 2>&1 | grep -E '^(I|E|W):' | out
    if [ "$variant" = extract ]; then
        cp -n "$ROOTFS_DIR"/var/cache/apt/archives/*.deb "$cache/debs/" 2>/dev/null || true
        # Which packages were extracted, and what they provide (trixie's libzbar0t64 provides libzbar0),
        # for the apt-get stand-in below: there is no dpkg database.
        for deb in "$ROOTFS_DIR"/var/cache/apt/archives/*.deb; do
            dpkg-deb -f "$deb" Package
            dpkg-deb -f "$deb" Provides | tr ',' '\n' | sed -E 's/^ *//; s/ *\(.*//; /^$/d'
        done | sort -u > "$ROOTFS_DIR/etc/.extracted-packages"
        # What dpkg and the maintainer scripts would have made: the usr-merge links (and with them
        # the ELF interpreter's path), the base users and groups, the CA bundle.
        for d in bin sbin lib; do [ -e "$ROOTFS_DIR/$d" ] || ln -s "usr/$d" "$ROOTFS_DIR/$d"; done
        for f in passwd group; do
            [ -e "$ROOTFS_DIR/etc/$f" ] || cp "$ROOTFS_DIR/usr/share/base-passwd/$f.master" "$ROOTFS_DIR/etc/$f"
        done
        : > "$ROOTFS_DIR/etc/shadow"; : > "$ROOTFS_DIR/etc/gshadow"
        # update-ca-certificates' bundle: pip loads it at start, even with --no-index.
        mkdir -p "$ROOTFS_DIR/etc/ssl/certs"
        cat "$ROOTFS_DIR"/usr/share/ca-certificates/mozilla/*.crt > "$ROOTFS_DIR/etc/ssl/certs/ca-certificates.crt"
    fi
    rm -f "$ROOTFS_DIR"/var/cache/apt/archives/*.deb
    tar -C "$ROOTFS_DIR" --numeric-owner -cpf "$base_tar.part" . && mv "$base_tar.part" "$base_tar"
    # One base root per variant is enough.
    find "$cache/roots" -name "$suite-arm64-$variant-*.tar" ! -name "$(basename "$base_tar")" -delete
fi
log "base root: $(du -sh "$ROOTFS_DIR" | cut -f1)"
if [ "$emulation" = extract ]; then
    log "the root's own Python under qemu-aarch64-static -L (no binfmt_misc):"
    qemu-aarch64-static -L "$ROOTFS_DIR" "$ROOTFS_DIR/usr/bin/python3" -c \
        'import platform, sys; print("machine:", platform.machine(), "| python", sys.version.split()[0])' | out
fi
end_step

# ---------------------------------------------------------------------------------------------------
# on_chroot, with pi-gen's contract: bash -e inside the image, commands on stdin.
if [ "$emulation" = binfmt ]; then
    on_chroot() {
        mountpoint -q "$ROOTFS_DIR/proc" || mount -t proc proc "$ROOTFS_DIR/proc"
        mountpoint -q "$ROOTFS_DIR/dev" || mount --bind /dev "$ROOTFS_DIR/dev"
        mountpoint -q "$ROOTFS_DIR/dev/pts" || mount --bind /dev/pts "$ROOTFS_DIR/dev/pts"
        mountpoint -q "$ROOTFS_DIR/sys" || mount --bind /sys "$ROOTFS_DIR/sys"
        env -i PATH="$chroot_path" HOME=/root LANG=C.UTF-8 TERM=dumb chroot "$ROOTFS_DIR" /bin/bash -e "$@"
    }
else
    # No dpkg in an extract root: apt-get only confirms that the packages were extracted.
    mkdir -p "$ROOTFS_DIR/run/qrgate-check-shims"
    cat > "$ROOTFS_DIR/run/qrgate-check-shims/apt-get" <<'EOF'
#!/bin/sh
for pkg in "$@"; do
    case "$pkg" in -*|install) continue ;; esac
    grep -qx "$pkg" /etc/.extracted-packages || { echo "extract root: $pkg was not extracted" >&2; exit 1; }
    echo "extract root: $pkg extracted by mmdebstrap (no dpkg to install it)"
done
EOF
    chmod +x "$ROOTFS_DIR/run/qrgate-check-shims/apt-get"
    on_chroot() {
        env -i PATH="/run/qrgate-check-shims:$chroot_path" HOME=/root LANG=C.UTF-8 TERM=dumb \
            proot -0 -r "$ROOTFS_DIR" -q "$(command -v qemu-aarch64-static)" -b /dev -b /proc -b /sys -w / \
            /bin/bash -e "$@"
    }
fi
export -f on_chroot
export chroot_path

# As the gate runs: user qrgate with its groups, nothing of this machine's environment.
as_gate() {
    if [ "$emulation" = binfmt ]; then
        env -i PATH="$chroot_path" HOME=/var/lib/qrgate LANG=C.UTF-8 chroot "$ROOTFS_DIR" \
            setpriv --reuid=qrgate --regid=qrgate --init-groups "$@"
    else
        # proot fakes root; it cannot switch to another user.
        printf '%q ' "$@" | on_chroot
    fi
}

# ---------------------------------------------------------------------------------------------------
begin "stage 00-packages-nr (apt-get install --no-install-recommends inside the root, as pi-gen)"
packages=()
for pkg in $stage_packages; do
    skip=0
    for rpi in "${rpi_only_packages[@]}"; do [ "$pkg" = "$rpi" ] && skip=1; done
    [ "$skip" = 1 ] || packages+=("$pkg")
done
echo "DEBIAN_FRONTEND=noninteractive apt-get install --no-install-recommends -y ${packages[*]}" | on_chroot 2>&1 | tail -n 3 | out
end_step

# ---------------------------------------------------------------------------------------------------
begin "stage 00-run.sh (QRGATE_READONLY_ROOT=1)"
(
    cd "$substage"
    export QRGATE_WHEELHOUSE="$wheelhouse" QRGATE_READONLY_ROOT=1
    ./00-run.sh
) 2>&1 | grep -v -E '^(  Downloading|Looking in links)' | tail -n 12 | out
# What the stage left in the image:
for f in /etc/systemd/system/qrgate.service /etc/systemd/system/multi-user.target.wants/qrgate.service \
         /etc/systemd/system/qrgate-readonly-root.service /etc/systemd/system/qrgate.service.d/qrgate-data.conf \
         /usr/local/sbin/qrgate-readonly-root /etc/qrgate/qrgate.toml /usr/share/qrgate/hardware/profiles \
         /opt/qrgate/venv/bin/qrgate; do
    [ -e "$ROOTFS_DIR$f" ] || [ -L "$ROOTFS_DIR$f" ] || { log "missing in the image: $f"; exit 1; }
done
for f in "$repo"/firmware/systemd/*.conf.d/*.conf; do
    [ -e "$f" ] || continue
    target="/etc/systemd/$(basename "$(dirname "$f")")/$(basename "$f")"
    cmp -s "$f" "$ROOTFS_DIR$target" || { log "drop-in not installed: $target"; exit 1; }
    echo "drop-in installed: $target" | out
done
grep qrgate "$ROOTFS_DIR/etc/passwd" | out
grep qrgate-data "$ROOTFS_DIR/etc/fstab" | out
ls -l "$ROOTFS_DIR/etc/qrgate/qrgate.toml" | sed "s#$ROOTFS_DIR##" | out
end_step

# ---------------------------------------------------------------------------------------------------
begin "machine (inside the root)"
as_gate /opt/qrgate/venv/bin/python -c '
import platform, sys, sysconfig
from importlib.metadata import version
import cv2, numpy, zxingcpp, qrgate
print("machine:", platform.machine(), "| platform:", sysconfig.get_platform(), "| python", sys.version.split()[0])
print("executable:", sys.executable, "| prefix:", sys.prefix)
print("qrgate", qrgate.__version__, "| numpy", numpy.__version__, "| opencv", cv2.__version__, "| zxing-cpp", version("zxing-cpp"))
' 2>&1 | tee "$work/machine.txt" | out
grep -q "^machine: aarch64 " "$work/machine.txt" || { log "the gate's Python did not run on aarch64"; exit 1; }
end_step

# ---------------------------------------------------------------------------------------------------
begin "provision (a stand-in for the provisioning tools)"
# What provisioning puts on a gate before the daemon may start, made here: an issuer's trust anchor,
# the province's list-signing key, the broker CA and the device's certificate and key (a throwaway
# CA); and what systemd's StateDirectory=qrgate does at the service's start (hand /var/lib/qrgate
# to the user). The configuration stays the stage's, firmware/qrgate.example.toml.
issuer="$host_venv/bin/qrgate-issuer"
prov="$work/provision"
mkdir -p "$prov"
"$issuer" key new --issuer VN-HN --alg EdDSA --out "$prov/issuer" 2>&1 | out
"$issuer" trust-list new-signer --out-dir "$prov/signer" 2>&1 | out
device_id="$(sed -n 's/^id *= *"\([^"]*\)".*/\1/p' "$ROOTFS_DIR/etc/qrgate/qrgate.toml" | head -n1)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=qrgate image-check CA" \
    -keyout "$prov/ca.key" -out "$prov/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$device_id" \
    -keyout "$prov/device.key" -out "$prov/device.csr" 2>/dev/null
openssl x509 -req -in "$prov/device.csr" -CA "$prov/ca.pem" -CAkey "$prov/ca.key" -CAcreateserial -days 30 \
    -out "$prov/device.pem" 2>/dev/null
gid="$(stat -c %g "$ROOTFS_DIR/etc/qrgate/trust")"
install -m 0640 -g "$gid" "$prov"/issuer/*.trust.json "$ROOTFS_DIR/etc/qrgate/trust/"
install -d -m 0750 -g "$gid" "$ROOTFS_DIR/etc/qrgate/trust-signers" "$ROOTFS_DIR/etc/qrgate/pki"
install -m 0640 -g "$gid" "$prov"/signer/*.pem "$ROOTFS_DIR/etc/qrgate/trust-signers/"
install -m 0644 "$prov/ca.pem" "$prov/device.pem" "$ROOTFS_DIR/etc/qrgate/pki/"
install -m 0640 -g "$gid" "$prov/device.key" "$ROOTFS_DIR/etc/qrgate/pki/"
gate_ids="$(awk -F: '$1 == "qrgate" { print $3 ":" $4 }' "$ROOTFS_DIR/etc/passwd")"
chown "$gate_ids" "$ROOTFS_DIR/var/lib/qrgate"
chmod 0750 "$ROOTFS_DIR/var/lib/qrgate"
echo "(qrgate is uid:gid $gate_ids in the image)" | out
(cd "$ROOTFS_DIR" && find etc/qrgate var/lib/qrgate -printf '%M %U:%G %p\n' | sort -k3) | out
end_step

# ---------------------------------------------------------------------------------------------------
begin "qrgate check-config /etc/qrgate/qrgate.toml"
as_gate /opt/qrgate/venv/bin/qrgate check-config /etc/qrgate/qrgate.toml 2>&1 | out
end_step

# ---------------------------------------------------------------------------------------------------
begin "qrgate verify (a pass minted on this machine)"
pass_text="$("$issuer" pass mint --key "$(ls "$prov"/issuer/*.key)" --issuer VN-HN --valid-days 30 \
    --random-id --subject image-check-0001 --initials I.C --png "$work/pass.png" 2> >(out >&2))"
echo "minted: $pass_text" | out
install -m 0644 "$work/pass.png" "$ROOTFS_DIR/tmp/pass.png"
as_gate /opt/qrgate/venv/bin/qrgate verify --trust /etc/qrgate/trust "$pass_text" 2>&1 | out
log "the same pass from its QR image:"
as_gate /opt/qrgate/venv/bin/qrgate verify --trust /etc/qrgate/trust --image /tmp/pass.png 2>&1 | out
end_step

# ---------------------------------------------------------------------------------------------------
begin "qrgate scan (a real photo)"
photo="$shared/qr-photos/qrcode-1/1.webp"
if [ -f "$photo" ]; then
    expected="$(cat "${photo%.*}.txt")"
    log "photo: $photo (zxing-cpp's test samples; expected text: $expected)"
else
    log "no $photo (shared/ missing): scanning the minted pass's PNG instead"
    photo="$work/pass.png"
    expected="$pass_text"
fi
install -m 0644 "$photo" "$ROOTFS_DIR/tmp/photo.${photo##*.}"
as_gate /opt/qrgate/venv/bin/qrgate scan "/tmp/photo.${photo##*.}" 2>&1 | tee "$work/scan.txt" | out
grep -qF -- "$expected" "$work/scan.txt" || { log "scan did not read the expected text"; exit 1; }
end_step

# ---------------------------------------------------------------------------------------------------
begin "data partition (add-data-partition.sh, fstab options, written by qrgate)"
if [ "$emulation" != binfmt ]; then
    log "skipped: needs a loop device and chroot (not with the extract fallback)"
elif ! losetup -f >/dev/null 2>&1; then
    log "skipped: no loop device on this machine"
else
    # A stand-in for pi-gen's image: FAT boot partition with a trixie cmdline.txt, ext4 root.
    img="$work/stand-in.img"
    truncate -s 200M "$img"
    parted -s "$img" mklabel msdos mkpart primary fat32 4MiB 68MiB mkpart primary ext4 68MiB 196MiB 2>/dev/null
    mkfs.vfat -n BOOTFS --offset 8192 "$img" 65536 >/dev/null 2>&1
    echo "console=serial0,115200 console=tty1 root=PARTUUID=00000000-02 rootfstype=ext4 fsck.repair=yes rootwait quiet resize" |
        mcopy -i "$img@@4194304" - ::cmdline.txt 2>/dev/null
    mkfs.ext4 -q -L rootfs -E offset=$((68 * 1048576)) "$img" $((128 * 1024))k
    "$here/add-data-partition.sh" "$img" 64 2>&1 | out
    line="$(parted -ms "$img" unit B print | grep '^3:')"
    data_loop="$(losetup --show -f -o "$(echo "$line" | cut -d: -f2 | tr -d B)" --sizelimit "$(echo "$line" | cut -d: -f4 | tr -d B)" "$img")"
    [ "$(blkid -o value -s LABEL "$data_loop")" = "$QRGATE_DATA_LABEL" ] || { log "partition 3 is not labelled $QRGATE_DATA_LABEL"; exit 1; }
    # Mount it as the image's fstab says (mount(8) takes the fstab options: nofail, x-systemd.* too).
    fstab_line="$(grep "^LABEL=$QRGATE_DATA_LABEL " "$ROOTFS_DIR/etc/fstab")"
    options="$(echo "$fstab_line" | awk '{print $4}')"
    mount -t ext4 -o "$options" "$data_loop" "$ROOTFS_DIR/var/lib/qrgate"
    findmnt -n -o SOURCE,FSTYPE,OPTIONS "$ROOTFS_DIR/var/lib/qrgate" | out
    findmnt -n -o OPTIONS "$ROOTFS_DIR/var/lib/qrgate" | grep -q 'data=journal' || { log "not mounted data=journal"; exit 1; }
    # systemd's StateDirectory=qrgate hands the directory to the service user at start; so does this.
    chown "$gate_ids" "$ROOTFS_DIR/var/lib/qrgate"
    chmod 0750 "$ROOTFS_DIR/var/lib/qrgate"
    as_gate /opt/qrgate/venv/bin/python -c '
import os, sqlite3
db = sqlite3.connect("/var/lib/qrgate/image-check.sqlite")
db.execute("PRAGMA journal_mode=WAL"); db.execute("CREATE TABLE t (x)"); db.execute("INSERT INTO t VALUES (1)"); db.commit()
print("user", os.getuid(), "wrote", db.execute("SELECT count(*) FROM t").fetchone()[0], "row to /var/lib/qrgate/image-check.sqlite")
' 2>&1 | out
    env -i PATH="$chroot_path" chroot "$ROOTFS_DIR" /usr/local/sbin/qrgate-readonly-root status 2>&1 | sed "s#$ROOTFS_DIR##g" | out
    umount "$ROOTFS_DIR/var/lib/qrgate"
    losetup -d "$data_loop"; data_loop=""
fi
end_step
