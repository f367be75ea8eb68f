"""What edgenn's classify path costs on top of the bare interpreter, and whether bench's figures hold.

    .venv/bin/python benchmarks/runtime_overhead.py [--models A.tflite B.tflite] [-n 20000]

1. In one process, on the same model: ``Classifier(model, top_k=1).classify(pixels)`` on a decoded
   28x28 uint8 array (what a camera loop or a script holds), against
   - ``raw``: a bare LiteRT loop of ``set_tensor`` / ``invoke`` / ``get_tensor`` fed an input
     prepared once, outside the loop (target: classify <= 1.10x this);
   - ``raw_argmax``: the same plus the argmax that names the winning class (what top-1 computes);
   - ``raw_from_pixels``: the loop a script writes by hand from the same pixels (numpy scaling
     and quantization, then the raw loop and the argmax).
   ``classify`` on the already preprocessed float input (the raw loop's own input) and with
   ``k=3`` are timed too.
2. ``edgenn bench``'s p50 versus an independent raw timing loop of ``invoke`` alone, each in its
   own process. Target: within 10%.

Defaults to the int8 CNN and MLP that benchmarks/quantization.py writes; when they are missing,
the default CNN and MLP are trained briefly (latency does not depend on accuracy) and converted
to int8 in a child process (TensorFlow), so that the timing process never loads TensorFlow.
Rounds alternate between the loops so that a change of CPU frequency or load hits all alike; each
figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, table

from edgenn import preprocess
from edgenn.bench import BenchOptions, bench
from edgenn.predict import Classifier

REPO = Path(__file__).resolve().parent.parent
QUANTIZATION_MODELS = [
    REPO / "runs/bench/quantization/cnn/int8-cpu.tflite",
    REPO / "runs/bench/quantization/mlp/int8-cpu.tflite",
]
OWN_MODELS = REPO / "runs/bench/overhead"
SAMPLE = REPO / "datasets/fashion-mnist-samples/Bag/test-00018.jpg"

INDEPENDENT = """
import sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_content=open(sys.argv[1], "rb").read()); it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
for _ in range(100):
    it.invoke()
samples = []
for _ in range(2000):
    t = time.perf_counter_ns(); it.invoke(); samples.append((time.perf_counter_ns() - t) / 1000)
