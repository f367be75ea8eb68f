#!/usr/bin/env bash
# Build TFLite Micro once and print the build folder (it holds lib/ and flags.txt).
#
#   bash scripts/build_tflm.sh [TARBALL]
#
# TARBALL defaults to $EDGENN_TFLM_TARBALL, else ../shared/tflm/tflm-src.tar.xz beside the checkout.
# The build goes to ${EDGENN_CACHE:-~/.cache/edgenn}/tflm-<checksum of the tarball>, so a second run on
# the same machine returns at once and a different tree never reuses a stale library.
set -euo pipefail
cd "$(dirname "$0")/.."
tarball=${1:-${EDGENN_TFLM_TARBALL:-../shared/tflm/tflm-src.tar.xz}}
if [ ! -f "$tarball" ]; then
  echo "build_tflm: no TFLite Micro tarball at $tarball; pass its path (or set EDGENN_TFLM_TARBALL)" >&2
  exit 1
fi
builder=$(dirname "$tarball")/build.sh
if [ ! -f "$builder" ]; then
  echo "build_tflm: $builder not found beside the tarball" >&2
  exit 1
fi
sum=$(cksum <"$tarball" | awk '{print $1}')
out=${EDGENN_CACHE:-$HOME/.cache/edgenn}/tflm-$sum
mkdir -p "$out"
# TFLM's Makefile runs Python generators that need numpy and Pillow: use the device venv's python.
python=${TFLM_PYTHON:-$PWD/.venv-device/bin/python}
[ -x "$python" ] || python=$(command -v python3)
if [ ! -f "$out/.built" ]; then echo "build_tflm: building TFLite Micro into $out (about 10 minutes)" >&2; fi
TFLM_PYTHON=$python bash "$builder" "$tarball" "$out" >&2
echo "$out"
