#!/usr/bin/env bash
# Sets up corrnet on a fresh Debian machine: system libraries for Open3D, a virtual
# environment in .venv, and the package with its test extra. Safe to rerun: each step is
# skipped when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS="libusb-1.0-0 libvulkan1 mesa-vulkan-drivers libegl1 libgl1"
missing=""
for pkg in $DEBS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "[setup] installing Debian packages Open3D needs:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "[setup] Open3D needs these Debian packages, which are missing:$missing" >&2
        echo "[setup] install them as root, then rerun:" >&2
        echo "    sudo apt-get install -y$missing" >&2
        exit 1
    fi
fi

PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $PY"
    "$PY" -m venv .venv
fi

# scripts/constraints.txt holds the versions the tests last passed with on Linux x86_64 under
# Python 3.11; elsewhere, or with CORRNET_UNPINNED=1, pip resolves pyproject.toml's ranges.
constraints=""
platform=$(.venv/bin/python -c 'import platform, sys; print(sys.platform, platform.machine(), *sys.version_info[:2])')
if [ "${CORRNET_UNPINNED:-0}" != "1" ] && [ "$platform" = "linux x86_64 3 11" ]; then
    constraints=scripts/constraints.txt
fi

stamp=.venv/.corrnet-installed
want=$(cat pyproject.toml ${constraints:-} | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing Python packages into .venv (first run: about a minute)"
    # Pin torch first so that nothing pulls a multi-GB CUDA build onto a CPU machine: where a
    # local CPU wheel of torch 2.13.0 exists pip takes it; elsewhere set TORCH_SPEC, or
    # PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, before running this script.
    {
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
        # OpenCV without its contrib modules would share the cv2 package with the contrib build
        .venv/bin/python -m pip uninstall -q -y opencv-python-headless opencv-python 2>/dev/null || true
        .venv/bin/python -m pip install -q ${constraints:+-c "$constraints"} -e ".[dev]"
    } 2> >(grep -v -e "is ignored: it is neither a file nor a directory" >&2)
    echo "$want" > "$stamp"
fi
