"""[host] Keras -> .tflite in every precision, checked for accuracy and for its target.

``convert`` loads a run directory (or a ``.keras`` file with ``labels.txt``, ``preprocess.json``
and ``data.json`` beside it), pins the batch axis to 1 so that no SHAPE / STRIDED_SLICE / PACK ops
appear, converts, embeds the labels and preprocessing in the model's metadata, scores the result
on the test split with the device runtime (the same code a Pi runs), and writes the file only when
the accuracy drop is within ``max_accuracy_drop``. The target check then says what runs where.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import artifact, classify, optional, targets, tflite_model
from edgenn import datasets as data_mod
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_write_bytes, refuse_existing
from edgenn.host import models
from edgenn.host.tfutil import import_tensorflow, quiet_stderr
from edgenn.precision import (
    DYNAMIC,
    FLOAT_IO,
    FP16,
    FP32,
    INT8,
    INT8_IO,
    IO_TYPES,
    PRECISIONS,
    UINT8_IO,
)
from edgenn.preprocess import PreprocessSpec, output_to_target
from edgenn.runtime import Runner

#: ``edgenn convert --format``: a .tflite for LiteRT, or the float model as ONNX (to compare).
TFLITE = "tflite"
ONNX = "onnx"
FORMATS = (TFLITE, ONNX)
DEFAULT_CALIBRATION_SAMPLES = 300
#: Accuracy points a conversion may lose before it is refused (nothing is written).
DEFAULT_MAX_ACCURACY_DROP = 1.0


@dataclasses.dataclass
class ConvertResult:
    """What :func:`convert` returns (``--json`` prints it).

    Attributes:
        output: The .tflite written.
        quantize: Precision.
        io: Input/output type.
        target: Target checked.
        size_bytes: File size.
        fp32_size_bytes: Size of the same model converted to fp32.
        size_ratio: ``size_bytes / fp32_size_bytes``.
        float_accuracy: Keras model on the test split (or ``float_mse`` for regression).
        converted_accuracy: The .tflite with the device runtime on the test split.
        accuracy_drop_points: ``(float - converted) * 100``.
        test_examples: Test split size.
        calibration_samples: Training examples used to calibrate int8 (0 otherwise).
        ops: ``[{"op", "version", "count"}]``.
        min_runtime_version: From the model's metadata.
        check: The target check's report.
    """

    output: str
    quantize: str
    io: str
    target: str
    size_bytes: int
    fp32_size_bytes: int
    size_ratio: float
    float_accuracy: float | None
    converted_accuracy: float | None
    accuracy_drop_points: float | None
    float_mse: float | None
    converted_mse: float | None
    test_examples: int
    calibration_samples: int
    ops: list[dict[str, Any]]
    min_runtime_version: str | None
    check: dict[str, Any]


@dataclasses.dataclass
class Source:
    """A model and what travels with it."""

    model_path: Path
    labels: list[str]
    spec: PreprocessSpec
    data: data_mod.DataSpec | None


def resolve_source(source: Path) -> Source:
    """Find the Keras model, labels, preprocessing and split recipe of a run directory or file.

    Args:
        source: A run directory, or a ``.keras`` file in one.

    Returns:
        The source.

    Raises:
        EdgennError: Something the conversion needs is missing.
    """
    source = Path(source)
    folder = source if source.is_dir() else source.parent
    model_path = folder / "model.keras" if source.is_dir() else source
    if not source.exists():
        raise EdgennError(f"{source} does not exist; expected a run directory or a .keras file.")
    if model_path.suffix != ".keras" or not model_path.is_file():
        raise EdgennError(
            f"{source} is not a run directory or a .keras file (no {model_path.name}).",
            "Pass the directory that edgenn train wrote.",
        )
    info = artifact.read_companions(folder, require_labels=True)
    labels, spec = info.labels, info.spec
    data = data_mod.load_data_spec(folder) if (folder / data_mod.DATA_FILE).is_file() else None
    return Source(model_path, labels, spec, data)


def _static_batch_model(keras, model, spec: PreprocessSpec):
    """The same layers behind a (1, ...) input: Flatten then lowers to one RESHAPE."""
    inputs = keras.Input(batch_shape=(1, *spec.input_shape), name="input")
    return keras.Model(inputs, model(inputs, training=False), name=model.name)


def _convert_bytes(
    tf, keras_model, quantize: str, io_type: str, target: targets.Target, rep_data, verbose: bool
) -> bytes:
    """One TFLiteConverter run; the converter's own output is kept off the terminal."""
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if quantize in (FP16, DYNAMIC, INT8):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == FP16:
        converter.target_spec.supported_types = [tf.float16]
    if quantize == DYNAMIC and target.per_tensor_dense_layers:
        # See the target's record: its runtime cannot load per-channel dense layers.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    if quantize == INT8:
        if rep_data is None:
            raise EdgennError(
                "int8 quantization needs calibration data from the training split, and this run "
                "has no data.json to rebuild it.",
                "Convert a run directory made by edgenn train, or use --quantize dynamic.",
            )
        converter.representative_dataset = lambda: ([x[None]] for x in rep_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {FLOAT_IO: tf.float32, INT8_IO: tf.int8, UINT8_IO: tf.uint8}[io_type]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    # The converter prints a "Saved artifact" block to stdout and C++ logs to fd 2.
    with quiet_stderr(not verbose), contextlib.redirect_stdout(io.StringIO()):
        try:
            return converter.convert()
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            message = " ".join(str(exc).split())[:400]
            raise EdgennError(
                f"The TFLite converter failed for --quantize {quantize} --io {io_type}: {message}"
            ) from None


def _score(task: str, outputs: np.ndarray, y: np.ndarray, spec: PreprocessSpec) -> float:
    if task == "regression":
        pred = output_to_target(outputs[:, 0], spec)
        return float(np.mean((pred - y) ** 2))
    return classify.accuracy(outputs, y)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one conversion makes: for which target, at which precision, with which I/O type."""

    target: targets.Target
    quantize: str
    io: str


@dataclasses.dataclass
class _Scores:
    """The Keras model and the converted one on the test split (``task`` None: not scored)."""

    task: str | None = None
    float_score: float | None = None
    converted_score: float | None = None
    examples: int = 0

    @property
    def classification(self) -> bool:
        return self.task == "classification"

    @property
    def regression(self) -> bool:
        return self.task is not None and not self.classification

    @property
    def drop(self) -> float | None:
        """Accuracy points lost (classification only)."""
        if not self.classification:
            return None
        return (self.float_score - self.converted_score) * 100


def convert(
    source: Path,
    output: Path | None = None,
    quantize: str | None = None,
    io_type: str | None = None,
    target: str = targets.DEFAULT_TARGET,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    overwrite: bool = False,
    verbose: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ConvertResult:
    """Convert a trained model to .tflite, check its accuracy and its target.

    Args:
        source: Run directory or ``.keras`` file.
        output: The .tflite to write (default: ``model_<quantize>.tflite`` in the run directory).
        quantize: A precision of :data:`edgenn.precision.PRECISIONS` (default: the target's).
        io_type: Input/output type of :data:`edgenn.precision.IO_TYPES` (int8 quantization
            only; default: the target's).
        target: A name of :data:`edgenn.targets.TARGETS`.
        calibration_samples: Training examples that calibrate int8 ranges (stratified).
        max_accuracy_drop: Fail, writing nothing, when accuracy drops more (points).
        overwrite: Replace an existing output.
        verbose: Show TensorFlow's logs.
        progress: Optional callable ``progress(message)`` for status lines.

    Returns:
        The result.

    Raises:
        UsageError: Bad option combination.
        EdgennError: Missing inputs, a failed conversion or too large an accuracy drop.
    """
    say = progress or (lambda message: None)
    plan = _plan(target, quantize, io_type, calibration_samples)
    src = resolve_source(Path(source))
    output = _output_path(output, src, plan.quantize, overwrite)
    tf = import_tensorflow("edgenn convert", verbose)
    keras_model = models.load_keras_model(src.model_path)
    splits = data_mod.make_splits(src.data) if src.data is not None else None
    rep = _calibration_inputs(splits, src, plan.quantize, calibration_samples)
    say(f"converting {src.model_path} to {plan.quantize} ({plan.io} I/O) for {target}")
    model_bytes, fp32_size = _convert_and_embed(tf, keras_model, src, plan, rep, verbose)
    parsed = tflite_model.load(model_bytes)
    scores = _score_on_test(keras_model, parsed, splits, src.spec, say)
    _refuse_accuracy_drop(scores, plan.quantize, max_accuracy_drop)
    say(f"checking the {target} target")
    report = _check_target(parsed, plan.target)
    artifact.check_companions_free(output.parent, src.labels, src.spec, overwrite)
    atomic_write_bytes(output, model_bytes)
    artifact.write_companions(output.parent, src.labels, src.spec)
    if plan.target.recheck_after_write:
        report = plan.target.run(tflite_model.load(output))
    return _result(output, plan, model_bytes, fp32_size, parsed, scores, rep, report)


def _plan(target: str, quantize: str | None, io_type: str | None, samples: int) -> _Plan:
    """The target's record, and the precision and I/O type (the target's defaults if not given).

    Raises:
        UsageError: An unknown name, or a combination the target or the converter refuses.
    """
    record = targets.lookup(target)
    quantize = quantize or record.default_precision
    io_type = io_type or record.io_for(quantize)
    if quantize not in PRECISIONS:
        raise UsageError(
            f"Unknown --quantize {quantize!r}; expected one of {', '.join(PRECISIONS)}."
        )
    if io_type not in IO_TYPES:
        raise UsageError(f"Unknown --io {io_type!r}; expected one of {', '.join(IO_TYPES)}.")
    if io_type != FLOAT_IO and quantize != INT8:
        raise UsageError(
            f"--io {io_type} needs --quantize {INT8}; a {quantize} model keeps float inputs and outputs."
        )
    if quantize not in record.allowed_precisions:
        raise UsageError(
            f"--target {target} needs a fully {'/'.join(record.allowed_precisions)} model; "
            f"received --quantize {quantize}. Use: edgenn convert RUN --target {target}"
        )
    if samples < 1:
        raise UsageError(f"--calibration-samples must be at least 1; received {samples}.")
    return _Plan(record, quantize, io_type)


def _output_path(output: Path | None, src: Source, quantize: str, overwrite: bool) -> Path:
    """The .tflite to write, refused if it exists and ``overwrite`` is off."""
    output = Path(output) if output else src.model_path.parent / f"model_{quantize}.tflite"
    if output.suffix != ".tflite":
        raise UsageError(f"-o {output} should end in .tflite.")
    refuse_existing(output, overwrite)
    return output


def _calibration_inputs(
    splits: data_mod.Splits | None, src: Source, quantize: str, samples: int
) -> np.ndarray | None:
    """Model inputs of a stratified sample of the training split (int8 only)."""
    if quantize != INT8 or splits is None:
        return None
    picked = data_mod.representative_sample(
        splits.x_train, splits.y_train, samples, seed=src.data.seed, task=splits.task
    )
    return splits.model_inputs(picked)


def _convert_and_embed(
    tf, keras_model, src: Source, plan: _Plan, rep: np.ndarray | None, verbose: bool
) -> tuple[bytes, int]:
    """The converted model with its labels and recipe embedded, and the fp32 model's size."""
    static = _static_batch_model(tf.keras, keras_model, src.spec)
    fp32_bytes = _convert_bytes(tf, static, FP32, FLOAT_IO, plan.target, None, verbose)
    model_bytes = (
        fp32_bytes
        if plan.quantize == FP32
        else _convert_bytes(tf, static, plan.quantize, plan.io, plan.target, rep, verbose)
    )
    facts = {
        "quantize": plan.quantize,
        "io": plan.io,
        "target": plan.target.name,
        "source": str(src.model_path),
    }
    model_bytes = artifact.embed(model_bytes, src.labels, src.spec, **facts)
    # The fp32 reference carries the same metadata, so the size ratio compares weights and graph.
    fp32_size = len(artifact.embed(fp32_bytes, src.labels, src.spec, **facts))
    return model_bytes, fp32_size


def _score_on_test(
    keras_model,
    parsed: tflite_model.TFLiteFile,
    splits: data_mod.Splits | None,
    spec: PreprocessSpec,
    say: Callable[[str], None],
) -> _Scores:
    """Keras and the device runtime (the code a Pi runs) on the test split, when there is one."""
    if splits is None:
        return _Scores()
    say(f"scoring on the test split ({len(splits.y_test)} examples) with the device runtime")
    x_test = splits.model_inputs(splits.x_test)
    float_out = keras_model.predict(x_test, batch_size=256, verbose=0)
    tflite_out = Runner(parsed).predict(x_test)
    return _Scores(
        task=splits.task,
        float_score=_score(splits.task, float_out, splits.y_test, spec),
        converted_score=_score(splits.task, tflite_out, splits.y_test, spec),
        examples=len(splits.y_test),
    )


def _refuse_accuracy_drop(scores: _Scores, quantize: str, max_accuracy_drop: float) -> None:
    """Stop before anything is written when the conversion lost too much accuracy."""
    drop = scores.drop
    if drop is not None and drop > max_accuracy_drop:
        raise EdgennError(
            f"{quantize} conversion lost {drop:.2f} accuracy points ({scores.float_score:.2%} "
            f"float -> {scores.converted_score:.2%}), more than --max-accuracy-drop "
            f"{max_accuracy_drop}; nothing was written.",
            "Try --calibration-samples 1000, another --quantize, or raise --max-accuracy-drop.",
        )


def _check_target(parsed: tflite_model.TFLiteFile, target: targets.Target) -> targets.TargetReport:
    """The target's check on the bytes in memory; refuses a model that cannot run there at all."""
    report = target.run(parsed, **target.unwritten_options)
    if any(r.status == targets.FAILS for r in report.rows):
        raise EdgennError(
            f"The converted model cannot run on {target.name}; nothing was written. {report.verdict}"
        )
    return report


def _result(
    output: Path,
    plan: _Plan,
    model_bytes: bytes,
    fp32_size: int,
    parsed: tflite_model.TFLiteFile,
    scores: _Scores,
    rep: np.ndarray | None,
    report: targets.TargetReport,
) -> ConvertResult:
    """The figures ``--json`` prints: sizes, scores, ops and the target's report."""
    drop = scores.drop
    return ConvertResult(
        output=str(output),
        quantize=plan.quantize,
        io=plan.io,
        target=plan.target.name,
        size_bytes=len(model_bytes),
        fp32_size_bytes=fp32_size,
        size_ratio=round(len(model_bytes) / fp32_size, 4),
        float_accuracy=scores.float_score if scores.classification else None,
        converted_accuracy=scores.converted_score if scores.classification else None,
        accuracy_drop_points=round(drop, 3) if drop is not None else None,
        float_mse=scores.float_score if scores.regression else None,
        converted_mse=scores.converted_score if scores.regression else None,
        test_examples=scores.examples,
        calibration_samples=len(rep) if rep is not None else 0,
        ops=[{"op": n, "version": v, "count": c} for n, v, c in parsed.op_counts],
        min_runtime_version=parsed.min_runtime_version,
        check=report.to_dict(),
    )


@dataclasses.dataclass
class OnnxResult:
    """What :func:`export_onnx` returns."""

    output: str
    size_bytes: int
    opset: int | None


def export_onnx(
    source: Path, output: Path, overwrite: bool = False, verbose: bool = False
) -> OnnxResult:
    """Export a run's Keras model to ONNX (Keras' own exporter, through tf2onnx).

    ONNX Runtime is what many Raspberry Pi users would pick instead of LiteRT, so ``edgenn bench``
    can put the two side by side. The model's companions (:mod:`edgenn.artifact`) are written beside it.

    Args:
        source: Run directory or ``.keras`` file.
        output: The ``.onnx`` file to write.
        overwrite: Replace an existing output.
        verbose: Show TensorFlow's and tf2onnx's logs.

    Returns:
        The result.

    Raises:
        MissingDependencyError: tf2onnx / onnx are not installed.
        EdgennError: The export failed.
    """
    src = resolve_source(Path(source))
    output = Path(output)
    if output.suffix != ".onnx":
        raise UsageError(f"-o {output} should end in .onnx for --format onnx.")
    refuse_existing(output, overwrite)
    artifact.check_companions_free(output.parent, src.labels, src.spec, overwrite)
    for module in ("tf2onnx", "onnx"):
        if not optional.available(module):
            raise optional.missing(module, "ONNX export")
    import_tensorflow("edgenn convert --format onnx", verbose)
    model = models.load_keras_model(src.model_path)
    # Keras exports only a model that has been called once.
    model.predict(np.zeros((1, *src.spec.input_shape), np.float32), verbose=0)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        with quiet_stderr(not verbose), contextlib.redirect_stdout(io.StringIO()):
            model.export(str(tmp), format="onnx", verbose=verbose)
        payload = tmp.read_bytes()
    except Exception as exc:  # noqa: BLE001 - tf2onnx raises many types
        raise EdgennError(f"ONNX export failed: {' '.join(str(exc).split())[:300]}") from None
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_bytes(output, payload)
    artifact.write_companions(output.parent, src.labels, src.spec)
    onnx = optional.require("onnx", "ONNX export")
    opset = None
    try:
        opset = int(onnx.load_from_string(payload).opset_import[0].version)
    except Exception:  # noqa: BLE001 - the opset is informative only
        pass
    return OnnxResult(str(output), len(payload), opset)
