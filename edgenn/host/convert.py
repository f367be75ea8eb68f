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
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import artifact, classify, optional, targets, tflite_model
from edgenn import datasets as data_mod
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_write_bytes, refuse_existing
from edgenn.host import models
from edgenn.host.tfutil import import_tensorflow, quiet_stderr
from edgenn.preprocess import PreprocessSpec
from edgenn.runtime import Runner

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
IO_TYPES = ("float", "int8", "uint8")
#: What each target gets when --quantize / --io are not given.
TARGET_DEFAULTS = {
    "cpu": ("int8", "float"),
    "gpu": ("fp16", "float"),  # what phone GPU delegates prefer: fp16 weights, float I/O
    "edgetpu": ("int8", "uint8"),
    "micro": ("int8", "int8"),
    "tflite-runtime-2.14": ("int8", "float"),
}
DEFAULT_CALIBRATION_SAMPLES = 300


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


def _convert_bytes(tf, keras_model, quantize: str, io_type: str, target: str, rep_data, verbose):
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if quantize in ("fp16", "dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "dynamic" and target == "tflite-runtime-2.14":
        # Per-channel dynamic-range dense layers are FULLY_CONNECTED v12, which tflite-runtime
        # 2.14 cannot load (it stops at v10); per-tensor quantization gives v9.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    if quantize == "int8":
        if rep_data is None:
            raise EdgennError(
                "int8 quantization needs calibration data from the training split, and this run "
                "has no data.json to rebuild it.",
                "Convert a run directory made by edgenn train, or use --quantize dynamic.",
            )
        converter.representative_dataset = lambda: ([x[None]] for x in rep_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io_type]
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
        pred = outputs[:, 0] * (spec.target_std or 1.0) + (spec.target_mean or 0.0)
        return float(np.mean((pred - y) ** 2))
    return classify.accuracy(outputs, y)


def convert(
    source: Path,
    output: Path | None = None,
    quantize: str | None = None,
    io_type: str | None = None,
    target: str = "cpu",
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    max_accuracy_drop: float = 1.0,
    overwrite: bool = False,
    verbose: bool = False,
    progress=None,
) -> ConvertResult:
    """Convert a trained model to .tflite, check its accuracy and its target.

    Args:
        source: Run directory or ``.keras`` file.
        output: The .tflite to write (default: ``model_<quantize>.tflite`` in the run directory).
        quantize: fp32, fp16, dynamic or int8 (default: the target's).
        io_type: float, int8 or uint8 input/output (int8 quantization only; default: target's).
        target: cpu, gpu, edgetpu, micro or tflite-runtime-2.14.
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
    if target not in targets.TARGETS:
        raise UsageError(
            f"Unknown target {target!r}; expected one of {', '.join(targets.TARGETS)}."
        )
    default_q, default_io = TARGET_DEFAULTS[target]
    quantize = quantize or default_q
    io_type = io_type or (default_io if quantize == "int8" else "float")
    if quantize not in PRECISIONS:
        raise UsageError(
            f"Unknown --quantize {quantize!r}; expected one of {', '.join(PRECISIONS)}."
        )
    if io_type not in IO_TYPES:
        raise UsageError(f"Unknown --io {io_type!r}; expected one of {', '.join(IO_TYPES)}.")
    if io_type != "float" and quantize != "int8":
        raise UsageError(
            f"--io {io_type} needs --quantize int8; a {quantize} model keeps float inputs and outputs."
        )
    if target in ("edgetpu", "micro") and quantize != "int8":
        raise UsageError(
            f"--target {target} needs a fully int8 model; received --quantize {quantize}. "
            f"Use: edgenn convert RUN --target {target}"
        )
    if calibration_samples < 1:
        raise UsageError(
            f"--calibration-samples must be at least 1; received {calibration_samples}."
        )
    src = resolve_source(Path(source))
    folder = src.model_path.parent
    output = Path(output) if output else folder / f"model_{quantize}.tflite"
    if output.suffix != ".tflite":
        raise UsageError(f"-o {output} should end in .tflite.")
    refuse_existing(output, overwrite)

    tf = import_tensorflow("edgenn convert", verbose)
    keras_model = models.load_keras_model(src.model_path)
    static = _static_batch_model(tf.keras, keras_model, src.spec)

    splits = data_mod.make_splits(src.data) if src.data is not None else None
    rep = None
    if quantize == "int8" and splits is not None:
        picked = data_mod.representative_sample(
            splits.x_train,
            splits.y_train,
            calibration_samples,
            seed=src.data.seed,
            task=splits.task,
        )
        rep = splits.model_inputs(picked)
    say(f"converting {src.model_path} to {quantize} ({io_type} I/O) for {target}")
    fp32_bytes = _convert_bytes(tf, static, "fp32", "float", target, None, verbose)
    model_bytes = (
        fp32_bytes
        if quantize == "fp32"
        else _convert_bytes(tf, static, quantize, io_type, target, rep, verbose)
    )
    facts = {"quantize": quantize, "io": io_type, "target": target, "source": str(src.model_path)}
    model_bytes = artifact.embed(model_bytes, src.labels, src.spec, **facts)
    # The fp32 reference carries the same metadata, so the size ratio compares weights and graph.
    fp32_size = len(artifact.embed(fp32_bytes, src.labels, src.spec, **facts))
    parsed = tflite_model.load(model_bytes)

    float_score = converted_score = None
    n_test = 0
    if splits is not None:
        say(f"scoring on the test split ({len(splits.y_test)} examples) with the device runtime")
        x_test = splits.model_inputs(splits.x_test)
        float_out = keras_model.predict(x_test, batch_size=256, verbose=0)
        runner = Runner(parsed)
        tflite_out = runner.predict(x_test)
        float_score = _score(splits.task, float_out, splits.y_test, src.spec)
        converted_score = _score(splits.task, tflite_out, splits.y_test, src.spec)
        n_test = len(splits.y_test)
    classification = splits is not None and splits.task == "classification"
    drop = (float_score - converted_score) * 100 if classification else None
    if drop is not None and drop > max_accuracy_drop:
        raise EdgennError(
            f"{quantize} conversion lost {drop:.2f} accuracy points ({float_score:.2%} float -> "
            f"{converted_score:.2%}), more than --max-accuracy-drop {max_accuracy_drop}; "
            "nothing was written.",
            "Try --calibration-samples 1000, another --quantize, or raise --max-accuracy-drop.",
        )
    say(f"checking the {target} target")
    report = targets.check(parsed, target, compile=False)
    failing = [r for r in report.rows if r.status == targets.FAILS]
    if failing:
        raise EdgennError(
            f"The converted model cannot run on {target}; nothing was written. {report.verdict}"
        )
    artifact.check_companions_free(output.parent, src.labels, src.spec, overwrite)
    atomic_write_bytes(output, model_bytes)
    artifact.write_companions(output.parent, src.labels, src.spec)
    if target == "edgetpu":
        # With the file in place the real compiler (when installed) can write *_edgetpu.tflite.
        report = targets.check(tflite_model.load(output), target)
    return ConvertResult(
        output=str(output),
        quantize=quantize,
        io=io_type,
        target=target,
        size_bytes=len(model_bytes),
        fp32_size_bytes=fp32_size,
        size_ratio=round(len(model_bytes) / fp32_size, 4),
        float_accuracy=float_score if classification else None,
        converted_accuracy=converted_score if classification else None,
        accuracy_drop_points=round(drop, 3) if drop is not None else None,
        float_mse=float_score if splits is not None and not classification else None,
        converted_mse=converted_score if splits is not None and not classification else None,
        test_examples=n_test,
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
    opset = None
    try:
        import onnx

        opset = int(onnx.load_from_string(payload).opset_import[0].version)
    except Exception:  # noqa: BLE001 - the opset is informative only
        pass
    return OnnxResult(str(output), len(payload), opset)
