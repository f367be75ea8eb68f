"""[host] Keras -> .tflite in every precision, checked for accuracy and for its target.

``convert`` loads a run directory (or a ``.keras`` file with ``labels.txt``, ``preprocess.json``
and ``data.json`` beside it), pins the batch axis to 1 so that no SHAPE / STRIDED_SLICE / PACK ops
appear, converts, embeds the labels and preprocessing in the model's metadata, scores the result
on the test split with the device runtime (the same code a Pi runs), and writes the file only when
the accuracy drop is within ``max_accuracy_drop``. ``quantize="auto"`` climbs the fallback ladder
(:mod:`edgenn.host.ladder`) instead of converting once; ``report=True`` adds the per-layer
comparison (:mod:`edgenn.quantization`) beside the model. The target check then says what runs
where.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import artifact, classify, optional, quantization, targets, tflite_model
from edgenn import datasets as data_mod
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_write_bytes, refuse_existing
from edgenn.host import ladder, models
from edgenn.host.tfutil import import_tensorflow, quiet_stderr
from edgenn.precision import (
    DYNAMIC,
    FLOAT_IO,
    FP16,
    FP32,
    INT8,
    INT8_IO,
    IO_TYPES,
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
#: Batch-1 inferences timed (after a warm-up) for each ladder step's latency figure.
LATENCY_RUNS = 200


@dataclasses.dataclass
class ConvertResult:
    """What :func:`convert` returns (``--json`` prints it).

    Attributes:
        output: The .tflite written.
        quantize: Precision of the model written (``int8-mixed``: int8 with some ops in float).
        io: Input/output type.
        target: Target checked.
        size_bytes: File size.
        fp32_size_bytes: Size of the same model converted to fp32 (None with ``compare=False``).
        size_ratio: ``size_bytes / fp32_size_bytes`` (None with ``compare=False``).
        float_accuracy: Keras model on the test split (or ``float_mse`` for regression).
        converted_accuracy: The .tflite with the device runtime on the test split.
        accuracy_drop_points: ``(float - converted) * 100``.
        test_examples: Test split size.
        calibration_samples: Training examples used to calibrate int8 (0 otherwise).
        ops: ``[{"op", "version", "count"}]``.
        min_runtime_version: From the model's metadata.
        check: The target check's report.
        ladder: Every conversion tried, in order (one for a plain conversion): ``precision``,
            ``accuracy``, ``drop_points``, ``size_bytes``, ``chosen``, ``latency_ms``,
            ``calibration_samples`` and ``kept_float`` (ops kept in float).
        decision: Which step was written, why, and at what size and latency cost.
        report: The ``quantization.json`` written (``report=True``).
        report_seconds: What the per-layer comparison took.
    """

    output: str
    quantize: str
    io: str
    target: str
    size_bytes: int
    fp32_size_bytes: int | None
    size_ratio: float | None
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
    ladder: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    decision: str = ""
    report: str | None = None
    report_seconds: float | None = None


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


def _no_calibration_data() -> EdgennError:
    return EdgennError(
        "int8 quantization needs calibration data from the training split, and this run "
        "has no data.json to rebuild it.",
        "Convert a run directory made by edgenn train, or use --quantize dynamic.",
    )


def _converter(tf, keras_model, quantize: str, target: targets.Target, rep_data):
    """A TFLiteConverter set up for one precision (int8: calibrated on ``rep_data``)."""
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
            raise _no_calibration_data()
        converter.representative_dataset = lambda: ([x[None]] for x in rep_data)
    return converter


@contextlib.contextmanager
def _converter_errors(what: str, verbose: bool) -> Iterator[None]:
    """The converter's own output kept off the terminal; its failures as one-line errors."""
    # The converter prints a "Saved artifact" block to stdout and C++ logs to fd 2.
    with quiet_stderr(not verbose), contextlib.redirect_stdout(io.StringIO()):
        try:
            yield
        except EdgennError:
            raise
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            message = " ".join(str(exc).split())[:400]
            raise EdgennError(f"The TFLite converter failed for {what}: {message}") from None


def _convert_bytes(
    tf, keras_model, quantize: str, io_type: str, target: targets.Target, rep_data, verbose: bool
) -> bytes:
    """One TFLiteConverter run; the converter's own output is kept off the terminal."""
    converter = _converter(tf, keras_model, quantize, target, rep_data)
    if quantize == INT8:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {FLOAT_IO: tf.float32, INT8_IO: tf.int8, UINT8_IO: tf.uint8}[io_type]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    with _converter_errors(f"--quantize {quantize} --io {io_type}", verbose):
        return converter.convert()


