#!/usr/bin/env bash
# Set up and run the whole test suite, as CI does (.ci/run calls this script).
#
# The suite runs in two environments, because device-side code must work without TensorFlow:
#   .venv-device  numpy, pillow, click, LiteRT: every test not marked `tf`
#   .venv         the same plus TensorFlow: the tests marked `tf` (training, conversion, parity)
# Extra arguments go to both pytest runs, e.g. `bash scripts/test.sh -x -k data`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The TFLite Micro build the firmware tests compile against (cached; setup.sh built it).
EDGENN_TFLM=$(bash scripts/build_tflm.sh)
export EDGENN_TFLM
.venv/bin/ruff check edgenn firmware_export tests benchmarks datasets scripts
.venv/bin/ruff format --check edgenn firmware_export tests benchmarks datasets scripts
echo "== device-side tests (no TensorFlow installed)" >&2
.venv-device/bin/python -m pytest -m "not tf" "$@"
echo "== TensorFlow tests" >&2
.venv/bin/python -m pytest -m tf "$@"
