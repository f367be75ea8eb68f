"""``edgenn convert`` and ``edgenn inspect``: a run to a .tflite, and what is in one."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from edgenn import quantization, targets
from edgenn.cli.base import int_list, main, print_json
from edgenn.errors import EdgennError
from edgenn.host.convert import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_MAX_ACCURACY_DROP,
    FORMATS,
    ONNX,
    TFLITE,
    ConvertResult,
)
from edgenn.precision import FLOAT_IO, INT8, IO_TYPES

# Help texts built from the target records, so that a new target or default shows up by itself.
TARGET_LIST = "; ".join(f"{t.name}: {t.help}" for t in targets.REGISTRY.values())
QUANTIZE_HELP = (
    "Precision [default: the target's: {}]. {}: the fallback ladder {}, writing the first step "
    "within --max-accuracy-drop ({} keeps the worst ops in float; targets that need full int8 "
    "try int8 only)."
).format(
    ", ".join(f"{t.name} {t.default_precision}" for t in targets.REGISTRY.values()),
    quantization.AUTO,
    " -> ".join(quantization.LADDER),
    quantization.INT8_MIXED,
)
IO_HELP = f"Input/output type of an {INT8} model [default: {{}}].".format(
    ", ".join(
        [f"{t.name} {t.default_io}" for t in targets.REGISTRY.values() if t.default_io != FLOAT_IO]
        + [f"else {FLOAT_IO}"]
    )
)


@main.command(
    epilog="""\b
Examples:
  edgenn convert runs/fmnist-cnn --quantize int8 -o models/fmnist-int8.tflite
  edgenn convert runs/fmnist-cnn --target edgetpu -o coral/model.tflite
  edgenn convert runs/fmnist-cnn --target micro -o mcu/model.tflite
  edgenn convert runs/fmnist-mlp --quantize dynamic --target tflite-runtime-2.14 -o pi/mlp.tflite
  edgenn convert runs/fmnist-cnn --format onnx -o onnx/fmnist-cnn.onnx
  edgenn convert runs/fmnist-mlp --quantize auto --report --json
  edgenn convert runs/fmnist-cnn --target micro --calibration-samples 100,500,2000
"""
)
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--quantize", type=click.Choice(quantization.QUANTIZE_CHOICES), help=QUANTIZE_HELP)
@click.option("--io", "io_type", type=click.Choice(IO_TYPES), help=IO_HELP)
@click.option(
    "--target",
    type=click.Choice(targets.TARGETS),
    default=targets.DEFAULT_TARGET,
    show_default=True,
    help=f"Where the model will run. {TARGET_LIST}.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=TFLITE,
    show_default=True,
    help=f"{ONNX}: export the float model for ONNX Runtime instead (to compare in edgenn bench).",
)
@click.option(
    "--calibration-samples",
    default=str(DEFAULT_CALIBRATION_SAMPLES),
    callback=int_list,
    metavar="N[,N...]",
    show_default=True,
    help="Training examples (stratified) that calibrate int8 ranges; a list such as 100,500,2000 "
    "tries each in turn and keeps the first within --max-accuracy-drop.",
)
@click.option(
    "--max-accuracy-drop",
    type=float,
    default=DEFAULT_MAX_ACCURACY_DROP,
    show_default=True,
    help="Fail, writing nothing, when accuracy drops more (points).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="The .tflite to write [default: RUN/model_<quantize>.tflite].",
)
@click.option(
    "--report",
    is_flag=True,
    help=f"Also write {quantization.REPORT_JSON} and {quantization.REPORT_PNG} beside the model: "
    "every op's error against the float model, worst first, and where it enters.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output (and report).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
def convert(**opts: Any) -> None:
    """Convert a trained run to .tflite, score it on the test split and check the target."""
    from edgenn.host.convert import convert as run_convert

    if opts["fmt"] == ONNX:
        _export_onnx(opts)
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
        report=opts["report"],
    )
    if opts["as_json"]:
        print_json(dataclasses.asdict(result))
    else:
        _print_conversion(result)


def _export_onnx(opts: dict[str, Any]) -> None:
    """``--format onnx``: the float model for ONNX Runtime."""
    from edgenn.host.convert import export_onnx

    if opts["output"] is None:
        raise click.UsageError(f"--format {ONNX} needs -o MODEL.onnx")
    if opts["report"]:
        raise click.UsageError(f"--report compares a quantized .tflite; --format {ONNX} has none")
    exported = export_onnx(opts["source"], opts["output"], opts["overwrite"], opts["verbose"])
    if opts["as_json"]:
        print_json(dataclasses.asdict(exported))
    else:
        click.echo(f"{exported.output}: ONNX opset {exported.opset}, {exported.size_bytes:,} B")


def _print_conversion(r: ConvertResult) -> None:
    """Sizes, scores, ops and the target's table, for people."""
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
    if len(r.ladder) > 1:
        _print_ladder(r.ladder)
    click.echo(f"  {r.decision}")
    if r.report:
        click.echo(f"  per-layer report: {r.report} ({r.report_seconds:.2f} s)")
    click.echo(
        targets.TargetReport(
            **{**r.check, "rows": [targets.OpRow(**row) for row in r.check["rows"]]}
        ).table()
    )


