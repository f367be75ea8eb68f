"""edgenn tune: the searches behind benchmarks/configs/, their replay, and the tune overhead.

    python benchmarks/tune.py search cnn-64k   # edgenn tune, resumable: rerun to continue
    python benchmarks/tune.py search mlp mlp2
    python benchmarks/tune.py verify           # edgenn train --config + convert, each config
    python benchmarks/tune.py overhead         # time outside model.fit per trial (trials.csv)

``verify`` trains each committed configuration on the full training split with ``edgenn train
--config`` and scores the int8 model (``edgenn convert``: micro for the CNN; cpu for the MLP, as
TFLite Micro's Python interpreter crashes bisecting the arena of some wide MLPs) on the fixed
test split, which the searches never saw. The CNN search ran in two stages: ``cnn-64k`` over
blocks, filters, heads, depthwise and optimizers on a 12,000-image slice with 6 epochs, then
``cnn-64k-2`` on the full training split around its best region (3 blocks 32,64,32 with a
flatten head) over dense width, dropout, learning rate, batch size and augmentation, 8 epochs.
``fmnist-cnn-64k.json`` is stage 2's best.json with 20 epochs (what fits the 30-minute training
budget here). Results go to benchmarks/results/tune.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import machine, table, write_results

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "benchmarks" / "configs"
RUNS = ROOT / "runs" / "bench" / "tune"
#: edgenn in a fresh interpreter (this Python's).
EDGENN = [sys.executable, "-m", "edgenn"]

#: The searches, exactly as they were run (rerunning one continues its study).
SEARCHES = {
    "cnn-64k": [
        "--space",
        str(CONFIGS / "space-fmnist-cnn-64k.json"),
        "--limit",
        "12000",
        "--max-size",
        "64KB",
        "--target",
        "micro",
        "--trials",
        "24",
    ],
    # Second stage on the full training split around the first one's best region (3 blocks,
    # flatten head): dense width, dropout, learning rate, batch size and augmentation.
    "cnn-64k-2": [
        "--space",
        str(CONFIGS / "space-fmnist-cnn-64k-2.json"),
        "--max-size",
        "64KB",
        "--target",
        "micro",
        "--trials",
        "6",
    ],
    "mlp": [
        "--space",
        str(CONFIGS / "space-fmnist-mlp.json"),
        "--objective",
        "accuracy",
        "--target",
        "cpu",
        "--trials",
        "10",
    ],
    # Second stage around the first one's winner (3 layers, leaky ReLU, Adam): epochs,
    # widths, dropout and augmentation searched on the full training split.
    "mlp2": [
        "--space",
        str(CONFIGS / "space-fmnist-mlp-2.json"),
        "--objective",
        "accuracy",
        "--target",
        "cpu",
        "--trials",
        "8",
    ],
}
#: The committed configurations and the issue's goals for them.
GOALS = {
    "fmnist-cnn-64k": {
        "target": "micro",
        "min_accuracy": 0.930,
        "max_size": 65536,
        "max_train_seconds": 1800,
    },
    "fmnist-mlp": {"target": "cpu", "min_accuracy": 0.895},
}


def _edgenn(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*EDGENN, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"edgenn {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def search(name: str) -> None:
    out = RUNS / f"{name}-search"
    cmd = [*EDGENN, "tune", *SEARCHES[name], "-o", str(out)]
    print("running:", " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def verify(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        config = CONFIGS / f"{name}.json"
        run = RUNS / f"verify-{name}"
        cpu, wall = _children_cpu(), time.monotonic()
        train = json.loads(
            _edgenn(
                "train", "--config", str(config), "-o", str(run), "--overwrite", "--quiet", "--json"
            ).stdout
        )
        cpu, wall = _children_cpu() - cpu, time.monotonic() - wall
        converted = json.loads(
            _edgenn(
                "convert",
                str(run),
                "--target",
                GOALS[name]["target"],
                "--quantize",
                "int8",
                "--overwrite",
                "--json",
            ).stdout
        )
        goal = GOALS[name]
        met = converted["converted_accuracy"] >= goal["min_accuracy"]
        met &= converted["size_bytes"] <= goal.get("max_size", float("inf"))
        met &= train["train_seconds"] <= goal.get("max_train_seconds", float("inf"))
        rows.append(
            {
                "config": f"{name}.json",
                "params": train["params"],
                "epochs": train["epochs_run"],
                "float_test_accuracy": round(train["test_accuracy"], 4),
                "int8_test_accuracy": round(converted["converted_accuracy"], 4),
                "int8_bytes": converted["size_bytes"],
                "train_seconds": train["train_seconds"],
                "train_cpu_seconds": round(cpu, 1),
                "wall_seconds": round(wall, 1),
                "goal": json.dumps(goal),
                "met": bool(met),
            }
        )
        print(table(rows[-1:], [(k, k) for k in rows[-1]]), flush=True)
    return rows


def overhead(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        path = RUNS / f"{name}-search" / "trials.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as fh:
            done = [
                r for r in csv.DictReader(fh) if r["state"] == "COMPLETE" and r["trial_seconds"]
            ]
        if not done:
            continue
        shares = [float(r["overhead_seconds"]) / float(r["trial_seconds"]) * 100 for r in done]
        checks = [float(r["check_seconds"]) / float(r["trial_seconds"]) * 100 for r in done]
        rows.append(
            {
                "study": name,
                "complete_trials": len(done),
                "median_trial_s": round(statistics.median(float(r["trial_seconds"]) for r in done)),
                "median_fit_s": round(statistics.median(float(r["train_seconds"]) for r in done)),
                "median_overhead_s": round(
                    statistics.median(float(r["overhead_seconds"]) for r in done)
                ),
                "overhead_median_%": round(statistics.median(shares), 1),
                "overhead_max_%": round(max(shares), 1),
                "size_check_median_%": round(statistics.median(checks), 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["search", "verify", "overhead"])
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    if args.what == "search":
        for name in args.names or list(SEARCHES):
            search(name)
        return
    results_path = ROOT / "benchmarks" / "results" / "tune.json"
    if args.what == "verify":
        rows = verify(args.names or list(GOALS))
    else:
        rows = overhead(args.names or list(SEARCHES))
        print(table(rows, [(k, k) for k in rows[0]]) if rows else "no finished search yet")
    # Read the file only now: a verify takes long and another may have written meanwhile.
    doc = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if args.what == "verify":
        done = {r["config"]: r for r in doc.get("verify", []) + rows}
        doc["verify"] = list(done.values())
    else:
        doc["overhead"] = rows
    doc["searches"] = {
        name: ["edgenn", "tune", *a, "-o", f"runs/bench/tune/{name}-search"]
        for name, a in SEARCHES.items()
    }
    doc["machine"] = machine()
    print(f"wrote {write_results('tune', doc)}")


if __name__ == "__main__":
    main()
