"""Every precision x runtime for the default CNN and MLP on the full Fashion-MNIST test split.

    .venv/bin/python benchmarks/quantization.py [--runs runs/bench]
    .venv/bin/python benchmarks/quantization.py --ladder [--runs runs/bench]

Needs the run directories that benchmarks/accuracy.py writes, and .venv-tflite214 (made by
`bash scripts/setup.sh test`) for the tflite-runtime 2.14 column. For each model and precision it
converts with edgenn convert, then scores the same 10,000 test images with LiteRT, with
tflite-runtime 2.14 (in its own process: it needs numpy<2 and cannot share a process with
TensorFlow) where the model loads there, and with TFLite Micro for int8. Targets: int8 drop
<= 0.3 points versus Keras float; int8 CNN <= 100 KB.

``--ladder`` measures ``edgenn convert --quantize auto --report`` on the models of the test suite
(trained here the same way: 2,000 Fashion-MNIST images, 4 epochs; the outlier MLP is the test
suite's MLP with one hidden channel scaled 1000x, see tests/test_convert.py): every step of the
ladder (accuracy on the 10,000 test images, size, batch-1 LiteRT latency), which step auto wrote,
and what the per-layer report and the whole ladder cost in seconds. It writes
benchmarks/results/quantization_ladder.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, report, table, write_results

from edgenn import datasets as data
from edgenn import tflite_model
from edgenn.host.convert import convert
from edgenn.host.models import load_keras_model
from edgenn.runtime import Runner

REPO = Path(__file__).resolve().parent.parent
TFLITE_214 = REPO / ".venv-tflite214" / "bin" / "python"

SCORE_214 = """
import sys, numpy as np
from tflite_runtime.interpreter import Interpreter
x = np.load(sys.argv[2]); y = np.load(sys.argv[3])
it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
i, o = it.get_input_details()[0], it.get_output_details()[0]
scale, zero = i["quantization"]
correct = 0
for xi, yi in zip(x, y):
    if np.dtype(i["dtype"]).kind in "iu":
        lim = np.iinfo(i["dtype"])
        xi = np.clip(np.rint(xi / scale) + zero, lim.min, lim.max)
    it.set_tensor(i["index"], xi[None].astype(i["dtype"])); it.invoke()
    correct += int(it.get_tensor(o["index"]).argmax() == yi)
print(correct / len(y))
"""


def score_tflite_runtime_214(model: Path, x: np.ndarray, y: np.ndarray) -> float | str:
    if not TFLITE_214.is_file():
        return "no .venv-tflite214"
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x)
        np.save(f"{tmp}/y.npy", y)
        out = subprocess.run(
            [str(TFLITE_214), "-c", SCORE_214, str(model), f"{tmp}/x.npy", f"{tmp}/y.npy"],
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        last = [line for line in out.stderr.splitlines() if line.strip()]
        return "does not load: " + (last[-1][:80] if last else "?")
    return float(out.stdout.strip())


def score_tflm(model: tflite_model.TFLiteFile, x: np.ndarray, y: np.ndarray, arena: int) -> float:
    from tflite_micro.python.tflite_micro import runtime as tflm

    interp = tflm.Interpreter.from_bytes(model.data, arena_size=arena)
    ref = Runner(model, xnnpack=False)  # quantizes the input exactly as the device path does
    correct = 0
    for xi, yi in zip(x, y):
        ref.set_input(xi)
        interp.set_input(ref.interpreter.get_tensor(ref.input_details[0]["index"]), 0)
        interp.invoke()
        correct += int(interp.get_output(0).argmax() == yi)
    return correct / len(y)


#: The rows: each precision for the target it suits best, plus the cpu variants to compare.
CONVERSIONS = (
    ("fp32", "cpu"),
    ("fp16", "gpu"),
    ("dynamic", "cpu"),
    ("dynamic", "tflite-runtime-2.14"),
    ("int8", "cpu"),
    ("int8", "micro"),
)
COLUMNS = [
    ("model", "model"),
    ("precision", "precision"),
    ("converted_for", "--target"),
    ("size_kb", "size KB"),
    ("keras_float_acc", "Keras float %"),
    ("litert_acc", "LiteRT %"),
    ("drop_points", "drop (points)"),
    ("tflite_runtime_2_14_acc", "tflite-runtime 2.14 %"),
    ("tflm_acc", "TFLM %"),
    ("target_check", "check"),
]


def measure(run: Path, name: str, quantize: str, target: str, out_dir: Path, splits, keras_acc):
    """Convert one way and score the result with every runtime that loads it."""
    x = splits.model_inputs(splits.x_test)
    path = out_dir / name / f"{quantize}-{target}.tflite"
    result = convert(
        run, path, quantize=quantize, target=target, overwrite=True, max_accuracy_drop=100
    )
    model = tflite_model.load(path)
    litert = float(np.mean(Runner(model).predict(x).argmax(1) == splits.y_test))
    rt214 = score_tflite_runtime_214(path, x, splits.y_test)
    tflm = None
    arena = result.check["details"].get("arena")  # measured by the micro target's check
    if arena:
        tflm = score_tflm(model, x, splits.y_test, arena["recommended_bytes"])
    return {
        "model": name,
        "precision": quantize,
        "converted_for": target,
        "size_bytes": result.size_bytes,
        "size_kb": round(result.size_bytes / 1024, 1),
        "keras_float_acc": round(keras_acc * 100, 2),
        "litert_acc": round(litert * 100, 2),
        "drop_points": round((keras_acc - litert) * 100, 2),
        "tflite_runtime_2_14_acc": round(rt214 * 100, 2) if isinstance(rt214, float) else rt214,
        "tflm_acc": round(tflm * 100, 2) if tflm is not None else "",
        "target_check": result.check["verdict"].split(":")[0],
    }


def train_test_models(root: Path) -> dict[str, Path]:
    """The test suite's tiny MLP and CNN, and the MLP with an outlier channel."""
    from edgenn.host.train import TrainConfig, train

    runs = {}
    for name, kind, extra in (
        ("mlp", "mlp", {"hidden": [32]}),
        ("cnn", "cnn", {"filters": [16, 32]}),
    ):
        runs[name] = root / f"test-{name}"
        if not (runs[name] / "model.keras").is_file():
            spec = data.DataSpec(limit=2000, seed=0)
            train(TrainConfig(data=spec, model=kind, epochs=4, patience=0, **extra), runs[name])
    runs["outlier mlp"] = root / "test-outlier-mlp"
    if not (runs["outlier mlp"] / "model.keras").is_file():
        make_outlier(runs["mlp"], runs["outlier mlp"])
    return runs