def _score(task: str, outputs: np.ndarray, y: np.ndarray, spec: PreprocessSpec) -> float:
    if task == "regression":
        pred = output_to_target(outputs[:, 0], spec)
        return float(np.mean((pred - y) ** 2))
    return classify.accuracy(outputs, y)


def _latency_ms(parsed: tflite_model.TFLiteFile, x: np.ndarray) -> float:
    """Median batch-1 latency with the device runtime's defaults (XNNPACK on), in ms."""
    runner = Runner(parsed)
    q = runner.quantize_input(x)
    for _ in range(LATENCY_RUNS // 10):
        runner.set_input(q)
        runner.invoke()
    times = []
    for _ in range(LATENCY_RUNS):
        runner.set_input(q)
        start = time.perf_counter()
        runner.invoke()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 5)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one conversion makes: for which target, the steps to try, with which I/O type.

    ``quantize`` is what was asked for (a precision or ``auto``); ``steps`` the precisions to
    try in order (one, or the target's ladder for ``auto``).
    """

    target: targets.Target
    quantize: str
    io: str
    steps: tuple[str, ...]


class _Session:
    """One conversion's shared work, and each candidate the ladder asks for.

    It holds the batch-1 Keras model, the splits, the fp32 reference (the report's float side and
    the size ratio's denominator) and the Keras model's score, and makes and analyses candidates
    (:class:`edgenn.host.ladder.Maker`).
    """

    def __init__(
        self, tf, src: Source, plan: _Plan, verbose: bool, say, compare: bool = True
    ) -> None:
        self.tf, self.src, self.plan, self.verbose, self.say = tf, src, plan, verbose, say
        self.keras_model = models.load_keras_model(src.model_path)
        self.static = _static_batch_model(tf.keras, self.keras_model, src.spec)
        self.splits = data_mod.make_splits(src.data) if src.data is not None else None
        self.compare = compare
        self.task = self.splits.task if self.splits is not None else None
        self.float_score: float | None = None
        self._x_test: np.ndarray | None = None
        self._debuggers: dict[int, Any] = {}
        if self.splits is not None and compare:
            n = len(self.splits.y_test)
            say(f"scoring on the test split ({n} examples) with the device runtime")
            self._x_test = self.splits.model_inputs(self.splits.x_test)
            float_out = self.keras_model.predict(self._x_test, batch_size=256, verbose=0)
            self.float_score = _score(self.task, float_out, self.splits.y_test, src.spec)

    @functools.cached_property
    def reference(self) -> bytes:
        """The fp32 conversion (made when first needed: ``compare=False`` may never need it)."""
        return _convert_bytes(
            self.tf, self.static, FP32, FLOAT_IO, self.plan.target, None, self.verbose
        )

    @property
    def has_data(self) -> bool:
        """Whether the run's splits (calibration, test) can be rebuilt."""
        return self.splits is not None

    @property
    def training_examples(self) -> int | None:
        """Examples in the training split (what calibration can draw on)."""
        return len(self.splits.y_train) if self.splits is not None else None

    @property
    def classification(self) -> bool:
        return self.task == "classification"

    def calibration(self, count: int) -> np.ndarray | None:
        """Model inputs of a stratified sample of the training split."""
        if self.splits is None:
            return None
        picked = data_mod.representative_sample(
            self.splits.x_train, self.splits.y_train, count, seed=self.src.data.seed, task=self.task
        )
        return self.splits.model_inputs(picked)

    def facts(self, precision: str, io_type: str, **extra: Any) -> dict[str, Any]:
        """What the model's embedded metadata says about its conversion."""
        return {
            "quantize": precision,
            "io": io_type,
            "target": self.plan.target.name,
            "source": str(self.src.model_path),
            **extra,
        }

    def make(
        self,
        precision: str,
        count: int = 0,
        kept: Sequence[int] = (),
        base: ladder.Candidate | None = None,
    ) -> ladder.Candidate:
        """Convert at ``precision``, embed the companions, score and time the result.

        Args:
            precision: A precision, or ``int8-mixed`` (then ``base`` and ``kept`` are needed).
            count: Calibration examples (int8 steps).
            kept: Ops of ``base`` to keep in float.
            base: The full-int8 candidate ``kept`` refers to.

        Returns:
            The candidate.
        """
        io_type = self.plan.io if precision == INT8 else FLOAT_IO
        kept_float = [{"index": i, "op": base.parsed.ops[i].name} for i in kept] if base else []
        if precision == quantization.INT8_MIXED:
            raw = self._mixed_bytes(count, base, kept)
        elif precision == FP32:
            raw = self.reference
        else:
            rep = self.calibration(count) if precision == INT8 else None
            if precision == INT8 and rep is None:
                raise _no_calibration_data()
            # The training split may hold fewer examples than asked for: record what was used.
            count = len(rep) if rep is not None else 0
            raw = _convert_bytes(
                self.tf, self.static, precision, io_type, self.plan.target, rep, self.verbose
            )
        facts = self.facts(precision, io_type, **({"kept_float": kept_float} if kept else {}))
        model_bytes = artifact.embed(raw, self.src.labels, self.src.spec, **facts)
        parsed = tflite_model.load(model_bytes)
        candidate = ladder.Candidate(precision, io_type, model_bytes, parsed, count, kept_float)
        if self._x_test is not None:
            out = Runner(parsed).predict(self._x_test)
            candidate.score = _score(self.task, out, self.splits.y_test, self.src.spec)
            if self.classification:
                candidate.drop = (self.float_score - candidate.score) * 100
            candidate.latency_ms = _latency_ms(parsed, self._x_test[0])
        return candidate

    def _mixed_bytes(self, count: int, base: ladder.Candidate, kept: Sequence[int]) -> bytes:
        """int8 with the ops ``kept`` (of the full-int8 ``base``) left in float.

        TensorFlow's QuantizationDebugger (selective quantization) re-quantizes the calibrated
        model with those ops' output tensors denylisted. Its tensor names are the calibrated
        model's, which :func:`edgenn.quantization.match_tensors` pairs with ``base``'s ops.
        """
        tf = self.tf
        debugger = self._debuggers.get(count)
        if debugger is None:
            converter = _converter(tf, self.static, INT8, self.plan.target, self.calibration(count))
            with _converter_errors("int8 with ops in float (calibration)", self.verbose):
                debugger = tf.lite.experimental.QuantizationDebugger(converter=converter)
            self._debuggers[count] = debugger
        calibrated = tflite_model.load(debugger.calibrated_model)
        matches = quantization.match_tensors(base.parsed, calibrated)
        nodes = []
        for index in kept:
            out = base.parsed.ops[index].outputs[0]
            if out in matches:
                nodes.append(calibrated.tensors[matches[out].float_index].name)
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes)
        with _converter_errors("int8 with ops in float", self.verbose):
            debugger.options = options
            return debugger.get_nondebug_quantized_model()

    def analyse(self, candidate: ladder.Candidate) -> quantization.QuantizationReport:
        """The per-layer comparison of a candidate with the fp32 reference (validation split)."""
        splits = self.splits
        pool = splits.x_val if len(splits.x_val) else splits.x_test
        x = splits.model_inputs(pool[: quantization.DEFAULT_REPORT_SAMPLES])
        self.say(f"per-layer comparison of {candidate.precision} with fp32 on {len(x)} examples")
        reference = tflite_model.load(self.reference)
        return quantization.compare(candidate.parsed, reference, x, candidate.precision)


def convert(
    source: Path,
    output: Path | None = None,
    quantize: str | None = None,
    io_type: str | None = None,
    target: str = targets.DEFAULT_TARGET,
    calibration_samples: int | Sequence[int] = DEFAULT_CALIBRATION_SAMPLES,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    overwrite: bool = False,
    verbose: bool = False,
    progress: Callable[[str], None] | None = None,
    report: bool = False,
    compare: bool = True,
) -> ConvertResult:
    """Convert a trained model to .tflite, check its accuracy and its target.

    Args:
        source: Run directory or ``.keras`` file.
        output: The .tflite to write (default: ``model_<quantize>.tflite`` in the run directory).
        quantize: One of :data:`edgenn.quantization.QUANTIZE_CHOICES` (default: the target's);
            ``auto`` climbs the target's ladder (:mod:`edgenn.host.ladder`).
        io_type: Input/output type of :data:`edgenn.precision.IO_TYPES` (int8 quantization
            only; default: the target's).
        target: A name of :data:`edgenn.targets.TARGETS`.
        calibration_samples: Training examples that calibrate int8 ranges (stratified); a list
            sweeps: each count in turn until one meets the accuracy gate.
        max_accuracy_drop: Fail, writing nothing, when accuracy drops more (points).
        overwrite: Replace an existing output (and report).
        verbose: Show TensorFlow's logs.
        progress: Optional callable ``progress(message)`` for status lines.
        report: Also write ``quantization.json`` and ``quantization.png`` beside the model.
        compare: Score on the test split (the gate) and make the fp32 reference (tune: False).

    Returns:
        The result.

    Raises:
        UsageError: Bad option combination.
        EdgennError: Missing inputs, a failed conversion or too large an accuracy drop.
    """
    say = progress or (lambda message: None)
    counts = _sample_counts(calibration_samples)
    plan = _plan(target, quantize, io_type, counts)
    _check_compare(plan, report, compare)
    src = resolve_source(Path(source))
    output = _output_path(output, src, plan.quantize, overwrite)
    if report:
        _check_report(src, output, overwrite)
    tf = import_tensorflow("edgenn convert", verbose)
    say(f"converting {src.model_path} ({'/'.join(plan.steps)}, {plan.io} I/O) for {target}")
    session = _Session(tf, src, plan, verbose, say, compare)
    climb = ladder.climb(session, plan.steps, counts, max_accuracy_drop, say)
    if climb.chosen is None:
        raise ladder.gate_error(session, climb, plan.target, max_accuracy_drop, _command(src, plan))
    say(f"checking the {target} target")
    check = _write_checked(climb.chosen, output, src, plan.target, overwrite)
    result = _result(output, plan, session, climb, check)
    if report:
        _add_report(result, session, climb, max_accuracy_drop, _command(src, plan))
    return result


def _add_report(
    result: ConvertResult, session: _Session, climb: ladder.Climb, gate: float, command: str
) -> None:
    """Write quantization.json / .png beside the model and record them in ``result``."""
    output = Path(result.output)
    analysed = _write_report(session, climb, output, gate, command)
    result.report = str(output.parent / quantization.REPORT_JSON)
    result.report_seconds = analysed.seconds


def _check_compare(plan: _Plan, report: bool, compare: bool) -> None:
    """Refuse ``compare=False`` with what needs the float model's score.

    Raises:
        UsageError: ``--quantize auto`` (a ladder) or ``--report`` without comparing.
    """
    if not compare and (len(plan.steps) > 1 or report):
        raise UsageError(
            f"convert(compare=False) received quantize={plan.quantize!r}, report={report}; "
            "--quantize auto and --report compare with the float model: keep compare=True."
        )


def _write_checked(
    chosen: ladder.Candidate, output: Path, src: Source, target: targets.Target, overwrite: bool
) -> targets.TargetReport:
    """Check the target on the bytes, then write the model and its companions."""
    check = _check_target(chosen.parsed, target)
    artifact.check_companions_free(output.parent, src.labels, src.spec, overwrite)
    atomic_write_bytes(output, chosen.model_bytes)
    artifact.write_companions(output.parent, src.labels, src.spec)
    if target.recheck_after_write:
        check = target.run(tflite_model.load(output))
    return check


def _sample_counts(value: int | Sequence[int]) -> tuple[int, ...]:
    """``--calibration-samples`` as a tuple of counts (one, or a sweep)."""
    counts = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not counts or any(int(c) < 1 for c in counts):
        raise UsageError(
            f"--calibration-samples must be counts of at least 1; received {list(counts)}."
        )
    return tuple(int(c) for c in counts)


def _plan(target: str, quantize: str | None, io_type: str | None, counts: tuple[int, ...]) -> _Plan:
    """The target's record, the steps to try and the I/O type (the target's defaults if not given).

    Raises:
        UsageError: An unknown name, or a combination the target or the converter refuses.
    """
    record = targets.lookup(target)
    quantize = quantize or record.default_precision
    if quantize not in quantization.QUANTIZE_CHOICES:
        raise UsageError(
            f"Unknown --quantize {quantize!r}; expected one of "
            f"{', '.join(quantization.QUANTIZE_CHOICES)}."
        )
    auto = quantize == quantization.AUTO
    steps = quantization.ladder_for(record.allowed_precisions) if auto else (quantize,)
    io_type = io_type or record.io_for(INT8 if auto else quantize)
    if io_type not in IO_TYPES:
        raise UsageError(f"Unknown --io {io_type!r}; expected one of {', '.join(IO_TYPES)}.")
    if io_type != FLOAT_IO and steps != (INT8,):
        raise UsageError(
            f"--io {io_type} needs --quantize {INT8}; a {quantize} model keeps float inputs and "
            "outputs" + (" on some steps of the ladder." if auto else ".")
        )
    if quantize not in record.allowed_precisions and not auto:
        raise UsageError(
            f"--target {target} needs a fully {'/'.join(record.allowed_precisions)} model; "
            f"received --quantize {quantize}. Use: edgenn convert RUN --target {target}"
        )
    if len(counts) > 1 and INT8 not in steps:
        raise UsageError(
            f"A list of --calibration-samples sweeps int8 calibration; --quantize {quantize} "
            "calibrates nothing."
        )
    return _Plan(record, quantize, io_type, steps)


def _output_path(output: Path | None, src: Source, quantize: str, overwrite: bool) -> Path:
    """The .tflite to write, refused if it exists and ``overwrite`` is off."""
    output = Path(output) if output else src.model_path.parent / f"model_{quantize}.tflite"
    if output.suffix != ".tflite":
        raise UsageError(f"-o {output} should end in .tflite.")
    refuse_existing(output, overwrite)
    return output


def _check_report(src: Source, output: Path, overwrite: bool) -> None:
    """Refuse ``--report`` before any work when it cannot be made or written."""
    if src.data is None:
        raise EdgennError(
            f"--report compares the model with its float reference on validation examples, and "
            f"{src.model_path.parent} has no {data_mod.DATA_FILE} to rebuild them.",
            "Convert a run directory made by edgenn train.",
        )
    quantization.check_report_free(output.parent, overwrite)


def _command(src: Source, plan: _Plan) -> str:
    """The conversion command to extend in advice (paths quoted for a shell)."""
    return f"edgenn convert {shlex.quote(str(src.model_path.parent))} --target {plan.target.name}"


def _write_report(
    session: _Session, climb: ladder.Climb, output: Path, gate: float, command: str
) -> quantization.QuantizationReport:
    """Write ``quantization.json`` and ``.png`` beside the model.

    They analyse the int8 step when the ladder left it behind (that is what lost accuracy), else
    the model written.
    """
    chosen = climb.chosen
    analysed = climb.int8_report
    if analysed is None or chosen.precision == INT8:
        analysed = session.analyse(chosen)
    analysed.written_precision = chosen.precision
    analysed.ladder = [c.entry(c is chosen) for c in climb.tried] if len(climb.tried) > 1 else None
    base = climb.best_int8()
    if base is not None and not ladder.passes(base, gate):
        analysed.remedies = quantization.remedies(
            analysed, base.parsed, base.calibration_samples, command
        )
    quantization.write_report(analysed, output)
    return analysed


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
    session: _Session,
    climb: ladder.Climb,
    report: targets.TargetReport,
) -> ConvertResult:
    """The figures ``--json`` prints: sizes, scores, ops, the ladder and the target's report."""
    chosen = climb.chosen
    facts = session.facts(chosen.precision, chosen.io)
    # The fp32 reference carries the same metadata, so the size ratio compares weights and graph.
    fp32_size = None
    if session.compare:
        reference = artifact.embed(session.reference, session.src.labels, session.src.spec, **facts)
        fp32_size = len(reference)
    classification = session.classification
    regression = session.task is not None and not classification
    return ConvertResult(
        output=str(output),
        quantize=chosen.precision,
        io=chosen.io,
        target=plan.target.name,
        size_bytes=len(chosen.model_bytes),
        fp32_size_bytes=fp32_size,
        size_ratio=round(len(chosen.model_bytes) / fp32_size, 4) if fp32_size else None,
        float_accuracy=session.float_score if classification else None,
        converted_accuracy=chosen.score if classification else None,
        accuracy_drop_points=round(chosen.drop, 3) if chosen.drop is not None else None,
        float_mse=session.float_score if regression else None,
        converted_mse=chosen.score if regression else None,
        test_examples=len(session.splits.y_test) if session.float_score is not None else 0,
        calibration_samples=chosen.calibration_samples,
        ops=[{"op": n, "version": v, "count": c} for n, v, c in chosen.parsed.op_counts],
        min_runtime_version=chosen.parsed.min_runtime_version,
        check=report.to_dict(),
        ladder=[c.entry(c is chosen) for c in climb.tried],
        decision=climb.decision,
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
