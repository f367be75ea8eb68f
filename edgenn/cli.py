"""The ``edgenn`` command line: the only module that knows click.

Each command parses its options, calls one library function and prints the result: a table or
summary for people on stdout, ``--json`` for machines, progress and logs on stderr. Library errors
(:class:`edgenn.errors.EdgennError`) become one line on stderr and exit code 1 (2 for usage
errors). Host-side modules (TensorFlow) are imported inside the commands that need them, so that
``edgenn --help`` and the device commands start fast and work without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from edgenn import __version__, models, targets
from edgenn.convert import IO_TYPES, PRECISIONS  # TensorFlow is imported inside its functions
from edgenn.data import TASKS
from edgenn.errors import EdgennError
from edgenn.train import LR_SCHEDULES

ROOT_HELP = """Train compact neural networks and run them on edge devices.

\b
Examples:
  edgenn train --dataset fashion-mnist --model cnn --epochs 15 -o runs/fmnist-cnn
  edgenn convert runs/fmnist-cnn --quantize int8 -o runs/fmnist-cnn/model_int8.tflite
  edgenn inspect runs/fmnist-cnn/model_int8.tflite --target edgetpu
  edgenn predict -m runs/fmnist-cnn/model_int8.tflite datasets/fashion-mnist-samples/Bag
  edgenn bench runs/fmnist-cnn runs/fmnist-cnn/model_int8.tflite --plot bench.png
"""


class EdgennGroup(click.Group):
    """A click group that prints library errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, turning EdgennError into a one-line message and an exit code."""
        try:
            return super().invoke(ctx)
        except EdgennError as exc:
            click.echo(f"edgenn: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("edgenn: interrupted", err=True)
            ctx.exit(130)


@click.group(
    cls=EdgennGroup,
    help=ROOT_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="edgenn")
def main() -> None:
    """Entry point of the ``edgenn`` console script."""


def _int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        items = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers such as 128,64; received {value!r}"
        ) from None
    if not items:
        raise click.BadParameter(f"expected at least one integer; received {value!r}")
    return items


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    parts = value.lower().replace("x", ",").split(",")
    try:
        dims = [int(p) for p in parts if p]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise click.BadParameter(
            f"expected SIZE or HEIGHTxWIDTH such as 28 or 96x96; received {value!r}"
        )
    return dims


def _print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=str))


@main.command(
    epilog="""\b
Examples:
  edgenn train --dataset fashion-mnist --model cnn --epochs 15 -o runs/fmnist-cnn
  edgenn train --dataset fashion-mnist --model mlp --hidden 128 -o runs/fmnist-mlp
  edgenn train --dataset digits --base runs/fmnist-cnn --fine-tune-epochs 3 -o runs/digits
  edgenn train --dataset houses.csv --target-column price --model mlp --hidden 64,32 -o runs/price
  edgenn train --dataset photos/ --input-size 64 --model cnn -o runs/photos
