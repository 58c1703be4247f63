#!/usr/bin/env bash
# Fill the image stage's wheelhouse: the qrgate wheel and every dependency as a wheel for the gate
# (Linux aarch64, CPython of the image's Debian: 3.13 on trixie, 3.11 on bookworm), from PyPI only.
# The stage installs from this directory with `pip install --no-index`, so the image build never
# reaches the network from inside the image.
#
#   firmware/image/build-wheelhouse.sh [--python 3.13] [--out DIR]
#
# DIR defaults to firmware/image/stage-qrgate/00-qrgate/files/wheelhouse (what 00-run.sh reads).
# Run it on any machine with Python >= 3.11 and pip (a Debian laptop, the pi-gen build host):
# `pip download --platform` fetches the aarch64 wheels whatever the machine's own architecture.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py_version=3.13
out="$here/stage-qrgate/00-qrgate/files/wheelhouse"
while [ $# -gt 0 ]; do
    case "$1" in
        --python) py_version="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "usage: $0 [--python 3.13] [--out DIR]" >&2; exit 2 ;;
    esac
done
abi="cp${py_version/./}"

# The pip that builds: $PYTHON, else the dev venv's, else python3 (it needs pip).
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
"$python" -m pip --version >/dev/null 2>&1 || {
    echo "build-wheelhouse: $python has no pip (Debian: apt-get install python3-pip, or use a venv)" >&2; exit 1; }

mkdir -p "$out"
rm -f "$out"/qrgate-*.whl
echo "[wheelhouse] qrgate wheel from $repo" >&2
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$repo"
wheel="$(ls "$out"/qrgate-*.whl)"

# Its dependencies, resolved for the gate rather than for this machine. manylinux_2_28 covers
# Debian 12 and 13 (glibc 2.36, 2.41); older manylinux tags are accepted too.
echo "[wheelhouse] dependencies for linux aarch64, CPython $py_version ($abi)" >&2
"$python" -m pip download --quiet --dest "$out" \
    --only-binary=:all: --implementation cp --python-version "$py_version" --abi "$abi" --abi abi3 --abi none \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    --platform linux_aarch64 --platform any \
    "$wheel"
ls "$out" | sed 's/^/  /' >&2