print(float(np.median(samples)))
"""


def make_models(folder: Path) -> None:
    """Train the default CNN and MLP on 2,000 images for one epoch and convert them to int8."""
    from edgenn import datasets as data
    from edgenn.host.convert import convert
    from edgenn.host.train import TrainConfig, train

    for kind in ("cnn", "mlp"):
        config = TrainConfig(data=data.DataSpec(limit=2000, seed=0), model=kind, epochs=1)
        run = train(config, folder / kind, overwrite=True, progress=False).run_dir
        convert(run, folder / kind / "int8-cpu.tflite", quantize="int8", overwrite=True)


def default_models() -> list[Path]:
    if all(p.is_file() for p in QUANTIZATION_MODELS):
        return QUANTIZATION_MODELS
    models = [OWN_MODELS / kind / "int8-cpu.tflite" for kind in ("cnn", "mlp")]
    if not all(p.is_file() for p in models):
        print(f"making the default CNN and MLP in {OWN_MODELS} (TensorFlow, child process)")
        subprocess.run([sys.executable, __file__, "--make-models"], check=True)
    return models


def per_call_us(fn, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n / 1000


def loops(path: Path) -> dict:
    """The raw loops and the classify calls for one model, each a zero-argument callable."""
    from ai_edge_litert.interpreter import Interpreter

    clf = Classifier(path, top_k=1)
    pixels = preprocess.load_pixels(SAMPLE, clf.spec)[:, :, 0]  # a decoded 28x28 uint8 array
    x = preprocess.pixels_to_input(pixels[None, :, :, None], clf.spec)
    interp = Interpreter(model_content=path.read_bytes())
    interp.allocate_tensors()
    in_index = interp.get_input_details()[0]["index"]
    out_index = interp.get_output_details()[0]["index"]
    raw_input = clf.runner.quantize_input(x)  # what the raw loops feed: the model's own dtype

    def raw():
        interp.set_tensor(in_index, raw_input)
        interp.invoke()
        return interp.get_tensor(out_index)

    def raw_argmax():
        interp.set_tensor(in_index, raw_input)
        interp.invoke()
        return int(interp.get_tensor(out_index).argmax())

    detail = interp.get_input_details()[0]
    shape, dtype = tuple(detail["shape"]), detail["dtype"]
    scale, offset = np.float32(clf.spec.scale), np.float32(clf.spec.offset)
    q_scale, q_zero = detail["quantization"]
    limits = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None

    def raw_from_pixels():
        # What a script writes by hand for the same job, from the same decoded pixels.
        x = pixels.reshape(shape).astype(np.float32) * scale + offset
        if limits is not None:
            x = np.clip(np.rint(x / q_scale) + q_zero, limits.min, limits.max)
        interp.set_tensor(in_index, x.astype(dtype))
        interp.invoke()
        return int(interp.get_tensor(out_index).argmax())

    assert clf.classify(pixels)[0].index == raw_argmax() == raw_from_pixels(), "disagreement"
    classify = clf.classify
    return {
        "raw": raw,
        "raw_argmax": raw_argmax,
        "raw_from_pixels": raw_from_pixels,
        "classify": lambda: classify(pixels),
        "classify_top3": lambda: classify(pixels, 3),
        "classify_float_input": lambda: classify(x),
    }


def bench_agreement(path: Path, rounds: int) -> dict:
    # Independent timing of invoke() alone: a plain LiteRT script in its own process (as bench
    # runs each model in its own process), alternated with edgenn bench: a process now and then
    # lands on a slow core, so the median of rounds is compared.
    independent, benched = [], []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", INDEPENDENT, str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        independent.append(float(out.stdout.strip()))
        row = bench([path], BenchOptions(dataset=None, runs=2000, warmup=100))[0]
        benched.append(row.latency_ms.p50 * 1000)
    independent_p50, bench_p50 = float(np.median(independent)), float(np.median(benched))
    return {
        "independent_invoke_p50_us": round(independent_p50, 2),
        "bench_p50_us": round(bench_p50, 2),
        "bench_vs_independent": round(bench_p50 / independent_p50, 3),
        # Best of rounds, as timeit reports: the fastest round of each is the undisturbed one.
        "best_of_rounds_ratio": round(min(benched) / min(independent), 3),
        "agreement_target": "within 10%",
        "independent_rounds_us": [round(v, 2) for v in independent],
        "bench_rounds_us": [round(v, 2) for v in benched],
    }


def measure(path: Path, n: int, rounds: int, bench_rounds: int) -> dict:
    fns = loops(path)
    for fn in fns.values():
        per_call_us(fn, 2000)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(per_call_us(fn, n))
    med = {name: float(np.median(v)) for name, v in samples.items()}
    row = {
        "model": f"{path.parent.name}/{path.name}",
        "raw_loop_us": round(med["raw"], 2),
        "raw_loop_argmax_us": round(med["raw_argmax"], 2),
        "classify_us": round(med["classify"], 2),
        "ratio": round(med["classify"] / med["raw"], 3),
        "ratio_target": "<= 1.10",
        "ratio_vs_raw_argmax": round(med["classify"] / med["raw_argmax"], 3),
        "raw_from_pixels_us": round(med["raw_from_pixels"], 2),
        "ratio_vs_raw_from_pixels": round(med["classify"] / med["raw_from_pixels"], 3),
        "classify_top3_us": round(med["classify_top3"], 2),
        "classify_float_input_us": round(med["classify_float_input"], 2),
        "ratio_float_input": round(med["classify_float_input"] / med["raw"], 3),
        **{f"{name}_rounds_us": [round(v, 3) for v in samples[name]] for name in fns},
    }
    if bench_rounds:
        row.update(bench_agreement(path, bench_rounds))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", type=Path)
    parser.add_argument("-n", type=int, default=20000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--bench-rounds", type=int, default=9, help="edgenn bench vs independent (0: skip)"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "runtime_overhead.json", help="JSON results"
    )
    parser.add_argument("--make-models", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_models:
        make_models(OWN_MODELS)
        return
    rows = []
    for path in args.models or default_models():
        rows.append(measure(path, args.n, args.rounds, args.bench_rounds))
        print({k: v for k, v in rows[-1].items() if not k.endswith("_rounds_us")}, flush=True)
    print(table(rows, [(k, k) for k in rows[0] if not k.endswith("_rounds_us")]))
    info = machine()
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['date']}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