"""
)
@click.option(
    "--dataset",
    default="fashion-mnist",
    show_default=True,
    help="fashion-mnist, digits, a folder with one sub-folder per class, or a .csv file.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder with the Fashion-MNIST IDX files (default: datasets/, Debian's package, cache).",
)
@click.option("--target-column", help="CSV: the column to predict.")
@click.option(
    "--task",
    type=click.Choice(TASKS),
    default="auto",
    show_default=True,
    help="CSV: what the target is; auto takes text or few integers as classes.",
)
@click.option("--input-size", callback=_size, help="Resize images to SIZE or HxW pixels.")
@click.option("--color-mode", type=click.Choice(["L", "RGB"]), help="Convert images to this mode.")
@click.option("--limit", type=int, help="Train on a stratified subset of N examples.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option(
    "--test-fraction",
    type=float,
    default=0.2,
    show_default=True,
    help="Held-out test share (data sets without their own test split).",
)
@click.option(
    "--model", "model_kind", type=click.Choice(models.MODEL_KINDS), default="cnn", show_default=True
)
@click.option(
    "--hidden", callback=_int_list, default="128", show_default=True, help="MLP hidden layer sizes."
)
@click.option(
    "--filters",
    callback=_int_list,
    default="32,64,64",
    show_default=True,
    help="CNN block channels.",
)
@click.option(
    "--depthwise", is_flag=True, help="CNN: depthwise-separable blocks (MobileNet style)."
)
@click.option(
    "--head",
    type=click.Choice(models.CNN_HEADS),
    default=models.DEFAULT_CNN_HEAD,
    show_default=True,
    help="CNN: global average pooling or flatten before the dense layers.",
)
@click.option(
    "--dense",
    type=int,
    default=models.DEFAULT_CNN_DENSE,
    show_default=True,
    help="CNN: units of a dense layer before the output.",
)
@click.option(
    "--activation",
    type=click.Choice(models.ACTIVATIONS),
    default="relu",
    show_default=True,
)
@click.option("--dropout", type=float, help="Dropout rate [default: 0.3 for cnn, 0 for mlp].")
@click.option(
    "--base",
    help="Transfer learning from an edgenn run directory, a .keras file, mobilenet_v2 or "
    "mobilenet_v3_small.",
)
@click.option("--weights", help="Weights of a mobilenet base: imagenet (needs internet) or a file.")
@click.option(
    "--fine-tune-epochs",
    type=int,
    default=0,
    show_default=True,
    help="Unfreeze the base and train N more epochs.",
)
@click.option(
    "--loss",
    type=click.Choice(models.LOSSES),
    default="auto",
    show_default=True,
)
@click.option(
    "--optimizer",
    type=click.Choice(models.OPTIMIZERS),
    default="adam",
    show_default=True,
)
@click.option(
    "--lr", "learning_rate", type=float, default=2e-3, show_default=True, help="Learning rate."
)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--epochs", type=int, default=15, show_default=True)
@click.option(
    "--patience",
    type=int,
    default=5,
    show_default=True,
    help="Early stopping on validation loss (0: off).",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES),
    default="cosine",
    show_default=True,
)
@click.option(
    "--augment", is_flag=True, help="Random horizontal flips and shifts of training images."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Run directory to create.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json on stdout.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(**opts: Any) -> None:
    """Train a model and write a run directory (model.keras, labels, metrics, plots)."""
    from edgenn.data import DataSpec
    from edgenn.train import TrainConfig
    from edgenn.train import train as run_training

    data = DataSpec(
        dataset=opts["dataset"],
        data_dir=str(opts["data_dir"]) if opts["data_dir"] else None,
        target_column=opts["target_column"],
        task=opts["task"],
        input_size=opts["input_size"],
        color_mode=opts["color_mode"],
        seed=opts["seed"],
        val_fraction=opts["val_fraction"],
        test_fraction=opts["test_fraction"],
        limit=opts["limit"],
    )
    config = TrainConfig(
        data=data,
        model=opts["model_kind"],
        hidden=opts["hidden"],
        filters=opts["filters"],
        depthwise=opts["depthwise"],
        head=opts["head"],
        dense=opts["dense"],
        activation=opts["activation"],
        dropout=opts["dropout"],
        base=opts["base"],
        weights=opts["weights"],
        fine_tune_epochs=opts["fine_tune_epochs"],
        loss=opts["loss"],
        optimizer=opts["optimizer"],
        learning_rate=opts["learning_rate"],
        batch_size=opts["batch_size"],
        epochs=opts["epochs"],
        patience=opts["patience"],
        lr_schedule=opts["lr_schedule"],
        augment=opts["augment"],
    )
    result = run_training(
        config,
        opts["output"],
        overwrite=opts["overwrite"],
        progress=not opts["quiet"],
        verbose=opts["verbose"],
    )
    m = result.metrics
    if opts["as_json"]:
        _print_json(m)
        return
    if "test_accuracy" in m:
        score = f"test accuracy {m['test_accuracy']:.2%} ({m['n_test']} examples)"
    else:
        score = f"test MSE {m['test_mse']:.4g}, MAE {m['test_mae']:.4g}, R2 {m['test_r2']:.3f}"
    click.echo(
        f"{result.run_dir}: {m['model']} on {m['dataset']}, {m['params']:,} parameters, "
        f"{m['epochs_run']} epochs (best {m['best_epoch']}) in {m['train_seconds']:.1f}s; {score}"
    )


@main.command(
    epilog="""\b
Examples:
  edgenn convert runs/fmnist-cnn --quantize int8 -o models/fmnist-int8.tflite
  edgenn convert runs/fmnist-cnn --target edgetpu -o coral/model.tflite
  edgenn convert runs/fmnist-cnn --target micro -o mcu/model.tflite
  edgenn convert runs/fmnist-mlp --quantize dynamic --target tflite-runtime-2.14 -o pi/mlp.tflite
  edgenn convert runs/fmnist-cnn --format onnx -o onnx/fmnist-cnn.onnx
