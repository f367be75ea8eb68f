"""edgenn firmware on the default int8 CNN and MLP, compiled against TFLite Micro, on every test image.

    EDGENN_TFLM=$(bash scripts/build_tflm.sh) .venv-device/bin/python benchmarks/firmware.py \\
        [--runs runs/bench] [--tflm DIR] [--images 10000]

Uses the int8 models for --target micro that benchmarks/quantization.py writes (from the runs of
benchmarks/accuracy.py). For each, `edgenn firmware --verify-build` builds the generated project
against TFLite Micro, bisects the smallest arena on the compiled check program and runs the whole
Fashion-MNIST test split through it. Reported: images, bit_exact (outputs equal to TFLM's Python
interpreter), litert_exact, litert_max_lsb and argmax_agree (the compiled program against LiteRT's
reference kernels), flash, the smallest arena of the compiled program and of the Python
interpreter, the generated arena and the ratio generated/minimum (goal <= 1.10). The exported
folder is then built again as its README says (CMake), and its check program shows that the
minimum works and the minimum minus 16 bytes fails; its host latency and accuracy are measured.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from common import report

from edgenn import datasets as data
from edgenn import preprocess, tflm
from edgenn.artifact import model_info
from edgenn.runtime import Runner
from edgenn.tflite_model import load
from firmware_export import TFLM_ENV, build, export_firmware

REPO = Path(__file__).resolve().parent.parent
COLUMNS = [
    ("model", "model"),
    ("images", "images"),
    ("bit_exact", "bit-exact vs TFLM Python"),
    ("litert_exact", "exact vs LiteRT"),
    ("litert_max_lsb", "max LSB vs LiteRT"),
    ("argmax_agree", "same top class as LiteRT"),
    ("flash_bytes", "flash B"),
    ("arena_min_bytes", "arena min B (compiled)"),
    ("arena_interpreter_min_bytes", "arena min B (Python)"),
    ("arena_bytes", "arena generated B"),
    ("arena_ratio", "generated / min"),
    ("min_minus_16_fails", "min - 16 B fails"),
    ("compiled_us_per_image", "compiled us/image"),
    ("accuracy", "accuracy %"),
    ("export_seconds", "export s"),
]


def test_inputs(model: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` Fashion-MNIST test images quantized as the export quantizes them."""
    fm = data.load_fashion_mnist(allow_download=False)
    spec = model_info(load(model)).spec
    runner = Runner(load(model), xnnpack=False)
    floats = preprocess.pixels_to_input(fm.x_test[:count], spec)
    return np.stack([runner.quantize_input(f[None]) for f in floats]), fm.y_test[:count]


def rebuild(folder: Path, tflm_dir: Path, build_dir: Path) -> None:
    """Build the exported folder as its README says."""
    for args in (
        ["cmake", "-S", str(folder), "-B", str(build_dir), f"-DTFLM_DIR={tflm_dir}"],
        ["cmake", "--build", str(build_dir), "--parallel", "2"],
    ):
        subprocess.run(args, check=True, capture_output=True)


def measure(name: str, model: Path, tflm_dir: Path, images: int) -> dict:
    """Export one model with --verify-build on ``images`` test images, then probe its program."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fw"
        start = time.perf_counter()
        result = export_firmware(
            model, out, name=f"fmnist_{name}", verify_examples=images, tflm_dir=tflm_dir
        )
        seconds = time.perf_counter() - start
        check = result.compiled_check
        rebuild(out, tflm_dir, Path(tmp) / "build")
        program = Path(tmp) / "build" / f"fmnist_{name}_check"
        x, y = test_inputs(model, images)
        output = ("int8", [1, 10])
        minimum = check.arena_min_bytes
        works = build.run_check(program, x[:1], output, minimum).returncode == 0
        fails = build.run_check(program, x[:1], output, minimum - tflm.ALIGN).returncode
        start = time.perf_counter()
        run = build.run_check(program, x, output)
        per_image = (time.perf_counter() - start) / len(x) * 1e6
    assert works and run.returncode == 0
    return {
        "model": name,
        **{key: getattr(check, key) for key, _ in COLUMNS[1:6]},
        "flash_bytes": result.flash_bytes,
        "arena_min_bytes": minimum,
        "arena_interpreter_min_bytes": result.arena_interpreter_min_bytes,
        "arena_bytes": result.arena_bytes,
        "arena_ratio": round(result.arena_bytes / minimum, 4),
        "min_minus_16_fails": fails != 0,
        "compiled_us_per_image": round(per_image, 1),
        "accuracy": round(float(np.mean(run.outputs.reshape(len(x), -1).argmax(1) == y)) * 100, 2),
        "export_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench")
    parser.add_argument("--tflm", type=Path, default=os.environ.get(TFLM_ENV))
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    if args.tflm is None:
        parser.error(f"pass --tflm DIR or set {TFLM_ENV} (bash scripts/build_tflm.sh prints it)")
    rows = []
    for name in ("cnn", "mlp"):
        path = args.runs / "quantization" / name / "int8-micro.tflite"
        rows.append(measure(name, path, args.tflm, args.images))
        print(rows[-1], flush=True)
    report("firmware", rows, COLUMNS)


if __name__ == "__main__":
    main()
