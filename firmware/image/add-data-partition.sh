#!/usr/bin/env bash
# Add the qrgate data partition to a pi-gen image file, before it is flashed:
#
#   firmware/image/add-data-partition.sh deploy/IMAGE.img [SIZE_MIB]     (default 1024 MiB)
#
# Appends SIZE_MIB to the image as a third partition, ext4 labelled qrgate-data, which the image's
# fstab mounts on /var/lib/qrgate with data=journal (QRGATE_READONLY_ROOT=1; see firmware/README.md).
# The root partition then is no longer the last one, so the first-boot "grow the root to the card"
# is switched off in cmdline.txt (`resize`, and bookworm's `init=.../firstboot`): the root keeps
# the size pi-gen gave it, which a read-only root never outgrows.
# Works on the file alone (no loop device, no mount, no root): parted, e2fsprogs and mtools.
set -euo pipefail

img="${1:?usage: add-data-partition.sh IMAGE.img [SIZE_MIB]}"
size_mib="${2:-1024}"
label=qrgate-data
[ -f "$img" ] || { echo "add-data-partition: $img is not an image file" >&2; exit 1; }
for tool in parted mkfs.ext4 mtype mcopy; do
    command -v "$tool" >/dev/null || { echo "add-data-partition: needs $tool (apt-get install parted e2fsprogs mtools)" >&2; exit 1; }
done

# field F (2 start, 3 end, 4 size; in sectors) of partition N
part_field() { parted -ms "$img" unit s print | grep "^$1:" | cut -d: -f"$2" | tr -d s; }

parts="$(parted -ms "$img" unit s print | grep -c '^[0-9]*:')"
[ "$parts" -eq 2 ] || { echo "add-data-partition: expected pi-gen's two partitions (boot, root), found $parts" >&2; exit 1; }

# Start on a 4 MiB boundary (8192 sectors) after the root partition, as pi-gen aligns its own.
start=$(( ($(part_field 2 3) / 8192 + 1) * 8192 ))
truncate -s $(( (start + size_mib * 2048) * 512 )) "$img"
parted -s "$img" -- mkpart primary ext4 "${start}s" -1s 2> >(grep -v udevadm >&2)  # no udev: harmless
mkfs.ext4 -q -F -L "$label" -E offset=$(( start * 512 )) "$img" $(( $(part_field 3 4) / 2 ))k

# cmdline.txt on the FAT boot partition, edited in place. mtools sees the image from the partition's
# start to the file's end and warns that the FAT is smaller: only real errors are shown.
boot="$img@@$(( $(part_field 1 2) * 512 ))"
mtools() { local err; err="$("$@" 2>&1 >/dev/null)" && return 0; echo "$err" >&2; return 1; }
mtools mtype -i "$boot" ::cmdline.txt
cmdline="$(mtype -i "$boot" ::cmdline.txt 2>/dev/null | tr -d '\r')"
new="$(echo "$cmdline" | sed -E 's# (resize|init=/usr/lib/raspberrypi-sys-mods/firstboot)( |$)#\2#g')"
if [ "$new" != "$cmdline" ]; then
    printf '%s\n' "$new" > "$img.cmdline.txt"
    mtools mcopy -o -i "$boot" "$img.cmdline.txt" ::cmdline.txt
    rm -f "$img.cmdline.txt"
fi
parted -ms "$img" unit MiB print | sed 's/^/  /'
echo "cmdline.txt: $new"
echo "$img: partition 3 ext4 $label, ${size_mib} MiB"
