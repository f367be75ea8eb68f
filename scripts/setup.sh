#!/usr/bin/env bash
# Set up edgenn from a clean clone on a fresh Debian or Ubuntu machine.
#
#   bash scripts/setup.sh train    .venv with edgenn[train] (TensorFlow CPU) - the default
#   bash scripts/setup.sh test     .venv with edgenn[train,test], and .venv-device with
#                                  edgenn[test] only (no TensorFlow), for the device-side suite
#   bash scripts/setup.sh device   .venv with the device profile only (what a Pi installs)
#
# Installs Debian packages (with sudo when not root), makes the virtual environment(s) and installs
# edgenn into them in editable mode. Safe to run again.
set -euo pipefail
profile=${1:-train}
cd "$(dirname "$0")/.."

case "$profile" in train | test | device) ;; *)
  echo "usage: bash scripts/setup.sh [train|test|device]" >&2
  exit 2
  ;;
esac

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# dataset-fashion-mnist: the default data set's IDX files under /usr/share/datasets/fashion-mnist.
apt_packages=(dataset-fashion-mnist ca-certificates)
if ! python3 -m venv --help >/dev/null 2>&1; then apt_packages+=(python3-venv python3-pip); fi
if [ "$profile" = test ]; then
  # g++: compiles generated TFLite Micro sources; exiftool reads back XMP sidecars;
  # openssh-server, openssh-client and rsync: edgenn deploy is tested against a real sshd on 127.0.0.1.
  apt_packages+=(g++ binutils libimage-exiftool-perl openssh-server openssh-client rsync)
  # systemd: systemd-analyze verifies the unit files edgenn bundle writes.
  apt_packages+=(systemd)
  # chromium: the camera web view is tested in a real headless browser (driven by Playwright).
  apt_packages+=(chromium)
  # postgresql: edgenn tune's shared-study storage is tested against a throw-away cluster on 127.0.0.1.
  # make, gcc, xz-utils, cmake: the generated firmware is compiled against a real TFLite Micro build.
  apt_packages+=(postgresql make gcc xz-utils cmake)
fi
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

make_venv() { # make_venv DIR EXTRAS
  local dir=$1 extras=$2
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  echo "setup: installing edgenn${extras:+[$extras]} into $dir" >&2
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}" 2>&1 \
    | grep -v '^WARNING: Location' || true
  "$dir/bin/python" -c "import edgenn" # fail here, not later, when the install did not work
}

case "$profile" in
  train) make_venv .venv train ;;
  device) make_venv .venv "" ;;
  test)
    make_venv .venv train,tune,test
    make_venv .venv-device test
    # tflite-runtime 2.14 (the last release, what many Pi and Coral set-ups run) needs numpy<2 and
    # must not share a process with TensorFlow: the tests load converted models with it here.
    if [ ! -x .venv-tflite214/bin/python ]; then python3 -m venv .venv-tflite214; fi
    .venv-tflite214/bin/python -m pip install -q --disable-pip-version-check "tflite-runtime==2.14.0" "numpy<2" \
      2>&1 | grep -v '^WARNING: Location' || true
    .venv-tflite214/bin/python -c "import tflite_runtime.interpreter"
    # Real third-party .tflite models for the tests: MediaPipe 0.10.21's wheel ships them (later
    # releases ship none). Only the wheel is fetched, from PyPI; nothing of MediaPipe is installed.
    if [ ! -f tests/.models/face_detection_short_range.tflite ]; then
      wheels=$(mktemp -d)
      .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" \
        mediapipe==0.10.21 2>&1 | grep -v '^WARNING: Location' || true
      .venv/bin/python scripts/extract_models.py "$wheels"/mediapipe-0.10.21-*.whl tests/.models
      rm -rf "$wheels"
    fi
    ;;
esac
if [ "$profile" = test ]; then
  # TFLite Micro, built once from the pinned offline tree and cached per tree checksum: the tests
  # compile the generated firmware against it (about 10 minutes on 2 cores the first time).
  bash scripts/build_tflm.sh >/dev/null
fi
echo "setup: done ($profile)" >&2
