"""``edgenn predict`` and ``edgenn bench``: classify files, and measure models side by side."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from edgenn import bench as bench_mod
from edgenn.bench import BenchOptions
from edgenn.classify import DEFAULT_TOP_K
from edgenn.cli.base import main, print_json
from edgenn.datasets import BUILTIN_DATASETS, NO_DATASET, dataset_option
from edgenn.runtime import DELEGATE_FORMS, RUNTIMES

#: What ``edgenn bench`` does when an option is not given.
_BENCH = BenchOptions()
#: The --dataset value that skips scoring.
_RUNTIME_HELP = (
    "Interpreter package [default: the first installed of: " + ", ".join(RUNTIMES) + "]."
)
_DELEGATE_HELP = "External delegate: " + ", ".join(DELEGATE_FORMS) + "."


@main.command(
    epilog="""\b
Examples:
  edgenn predict -m model.tflite photo.jpg
  edgenn predict -m model.tflite datasets/fashion-mnist-samples -k 1 --json
"""
)
@click.option(
    "-m", "--model", type=click.Path(path_type=Path), required=True, help="The .tflite model."
)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-k", "--top-k", type=click.IntRange(min=1), default=DEFAULT_TOP_K, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads.")
@click.option("--delegate", help=_DELEGATE_HELP)
@click.option("--runtime", type=click.Choice(tuple(RUNTIMES)), help=_RUNTIME_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image.")
def predict(
    model: Path,
    images: tuple[Path, ...],
    top_k: int,
    threads: int | None,
    delegate: str | None,
    runtime: str | None,
    as_json: bool,
) -> None:
    """Classify image files (folders are walked) with a .tflite model: top-k labels per image."""
    from edgenn.predict import Classifier, expand_images

    classifier = Classifier(model, top_k, threads=threads, delegate=delegate, runtime=runtime)
    failed = 0
    for path in expand_images(images):
        result = classifier.classify_file(path, top_k)
        if result.error:
            failed += 1
            click.echo(f"edgenn: error: {result.error}", err=True)
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(result)))
        elif not result.error:
            labels = ", ".join(f"{t.label} {t.score:.3f}" for t in result.top_k)
            click.echo(f"{path}: {labels}  ({result.inference_ms:.3f} ms)")
    if failed:
        raise SystemExit(1)


@main.command(
    epilog="""\b
Examples:
  edgenn bench runs/fmnist-cnn/model_fp32.tflite runs/fmnist-cnn/model_int8.tflite
  edgenn bench runs/fmnist-cnn runs/fmnist-cnn/model_int8.tflite --json
  edgenn bench model.tflite --dataset none -n 1000 --threads 4 --csv bench.csv --plot bench.png
"""
)
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--dataset",
    default=_BENCH.dataset or NO_DATASET,
    show_default=True,
    help=f"Data set whose test split scores accuracy ({', '.join(BUILTIN_DATASETS)}, a folder; "
    f"{NO_DATASET}: skip). Models whose labels are not its classes are not scored.",
)
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Fashion-MNIST folder."
)
@click.option(
    "-n", "--runs", type=int, default=_BENCH.runs, show_default=True, help="Counted runs per model."
)
@click.option(
    "--warmup", type=int, default=_BENCH.warmup, show_default=True, help="Uncounted runs first."
)
@click.option("--threads", type=int, help="Interpreter threads [default: the runtime's].")
@click.option(
    "--no-xnnpack", is_flag=True, help="LiteRT's reference kernels (bit-exact with TFLM)."
)
@click.option("--delegate", help=_DELEGATE_HELP)
@click.option("--runtime", type=click.Choice(tuple(RUNTIMES)), help=_RUNTIME_HELP)
@click.option(
    "--limit", "accuracy_limit", type=int, help="Score accuracy on the first N test examples."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document with a list of rows.")
@click.option(
    "--csv", "csv_path", type=click.Path(path_type=Path), help="Also write the rows as CSV."
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(path_type=Path),
    help="Also write a PNG: latency, accuracy.",
)
def bench(models: tuple[Path, ...], **opts: Any) -> None:
    """Benchmark models side by side: latency statistics, memory, size and accuracy.

    Each model (.tflite, .onnx with ONNX Runtime, or a run directory for its Keras model) runs
    in its own process; a model that fails is a row with its error and the others still run.
    The exit code is 1 only when every row failed.
    """
    options = BenchOptions(
        dataset=dataset_option(opts["dataset"]),
        data_dir=str(opts["data_dir"]) if opts["data_dir"] else None,
        runs=opts["runs"],
        warmup=opts["warmup"],
        threads=opts["threads"],
        xnnpack=not opts["no_xnnpack"],
        delegate=opts["delegate"],
        accuracy_limit=opts["accuracy_limit"],
        runtime=opts["runtime"],
    )
    options.validate()
    if opts["plot_path"]:
        bench_mod.check_plotting()
    tty = sys.stderr.isatty()

    def progress(done: int, total: int, model: str) -> None:
        bar = "#" * int(20 * done / total)
        line = f"bench [{bar:<20}] {done}/{total} {Path(model).name if model else 'done'}"
        click.echo(("\r\x1b[K" if tty else "") + line, err=True, nl=not tty or done == total)

    rows = bench_mod.bench(list(models), options, progress=progress)
    if opts["csv_path"]:
        bench_mod.write_csv(rows, opts["csv_path"])
    if opts["plot_path"]:
        bench_mod.plot(rows, opts["plot_path"])
    if opts["as_json"]:
        doc = {"rows": [r.to_dict() for r in rows], "runs": options.runs, "warmup": options.warmup}
        print_json(doc)
    else:
        click.echo(_bench_table(rows))
    if all(r.error for r in rows):
        raise SystemExit(1)


def _bench_table(rows: list) -> str:
    head = ["model", "runtime", "size KB", "init ms", "first ms", "p50 ms", "p90 ms", "p99 ms"]
    head += ["mean ms", "per s", "RSS MB", "accuracy", "drop"]
    body = []
    for r in rows:
        name = Path(r.model).name or r.model
        if r.error:
            body.append([name, r.runtime or "-", *[""] * 10, f"error: {r.error}"])
            continue
        lat = r.latency_ms
        body.append(
            [
                name,
                r.runtime,
                f"{(r.size_bytes or 0) / 1024:.1f}",
                f"{r.init_ms:.2f}",
                f"{r.first_ms:.3f}",
                f"{lat.p50:.4f}",
                f"{lat.p90:.4f}",
                f"{lat.p99:.4f}",
                f"{lat.mean:.4f}",
                f"{r.throughput_per_s:,.0f}",
                f"{r.peak_rss_mb:.1f}",
                f"{r.accuracy:.2%}" if r.accuracy is not None else "-",
                f"{r.accuracy_drop:+.2f}" if r.accuracy_drop is not None else "-",
            ]
        )
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]
    ]
    notes = [f"note: {Path(r.model).name}: {r.note}" for r in rows if r.note and not r.error]
    return "\n".join(lines + notes)