"""
)
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--quantize",
    type=click.Choice(PRECISIONS),
    help="Precision [default: the target's: cpu int8, gpu fp16, edgetpu int8, micro int8].",
)
@click.option(
    "--io",
    "io_type",
    type=click.Choice(IO_TYPES),
    help="Input/output type of an int8 model [default: edgetpu uint8, micro int8, else float].",
)
@click.option("--target", type=click.Choice(targets.TARGETS), default="cpu", show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tflite", "onnx"]),
    default="tflite",
    show_default=True,
    help="onnx: export the float model for ONNX Runtime instead (to compare in edgenn bench).",
)
@click.option(
    "--calibration-samples",
    type=int,
    default=300,
    show_default=True,
    help="Training examples (stratified) that calibrate int8 ranges.",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=1.0,
    show_default=True,
    help="Fail, writing nothing, when accuracy drops more (points).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="The .tflite to write [default: RUN/model_<quantize>.tflite].",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def convert(**opts: Any) -> None:
    """Convert a trained run to .tflite, score it on the test split and check the target."""
    from edgenn.convert import convert as run_convert
    from edgenn.convert import export_onnx

    if opts["fmt"] == "onnx":
        if opts["output"] is None:
            raise click.UsageError("--format onnx needs -o MODEL.onnx")
        exported = export_onnx(opts["source"], opts["output"], opts["overwrite"], opts["verbose"])
        if opts["as_json"]:
            _print_json(dataclasses.asdict(exported))
        else:
            click.echo(f"{exported.output}: ONNX opset {exported.opset}, {exported.size_bytes:,} B")
        return
    result = run_convert(
        opts["source"],
        output=opts["output"],
        quantize=opts["quantize"],
        io_type=opts["io_type"],
        target=opts["target"],
        calibration_samples=opts["calibration_samples"],
        max_accuracy_drop=opts["max_accuracy_drop"],
        overwrite=opts["overwrite"],
        verbose=opts["verbose"],
        progress=None if opts["as_json"] else lambda m: click.echo(m, err=True),
    )
    if opts["as_json"]:
        _print_json(dataclasses.asdict(result))
        return
    r = result
    click.echo(f"{r.output}: {r.quantize} ({r.io} I/O) for {r.target}")
    click.echo(
        f"  size {r.size_bytes:,} B ({r.size_ratio:.2f}x the fp32 model's {r.fp32_size_bytes:,} B)"
    )
    if r.float_accuracy is not None:
        click.echo(
            f"  accuracy on {r.test_examples} test examples: float {r.float_accuracy:.2%}, "
            f"{r.quantize} {r.converted_accuracy:.2%} (drop {r.accuracy_drop_points:+.2f} points)"
        )
    elif r.float_mse is not None:
        click.echo(f"  test MSE: float {r.float_mse:.4g}, {r.quantize} {r.converted_mse:.4g}")
    ops = ", ".join(f"{o['op']} v{o['version']} x{o['count']}" for o in r.ops)
    click.echo(f"  ops: {ops}; min runtime {r.min_runtime_version}")
    click.echo(
        targets.TargetReport(
            **{**r.check, "rows": [targets.OpRow(**row) for row in r.check["rows"]]}
        ).table()
    )


@main.command(
    epilog="""\b
Examples:
  edgenn inspect runs/fmnist-cnn/model_int8.tflite
  edgenn inspect model.tflite --target edgetpu
  edgenn inspect model.tflite --json
