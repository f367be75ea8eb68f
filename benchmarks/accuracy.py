"""Train the default CNN and MLP on the full Fashion-MNIST; report accuracy, size and time.

    .venv/bin/python benchmarks/accuracy.py [--out runs/bench] [--only cnn|mlp]

Targets on a 2-core CPU: CNN >= 92.5% test accuracy with <= 100k parameters in <= 15 minutes of
training; MLP (784-128-10 style) >= 89%. Writes benchmarks/results/accuracy.json and prints a table.
The run directories are kept under --out for the conversion and runtime benchmarks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS, report

from edgenn.cli.train import EpochBar
from edgenn.datasets import DataSpec
from edgenn.host.train import TrainConfig, train

MODELS = {
    # The defaults of `edgenn train --model cnn` and `--model mlp --hidden 128`, nothing tuned here.
    "cnn": {"config": TrainConfig(model="cnn"), "target": 0.925, "max_params": 100_000},
    "mlp": {"config": TrainConfig(model="mlp", hidden=[128]), "target": 0.89, "max_params": None},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--only", choices=sorted(MODELS))
    args = parser.parse_args()
    rows = []
    for name, spec in MODELS.items():
        if args.only and name != args.only:
            continue
        config = spec["config"]
        config.data = DataSpec(dataset="fashion-mnist", seed=0)
        result = train(config, args.out / f"fmnist-{name}", overwrite=True, progress=EpochBar())
        m = result.metrics
        ok = m["test_accuracy"] >= spec["target"] and (
            spec["max_params"] is None or m["params"] <= spec["max_params"]
        )
        rows.append(
            {
                "model": name,
                "test_accuracy": round(m["test_accuracy"] * 100, 2),
                "target": f">= {spec['target'] * 100:.1f}%",
                "params": m["params"],
                "epochs_run": m["epochs_run"],
                "train_seconds": m["train_seconds"],
                "meets_target": ok,
            }
        )
    columns = [
        ("model", "model"),
        ("test_accuracy", "test accuracy %"),
        ("target", "target"),
        ("params", "parameters"),
        ("epochs_run", "epochs"),
        ("train_seconds", "train s"),
        ("meets_target", "meets target"),
    ]
    if args.only:
        # Keep the other model's row from an earlier run, so that --only refreshes one line.
        previous = RESULTS / "accuracy.json"
        if previous.is_file():
            kept = [r for r in json.loads(previous.read_text())["rows"] if r["model"] != args.only]
            rows = sorted(kept + rows, key=lambda r: list(MODELS).index(r["model"]))
    report("accuracy", rows, columns)


if __name__ == "__main__":
    main()