def make_outlier(source: Path, run: Path) -> None:
    """Hidden unit 0 x1000, the output weights reading it /1000: the same float function."""
    import keras

    shutil.copytree(source, run, dirs_exist_ok=True)
    model = keras.models.load_model(run / "model.keras")
    hidden, head = model.get_layer("dense_0"), model.layers[-1]
    (w1, b1), (w2, b2) = hidden.get_weights(), head.get_weights()
    w1[:, 0] *= 1000
    b1[0] *= 1000
    w2[0] /= 1000
    hidden.set_weights([w1, b1])
    head.set_weights([w2, b2])
    model.save(run / "model.keras")


LADDER_COLUMNS = [
    ("model", "model"),
    ("step", "step"),
    ("tried", "tried by auto"),
    ("accuracy", "accuracy %"),
    ("drop_points", "drop (points)"),
    ("size_kb", "size KB"),
    ("latency_us", "LiteRT latency us"),
    ("written", "written by auto"),
]


def ladder_rows(name: str, run: Path, out: Path) -> tuple[list[dict], dict]:
    """Every ladder step of one model, and the cost of auto and of its report."""
    start = time.perf_counter()
    auto = convert(run, out / "auto" / "m.tflite", quantize="auto", report=True, overwrite=True)
    auto_s = time.perf_counter() - start
    start = time.perf_counter()
    convert(run, out / "int8" / "m.tflite", quantize="int8", overwrite=True, max_accuracy_drop=100)
    int8_s = time.perf_counter() - start
    steps = list(auto.ladder)
    for precision in ("dynamic", "fp16"):
        if precision not in {s["precision"] for s in steps}:
            r = convert(run, out / precision / "m.tflite", quantize=precision, overwrite=True)
            steps.append({**r.ladder[0], "chosen": False, "tried": False})
    rows = []
    for s in steps:
        label = s["precision"]
        if s["kept_float"]:
            label += " (ops " + ", ".join(str(k["index"]) for k in s["kept_float"]) + " float)"
        rows.append(
            {
                "model": name,
                "step": label,
                "tried": "yes" if s.get("tried", True) else "no (measured apart)",
                "accuracy": round(s["accuracy"] * 100, 2),
                "drop_points": s["drop_points"],
                "size_kb": round(s["size_bytes"] / 1024, 1),
                "latency_us": round(s["latency_ms"] * 1000, 1),
                "written": "**yes**" if s["chosen"] else "",
            }
        )
    report = json.loads(Path(auto.report).read_text())
    cost = {
        "model": name,
        "ops": len(report["ops"]),
        "samples": report["samples"],
        "report_s": auto.report_seconds,
        "auto_convert_s": round(auto_s, 1),
        "int8_convert_s": round(int8_s, 1),
        "decision": auto.decision,
    }
    return rows, cost


COST_COLUMNS = [
    ("model", "model"),
    ("ops", "ops"),
    ("samples", "samples"),
    ("report_s", "per-layer report s"),
    ("auto_convert_s", "convert --quantize auto --report s"),
    ("int8_convert_s", "convert --quantize int8 s"),
]


def ladder_main(runs_root: Path) -> None:
    runs = train_test_models(runs_root / "ladder")
    rows, costs = [], []
    for name, run in runs.items():
        model_rows, cost = ladder_rows(
            name, run, runs_root / "ladder" / "out" / name.replace(" ", "-")
        )
        rows += model_rows
        costs.append(cost)
        print(json.dumps(cost), flush=True)
    report("quantization_ladder", rows, LADDER_COLUMNS)
    print()
    print(table(costs, COST_COLUMNS))
    doc = json.loads((RESULTS / "quantization_ladder.json").read_text())
    doc["costs"] = costs
    write_results("quantization_ladder", doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench")
    parser.add_argument("--ladder", action="store_true", help="Measure --quantize auto instead.")
    args = parser.parse_args()
    if args.ladder:
        ladder_main(args.runs)
        return
    rows = []
    out_dir = args.runs / "quantization"
    for name in ("cnn", "mlp"):
        run = args.runs / f"fmnist-{name}"
        splits = data.make_splits(data.load_data_spec(run))
        x = splits.model_inputs(splits.x_test)
        keras_out = load_keras_model(run).predict(x, batch_size=512, verbose=0)
        keras_acc = float(np.mean(keras_out.argmax(1) == splits.y_test))
        for quantize, target in CONVERSIONS:
            rows.append(measure(run, name, quantize, target, out_dir, splits, keras_acc))
            print(json.dumps(rows[-1]), flush=True)
    report("quantization", rows, COLUMNS)


if __name__ == "__main__":
    main()
