#!/bin/bash -e
# pi-gen runs this on the build host, in this directory, with ROOTFS_DIR set and on_chroot defined.
# The steps themselves are in install-steps.sh; ./dev image-check runs this same file.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The qrgate checkout this stage lives in (firmware/image/stage-qrgate/00-qrgate -> four levels up).
repo="${QRGATE_REPO:-$(cd "$here/../../../.." && pwd)}"
# shellcheck source=install-steps.sh
. "$here/install-steps.sh"
qrgate_install_steps "${ROOTFS_DIR:?ROOTFS_DIR is not set: pi-gen sets it}" \
    "${QRGATE_WHEELHOUSE:-$here/files/wheelhouse}" "$repo"