"""
)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", type=click.Choice(targets.TARGETS), help="Also check this target.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def inspect(model: Path, target: str | None, as_json: bool) -> None:
    """Show a .tflite model's inputs, outputs, ops, size, MACs and metadata.

    With --target, also check what runs on that target; the exit code is 1 when the model cannot
    run there at all (0 when it runs, fully or partly).
    """
    from edgenn import tflite_model

    parsed = tflite_model.load(model)
    doc = tflite_model.describe(parsed)
    report = targets.check(parsed, target) if target else None
    if as_json:
        if report is not None:
            doc["check"] = report.to_dict()
        _print_json(doc)
        return
    click.echo(
        f"{model}: {doc['size_bytes']:,} B ({doc['weight_bytes']:,} B weights, "
        f"{doc['other_bytes']:,} B graph and metadata), {doc['parameters']:,} parameters, "
        f"{doc['subgraphs']} subgraph(s)"
    )
    for kind in ("inputs", "outputs"):
        for t in doc[kind]:
            quant = (
                f" scale {t['scale']:.6g} zero point {t['zero_point']}"
                if t["scale"] is not None and not isinstance(t["scale"], list)
                else ""
            )
            click.echo(f"  {kind[:-1]:<6} {t['name']}: {t['dtype']} {t['shape']}{quant}")
    click.echo(f"  {'op':<28} {'ver':>3} {'count':>5} {'MACs':>12}")
    macs: dict[str, int] = {}
    for m in doc["macs_per_op"]:
        macs[m["op"]] = macs.get(m["op"], 0) + m["macs"]
    for o in doc["ops"]:
        click.echo(f"  {o['op']:<28} {o['version']:>3} {o['count']:>5} {macs.get(o['op'], 0):>12,}")
    click.echo(f"  total MACs {doc['macs']:,}; min_runtime_version {doc['min_runtime_version']}")
    if doc["labels"]:
        click.echo(f"  labels ({len(doc['labels'])}): {', '.join(doc['labels'][:12])}")
    if doc["preprocess"]:
        p = doc["preprocess"]
        click.echo(
            f"  preprocess: {p.get('kind')} {p.get('input_shape')} {p.get('color_mode', '')} "
            f"resize {p.get('resize', '-')} scale {p.get('scale', 1):.6g} offset {p.get('offset', 0)}"
        )
    if report is not None:
        click.echo(report.table())
        if any(r.status == targets.FAILS for r in report.rows):
            # Scripts can gate a deployment on the check: the model cannot run on the target.
            raise SystemExit(1)


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
@click.option("-k", "--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads.")
@click.option("--delegate", help="edgetpu, edgetpu:usb, edgetpu:pci or a delegate .so path.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per image.")
def predict(
    model: Path,
    images: tuple[Path, ...],
    top_k: int,
    threads: int | None,
    delegate: str | None,
    as_json: bool,
) -> None:
    """Classify image files (folders are walked) with a .tflite model: top-k labels per image."""
    from edgenn.predict import Classifier, expand_images

    classifier = Classifier(model, threads=threads, delegate=delegate)
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
    default="fashion-mnist",
    show_default=True,
    help="Data set whose test split scores accuracy (fashion-mnist, digits, a folder; none: skip).",
)
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Fashion-MNIST folder."
)
@click.option(
    "-n", "--runs", type=int, default=200, show_default=True, help="Counted runs per model."
)
@click.option("--warmup", type=int, default=10, show_default=True, help="Uncounted runs first.")
@click.option("--threads", type=int, help="Interpreter threads [default: the runtime's].")
@click.option(
    "--no-xnnpack", is_flag=True, help="LiteRT's reference kernels (bit-exact with TFLM)."
)
@click.option("--delegate", help="edgetpu, edgetpu:usb, edgetpu:pci or a delegate .so path.")
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
    from edgenn import bench as bench_mod

    options = bench_mod.BenchOptions(
        dataset=None if opts["dataset"] in ("none", "") else opts["dataset"],
        data_dir=str(opts["data_dir"]) if opts["data_dir"] else None,
        runs=opts["runs"],
        warmup=opts["warmup"],
        threads=opts["threads"],
        xnnpack=not opts["no_xnnpack"],
        delegate=opts["delegate"],
        accuracy_limit=opts["accuracy_limit"],
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
        _print_json(doc)
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


@main.command(
    epilog="""\b
Examples:
  edgenn firmware runs/fmnist-cnn/model_int8.tflite -o firmware/fmnist --name fmnist
  edgenn firmware mcu/model.tflite -o arduino/fmnist --layout arduino --arena-margin 20
  python -m firmware_export mcu/model.tflite -o firmware/fmnist
"""
)
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder to create."
)
@click.option("--name", help="C identifier prefix [default: the model file's name].")
@click.option(
    "--layout", type=click.Choice(["cmake", "arduino"]), default="cmake", show_default=True
)
@click.option(
    "--arena-margin",
    type=float,
    default=10.0,
    show_default=True,
    help="Percent added to the measured minimum tensor arena.",
)
@click.option(
    "--dataset",
    default="fashion-mnist",
    show_default=True,
    help="Test images that verify TFLM against LiteRT (random inputs if they do not fit; none).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def firmware(model: Path, output: Path, **opts: Any) -> None:
    """Write TFLite Micro sources for an int8 model, verified on the host (bit-exact, compiled)."""
    from firmware_export.generate import export_firmware, summary

    result = export_firmware(
        model,
        output,
        name=opts["name"],
        layout=opts["layout"],
        arena_margin=opts["arena_margin"],
        overwrite=opts["overwrite"],
        dataset=None if opts["dataset"] in ("none", "") else opts["dataset"],
    )
    if opts["as_json"]:
        _print_json(summary(result))
        return
    r = result
    click.echo(f"{r.output}: {r.layout} sources for {r.name} ({len(r.files)} files)")
    click.echo(f"  flash {r.flash_bytes:,} B (model)   RAM {r.ram_bytes:,} B (tensor arena)")
    click.echo(
        f"  arena: measured minimum {r.arena_min_bytes:,} B + {r.arena_margin_percent:g}% = "
        f"{r.arena_bytes:,} B; inputs and outputs ({r.io_bytes} B) live inside it"
    )
    click.echo(f"  ops: {', '.join(r.ops)}")
    for check in r.checks:
        click.echo(f"  verified: {check}")


@main.command(
    epilog="""\b
