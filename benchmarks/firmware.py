"""firmware_export on the default int8 CNN and MLP: flash, arena, TFLM host latency, agreement.

    .venv/bin/python benchmarks/firmware.py [--runs runs/bench]

Uses the int8 models for --target micro that benchmarks/quantization.py writes. For each: the
flash bytes (aligned model), the measured minimal arena and the generated one (10% margin), the
TFLite Micro reference interpreter's latency on this host, and agreement with LiteRT's reference
kernels over the whole Fashion-MNIST test split (target: 100% bit-exact).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import report

from edgenn import datasets as data
from edgenn import preprocess
from edgenn.artifact import model_info
from edgenn.runtime import Runner
from edgenn.tflite_model import load
from firmware_export import export_firmware
from firmware_export.verify import parse_c_array

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench")
    args = parser.parse_args()
    from tflite_micro.python.tflite_micro import runtime as tflm

    fm = data.load_fashion_mnist(allow_download=False)
    rows = []
    for name in ("cnn", "mlp"):
        path = args.runs / "quantization" / name / "int8-micro.tflite"
        with tempfile.TemporaryDirectory() as tmp:
            result = export_firmware(
                path, Path(tmp) / "fw", name=f"fmnist_{name}", verify_examples=100
            )
            aligned = parse_c_array(
                (Path(tmp) / "fw" / f"fmnist_{name}_model_data.cc").read_text(),
                f"g_fmnist_{name}_model_data",
            )
        model = load(aligned)
        spec = model_info(load(path)).spec
        ref = Runner(model, xnnpack=False)
        micro = tflm.Interpreter.from_bytes(aligned, arena_size=result.arena_bytes)
        x = preprocess.pixels_to_input(fm.x_test, spec)
        same = correct = worst = 0
        times = []
        for xi, yi in zip(x, fm.y_test):
            q = ref.quantize_input(xi[None])
            ref.invoke()
            expected = ref.interpreter.get_tensor(ref.output_details[0]["index"])
            micro.set_input(q, 0)
            start = time.perf_counter_ns()
            micro.invoke()
            times.append((time.perf_counter_ns() - start) / 1e6)
            got = micro.get_output(0)
            diff = int(np.abs(got.astype(np.int32) - expected.astype(np.int32)).max())
            same += diff == 0
            worst = max(worst, diff)
            correct += int(got.argmax() == yi)
        rows.append(
            {
                "model": name,
                "flash_bytes": result.flash_bytes,
                "arena_min_bytes": result.arena_min_bytes,
                "arena_generated_bytes": result.arena_bytes,
                "arena_margin": f"{result.arena_margin_percent:g}%",
                "tflm_host_p50_ms": round(float(np.median(times)), 3),
                "bit_exact_agreement": f"{same}/{len(x)}",
                "max_lsb_difference": worst,
                "tflm_accuracy": round(correct / len(x) * 100, 2),
            }
        )
        print(rows[-1], flush=True)
    report("firmware", rows)


if __name__ == "__main__":
    main()
