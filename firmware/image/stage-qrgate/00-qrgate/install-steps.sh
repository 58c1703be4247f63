# shellcheck shell=bash
# The qrgate image stage's install steps, in one place. Sourced by 00-run.sh (pi-gen runs it on the
# build host) and run through that same 00-run.sh by firmware/image/check.sh (`./dev image-check`),
# so the check proves these lines, not a copy of them.
#
# qrgate_install_steps ROOTFS_DIR WHEELHOUSE REPO
#   ROOTFS_DIR  the image's root, as pi-gen names it
#   WHEELHOUSE  the qrgate wheel and its aarch64 dependency wheels (firmware/image/build-wheelhouse.sh)
#   REPO        the qrgate checkout (firmware/systemd, firmware/qrgate.example.toml, hardware/)
# Needs `on_chroot`: pi-gen's function (bash reads the commands from stdin inside the image); the
# check defines its own with the same contract.
# Variable: QRGATE_READONLY_ROOT=1 makes the root read-only (overlayfs) once the gate is provisioned,
# with /var/lib/qrgate on its own ext4 partition (label qrgate-data) mounted data=journal.

# Where files/ of this sub-stage is; the check reads it too.
QRGATE_STAGE_FILES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/files"

# Debian packages the read-only option adds (installed at build time: a gate has no network then).
QRGATE_READONLY_PACKAGES="overlayroot"

# The data partition: add-data-partition.sh makes it; fstab mounts it. data=journal puts file data
# through the journal too, so a power cut leaves the outbox's last committed SQLite state, not torn
# blocks. nofail: a card without the partition still boots (SSH works) and qrgate.service, which
# requires the mount, stays failed instead of writing check-ins to RAM.
QRGATE_DATA_LABEL="qrgate-data"
QRGATE_FSTAB_LINE="LABEL=${QRGATE_DATA_LABEL} /var/lib/qrgate ext4 defaults,noatime,data=journal,nofail,x-systemd.device-timeout=30s 0 2"

qrgate_install_steps() {
    local root="$1" wheelhouse="$2" repo="$3"
    local files="$QRGATE_STAGE_FILES"

    if ! compgen -G "$wheelhouse/qrgate-*.whl" >/dev/null; then
        echo "qrgate stage: no qrgate wheel in $wheelhouse: run firmware/image/build-wheelhouse.sh first" >&2
        return 1
    fi

    # --- On the build host: files into the image. ---
    rm -rf "$root/tmp/qrgate-wheelhouse"
    install -d "$root/tmp/qrgate-wheelhouse"
    cp "$wheelhouse"/*.whl "$root/tmp/qrgate-wheelhouse/"

    install -D -m 0644 "$repo/firmware/systemd/qrgate.service" "$root/etc/systemd/system/qrgate.service"
    # Manager drop-ins (hardware watchdog in system.conf.d, log limits in journald.conf.d, ...):
    # firmware/systemd/NAME.conf.d/*.conf -> /etc/systemd/NAME.conf.d/.
    local dropin dir
    for dropin in "$repo"/firmware/systemd/*.conf.d/*.conf; do
        [ -e "$dropin" ] || continue
        dir="$(basename "$(dirname "$dropin")")"
        install -D -m 0644 "$dropin" "$root/etc/systemd/$dir/$(basename "$dropin")"
    done

    # Board profiles: a wheel has no checkout beside it (qrgate.board.INSTALLED_HARDWARE_DIR).
    rm -rf "$root/usr/share/qrgate/hardware"
    install -d "$root/usr/share/qrgate"
    cp -r "$repo/hardware" "$root/usr/share/qrgate/hardware"

    # The example configuration; the technician's provisioning replaces it (and fills trust/, pki/).
    install -D -m 0640 "$repo/firmware/qrgate.example.toml" "$root/etc/qrgate/qrgate.toml"
    install -d -m 0750 "$root/etc/qrgate/trust"
    install -d "$root/var/lib/qrgate"

    if [ "${QRGATE_READONLY_ROOT:-0}" = 1 ]; then
        install -D -m 0755 "$files/qrgate-readonly-root" "$root/usr/local/sbin/qrgate-readonly-root"
        install -D -m 0644 "$files/qrgate-readonly-root.service" "$root/etc/systemd/system/qrgate-readonly-root.service"
        install -D -m 0644 "$files/qrgate-data.conf" "$root/etc/systemd/system/qrgate.service.d/qrgate-data.conf"
        touch "$root/etc/fstab"
        grep -q "^LABEL=${QRGATE_DATA_LABEL} " "$root/etc/fstab" || echo "$QRGATE_FSTAB_LINE" >> "$root/etc/fstab"
    fi

    # --- Inside the image. ---
    on_chroot <<EOF
set -e
# Raspberry Pi OS has both groups (its stage1); a plain Debian root does not.
getent group gpio >/dev/null || groupadd --system gpio
getent group video >/dev/null || groupadd --system video
id -u qrgate >/dev/null 2>&1 || useradd --system --user-group --home-dir /var/lib/qrgate --no-create-home \
    --shell /usr/sbin/nologin --groups video,gpio qrgate
# --system-site-packages: apt's python3-picamera2 and python3-lgpio stay visible to the daemon.
python3 -m venv --system-site-packages /opt/qrgate/venv
# The wheelhouse only: nothing inside the image reaches the network.
PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null /opt/qrgate/venv/bin/pip install --no-index --no-cache-dir \
    --disable-pip-version-check --find-links /tmp/qrgate-wheelhouse qrgate
rm -rf /tmp/qrgate-wheelhouse
chgrp qrgate /etc/qrgate/qrgate.toml /etc/qrgate/trust
systemctl enable qrgate.service
if [ "${QRGATE_READONLY_ROOT:-0}" = 1 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $QRGATE_READONLY_PACKAGES
    systemctl enable qrgate-readonly-root.service
fi
EOF
}