Examples:
  edgenn tag -m model.tflite ~/Pictures/holiday --recursive
  edgenn tag -m model.tflite photos/ -k 2 --threshold 0.3 --sidecar replace
  edgenn tag -m model.tflite photos/ --format csv -o tags.csv --json
"""
)
@click.option(
    "-m", "--model", type=click.Path(path_type=Path), required=True, help="The .tflite classifier."
)
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--recursive", is_flag=True, help="Walk sub-folders.")
@click.option("-k", "--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--threshold", type=float, default=0.5, show_default=True, help="Minimum score for a keyword."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["xmp", "json", "csv"]),
    default="xmp",
    show_default=True,
    help="XMP sidecars per photo, or one manifest for all.",
)
@click.option(
    "--sidecar",
    type=click.Choice(["ext", "replace"]),
    default="ext",
    show_default=True,
    help="ext: photo.jpg.xmp (darktable, digiKam); replace: photo.xmp (Lightroom).",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Manifest file for --format json/csv."
)
@click.option("--retag", is_flag=True, help="Tag photos this model tagged before again.")
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@click.option(
    "--workers", type=click.IntRange(min=1), help="Decoding threads [default: CPU count]."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def tag(photos: tuple[Path, ...], **opts: Any) -> None:
    """Tag photos with a model as XMP keywords (dc:subject, lr:hierarchicalSubject).

    Photos are never opened for writing; existing sidecars are merged. Exit code 0 when every
    photo was handled (tagged or already tagged), 1 when any failed.
    """
    from edgenn import tag as tag_mod

    files = tag_mod.find_photos(photos, opts["recursive"])
    summary, results = tag_mod.tag(
        opts["model"],
        files,
        top_k=opts["top_k"],
        threshold=opts["threshold"],
        fmt=opts["fmt"],
        sidecar=opts["sidecar"],
        retag=opts["retag"],
        dry_run=opts["dry_run"],
        output=opts["output"],
        workers=opts["workers"],
        progress=tag_mod.progress_printer(),
        warn=lambda line: click.echo(line, err=True),
    )
    if opts["as_json"]:
        _print_json(dataclasses.asdict(summary))
    else:
        if opts["dry_run"]:
            for r in results:
                if r.status == "tagged":
                    click.echo(
                        f"{r.photo}: would tag {', '.join(r.keywords) or '(no label over threshold)'}"
                    )
        labels = ", ".join(f"{k} {v}" for k, v in summary.per_label.items()) or "-"
        click.echo(
            f"{summary.photos} photos: {summary.tagged} tagged, {summary.skipped} skipped (already "
            f"tagged by this model), {summary.failed} failed; {summary.photos_per_second} photos/s"
        )
        click.echo(f"per label: {labels}")
    if summary.failed:
        raise SystemExit(1)


@main.command(
    epilog="""\b
Examples:
  edgenn bundle runs/fmnist-cnn/model_int8.tflite -o bundle-pi --target pi
  edgenn bundle pi/model.tflite -o bundle-legacy --target pi-legacy --service tag
"""
)
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder to create."
)
@click.option(
    "--target", type=click.Choice(["pi", "pi-legacy", "coral"]), default="pi", show_default=True
)
@click.option(
    "--service", type=click.Choice(["tag"]), help="Also write a systemd unit for this job."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bundle(
    models: tuple[Path, ...],
    output: Path,
    target: str,
    service: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Make a self-contained folder that installs and runs the model(s) on a Pi or a Coral."""
    from edgenn.bundle import make_bundle

    result = make_bundle(list(models), output, target, service, overwrite)
    if as_json:
        _print_json(dataclasses.asdict(result))
        return
    click.echo(f"{result.output}: bundle for {result.target} ({len(result.files)} files)")
    for m in result.models:
        click.echo(f"  {m['model']}: {m['size_bytes']:,} B; {m['check']}: {m['verdict']}")
    click.echo(f"  requirements: {', '.join(result.requirements)}")
    click.echo(
        f"  next: copy it to the device and run ./install.sh (or: edgenn deploy {result.output} USER@HOST)"
    )