def _print_ladder(ladder: list[dict[str, Any]]) -> None:
    """The conversions tried, one line each."""
    click.echo(f"  {'step':<44} {'accuracy':>9} {'drop':>7} {'size B':>10} {'latency ms':>11}")
    for step in ladder:
        label = step["precision"]
        if step["kept_float"]:
            label += f" (ops {', '.join(str(k['index']) for k in step['kept_float'])} in float)"
        elif step["calibration_samples"]:
            label += f" ({step['calibration_samples']} samples)"
        acc = f"{step['accuracy']:.2%}" if step["accuracy"] is not None else "-"
        drop = f"{step['drop_points']:+.2f}" if step["drop_points"] is not None else "-"
        lat = f"{step['latency_ms']:.4f}" if step["latency_ms"] is not None else "-"
        mark = " <- written" if step["chosen"] else ""
        click.echo(
            f"  {label[:44]:<44} {acc:>9} {drop:>7} {step['size_bytes']:>10,} {lat:>11}{mark}"
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
@click.option(
    "--target",
    type=click.Choice(targets.TARGETS),
    help=f"Also check what runs on this target. {TARGET_LIST}.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def inspect(model: Path, target: str | None, as_json: bool) -> None:
    """Show a .tflite model's inputs, outputs, ops, size, MACs and metadata.

    With --target, also check what runs on that target; the exit code is 1 when the model cannot
    run there at all (0 when it runs, fully or partly).
    """
    from edgenn import artifact, tflite_model

    parsed = tflite_model.load(model)
    doc = artifact.describe(parsed)
    report = targets.check(parsed, target) if target else None
    try:
        stored = quantization.load_report(model)
    except EdgennError as exc:
        # A damaged report beside the model must not hide the model's own description.
        stored = {"ops": [], "error": str(exc)}
    if as_json:
        if report is not None:
            doc["check"] = report.to_dict()
        if stored is not None:
            doc["quantization"] = quantization.summary(stored)
        print_json(doc)
        return
    _print_description(model, doc)
    if stored is not None:
        _print_quantization(quantization.summary(stored))
    if report is not None:
        click.echo(report.table())
        if any(r.status == targets.FAILS for r in report.rows):
            # Scripts can gate a deployment on the check: the model cannot run on the target.
            raise SystemExit(1)


def _print_description(model: Path, doc: dict[str, Any]) -> None:
    """What is in a .tflite (:func:`edgenn.artifact.describe`), for people."""
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


def _print_quantization(summary: dict[str, Any]) -> None:
    """The stored per-layer report's worst ops (``quantization.json`` beside the model)."""
    if "error" in summary:
        click.echo(f"  {quantization.REPORT_JSON}: unreadable: {summary['error']}")
        return
    analysed = summary["precision"] or "quantized"
    written = summary["written_precision"]
    note = f"; the file written is {written}" if written and written != analysed else ""
    stale = " (STALE: it describes another or an older file)" if summary["stale"] else ""
    click.echo(
        f"  {quantization.REPORT_JSON}{stale}: {analysed} vs float on {summary['samples']} "
        f"examples{note}; output SNR {_db(summary['output_snr_db'])}"
    )
    for op in summary["worst"]:
        click.echo(
            f"    op {op['index']:>3} {op['op']:<20} SNR {_db(op['snr_db']):>10} "
            f"cosine {op['cosine'] if op['cosine'] is not None else '-'}  {op['origin']}"
        )
    for remedy in summary["remedies"]:
        click.echo(f"  remedy: {remedy}")


def _db(value: float | None) -> str:
    return "identical" if value is None else f"{value:.1f} dB"