@main.command(
    epilog="""\b
Examples:
  edgenn deploy bundle-pi pi@raspberrypi.local
  edgenn deploy bundle-pi pi@10.0.0.7:apps/classifier --run --ssh-option=-p --ssh-option=2222
"""
)
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.argument("destination")
@click.option("--run", is_flag=True, help="Start the service (or check edgenn runs) afterwards.")
@click.option("--ssh-option", "ssh_options", multiple=True, help="Extra ssh argument (repeatable).")
def deploy(bundle_dir: Path, destination: str, run: bool, ssh_options: tuple[str, ...]) -> None:
    """Copy a bundle to USER@HOST[:PATH] with rsync over ssh and run its install.sh there."""
    from edgenn.bundle import deploy as run_deploy

    result = run_deploy(bundle_dir, destination, run, list(ssh_options))
    click.echo(result.output.rstrip())
    click.echo(f"deployed to {result.destination}" + (" and started" if result.started else ""))


@main.command(
    epilog="""\b
Examples:
  edgenn camera -m model.tflite --source 0 --serve 127.0.0.1:8000
  edgenn camera -m model.tflite --source picamera2 --headless --smooth 5
  edgenn camera -m model.tflite --source clip.mkv --every-frame --headless --record out.avi
  edgenn camera -m model.tflite --source rtsp://192.168.1.20/stream --serve 0.0.0.0:8000
"""
)
@click.option(
    "-m", "--model", type=click.Path(path_type=Path), required=True, help="The .tflite classifier."
)
@click.option(
    "--source",
    default="0",
    show_default=True,
    help="Camera index, /dev/videoN, picamera2, a video file, an image folder or an rtsp:// / http:// URL.",
)
@click.option("-k", "--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--every-frame",
    is_flag=True,
    help="Classify every frame in order (files); default: newest frame only.",
)
@click.option(
    "--headless", is_flag=True, help="Print one JSON line per classified frame; no window."
)
@click.option(
    "--record",
    type=click.Path(path_type=Path),
    help="Write the annotated video (.avi, .mp4, .mkv).",
)
@click.option(
    "--serve", help="Serve a live page and MJPEG stream at HOST:PORT (default host 127.0.0.1)."
)
@click.option("--max-frames", type=int, help="Stop after N classified frames.")
@click.option("--duration", type=float, help="Stop after S seconds.")
@click.option(
    "--reconnect",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to retry a camera that stopped.",
)
@click.option(
    "--smooth",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Frames to smooth the label over.",
)
@click.option(
    "--smooth-mode", type=click.Choice(["majority", "mean"]), default="majority", show_default=True
)
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads.")
def camera(model: Path, **opts: Any) -> None:
    """Classify live camera frames: headless JSON lines, a window, a recording or a web view."""
    import os

    from edgenn.camera import CameraOptions, run_camera

    window = not opts["headless"] and bool(os.environ.get("DISPLAY"))
    options = CameraOptions(
        source=opts["source"],
        top_k=opts["top_k"],
        every_frame=opts["every_frame"],
        max_frames=opts["max_frames"],
        duration=opts["duration"],
        reconnect=opts["reconnect"],
        smooth=opts["smooth"],
        smooth_mode=opts["smooth_mode"] if opts["smooth"] > 1 else "none",
        record=opts["record"],
        serve=opts["serve"],
        window=window,
        threads=opts["threads"],
    )

    def serving(url: str) -> None:
        public = not url.startswith(("http://127.", "http://localhost", "http://[::1]"))
        warning = (
            " (listening on every interface: anyone on the network can watch)" if public else ""
        )
        click.echo(f"edgenn: web view at {url}{warning}", err=True)

    def printed(result) -> None:
        if opts["headless"]:
            click.echo(json.dumps(dataclasses.asdict(result)))
            sys.stdout.flush()

    summary = run_camera(
        model, options, on_result=printed, on_serving=serving if opts["serve"] else None
    )
    click.echo(
        f"edgenn: {summary.frames} frames in {summary.seconds:.1f}s ({summary.fps} fps, {summary.dropped} "
        f"dropped); stopped by {summary.stopped_by}",
        err=True,
    )
