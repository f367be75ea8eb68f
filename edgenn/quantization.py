"""[device] Per-layer quantization error: a converted .tflite against its float reference.

:func:`compare` runs a quantized model (int8, or any other precision) and the float .tflite made
from the same Keras model side by side with LiteRT's ``experimental_preserve_all_tensors``, on the
same inputs, and measures how far every op's output lies from the float model's corresponding
tensor (:func:`match_tensors` says which one): the signal-to-noise ratio in dB, the RMSE relative
to the float tensor's range, and the cosine similarity. It also says where the error enters: an
op whose output is much noisier than its inputs *introduces* error, one that only carries its
inputs' error forward *inherits* it. No TensorFlow here: TensorFlow only made the two files.

The same records drive ``edgenn convert --quantize auto`` (which ops to keep in float,
:func:`float_candidates`), the remedies named when a full-int8 target misses the accuracy gate
(:func:`remedies`), ``quantization.json`` / ``quantization.png`` (``--report``) and the summary
``edgenn inspect`` prints.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import classify, optional, tflite_model
from edgenn.errors import EdgennError
from edgenn.fileio import atomic_write_bytes, atomic_write_text, read_regular, refuse_existing
from edgenn.precision import DYNAMIC, FP16, FP32, INT8, PRECISIONS
from edgenn.stdio import capture_stderr

#: ``--quantize auto``: climb :data:`LADDER` and keep the first step that meets the gate.
AUTO = "auto"
#: Full int8 except a few ops kept in float (the ladder's second step; not a --quantize value).
INT8_MIXED = "int8-mixed"
#: ``edgenn convert --quantize`` values: the precisions, and the ladder.
QUANTIZE_CHOICES = (*PRECISIONS, AUTO)
#: The ``--quantize auto`` ladder, smallest and fastest first.
LADDER = (INT8, INT8_MIXED, DYNAMIC, FP16)
#: What ``--report`` writes beside the model.
REPORT_JSON = "quantization.json"
REPORT_PNG = "quantization.png"
#: Validation examples the per-layer comparison runs (each runs both models once).
DEFAULT_REPORT_SAMPLES = 200
#: A float tensor whose widest channel spans this many times the median channel: an outlier.
OUTLIER_RANGE_RATIO = 20.0
#: An SNR above this is float32 rounding, not quantization (float32 rounding alone gives ~140 dB;
#: a healthy int8 op 30-45 dB): such outputs count as identical (``snr_db`` null).
IDENTICAL_DB = 120.0
#: How the ``ops`` list is ordered (written into ``quantization.json``).
ORDER = (
    f"snr_db ascending (worst first); ops with identical outputs (snr_db null: no error, or "
    f"float32 rounding only, above {IDENTICAL_DB:g} dB) and unmatched ops last"
)
#: Ops the quantizer adds that only change a tensor's representation.
_CONVERTS = frozenset({"QUANTIZE", "DEQUANTIZE"})
#: ``origin`` values.
INTRODUCED = "introduced"
INHERITED = "inherited"
EXACT = "exact"
UNMATCHED = "unmatched"
_MAX_REPORT_BYTES = 16 * 1024 * 1024


def ladder_for(allowed: Sequence[str]) -> tuple[str, ...]:
    """The steps of :data:`LADDER` a target allows.

    Keeping ops in float needs a runtime that runs float ops, so :data:`INT8_MIXED` is a step
    only where the target accepts fp32 models too (never for edgetpu or micro).

    Args:
        allowed: The target's ``allowed_precisions``.

    Returns:
        The steps, in ladder order.
    """
    steps = []
    for step in LADDER:
        needs = (INT8, FP32) if step == INT8_MIXED else (step,)
        if all(p in allowed for p in needs):
            steps.append(step)
    return tuple(steps)


@dataclasses.dataclass
class OpError:
    """How far one op's output is from the float model's.

    Attributes:
        index: The op's position in the quantized model (execution order).
        op: Op name.
        tensor: Its output tensor's name in the quantized model.
        snr_db: ``10 log10(sum f^2 / sum (q - f)^2)`` over all samples; None when identical
            (up to float32 rounding: above :data:`IDENTICAL_DB`).
        rmse_rel: Root-mean-square error divided by the float tensor's range (max - min).
        cosine: Mean cosine similarity of the quantized and float outputs per sample.
        input_snr_db: The worst SNR among its activation inputs (None: inputs identical).
        introduced_db: SNR of the error this op adds itself, if errors add in power
            (``-10 log10(NSR_out - NSR_in)``; lower is worse; None: it adds none).
        origin: ``introduced`` (most of its output error is new), ``inherited``, ``exact`` or
            ``unmatched`` (no float counterpart found; no figures).
        float_tensor: The float model's tensor it was compared with.
        matched_by: ``name``, ``input`` (a QUANTIZE/DEQUANTIZE: its input's counterpart) or
            ``position``.
        range_ratio: Widest channel range over the median channel range of the float tensor
            (last axis); large values mean outlier channels that per-tensor int8 activations
            cannot resolve. None for fewer than 4 channels.
    """

    index: int
    op: str
    tensor: str
    snr_db: float | None
    rmse_rel: float | None
    cosine: float | None
    input_snr_db: float | None = None
    introduced_db: float | None = None
    origin: str = UNMATCHED
    float_tensor: str | None = None
    matched_by: str | None = None
    range_ratio: float | None = None


@dataclasses.dataclass
class QuantizationReport:
    """The per-layer comparison; ``to_dict`` is ``quantization.json``.

    Attributes:
        ops: One entry per op, ordered as :data:`ORDER` says.
        samples: Inputs run through both models.
        precision: The analysed model's precision (when known).
        inputs: The model inputs' own quantization error (``name``, ``snr_db``...).
        output_snr_db: SNR of the model's first output.
        worst: Indices of the (up to 5) ops with the lowest SNR.
        introduced_by: Indices of the (up to 5) ops that add the most error, worst first.
        unmatched: Indices of ops without a float counterpart.
        seconds: Time the comparison took.
        order: :data:`ORDER`.
        model: The model file this report sits beside (set when written).
        model_sha256: That file's SHA-256.
        written_precision: The precision of that file (differs from ``precision`` when
            ``--quantize auto`` wrote a later step of the ladder).
        remedies: What to try when the model misses the accuracy gate.
        ladder: The ``--quantize auto`` steps tried (see ``edgenn convert --json``).
    """

    ops: list[OpError]
    samples: int
    precision: str | None = None
    inputs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    output_snr_db: float | None = None
    worst: list[int] = dataclasses.field(default_factory=list)
    introduced_by: list[int] = dataclasses.field(default_factory=list)
    unmatched: list[int] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    order: str = ORDER
    model: str | None = None
    model_sha256: str | None = None
    written_precision: str | None = None
    remedies: list[str] = dataclasses.field(default_factory=list)
    ladder: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return dataclasses.asdict(self)

    def op(self, index: int) -> OpError:
        """The entry of the op at ``index`` (execution order)."""
        return next(e for e in self.ops if e.index == index)


@dataclasses.dataclass(frozen=True)
class Match:
    """A quantized model's tensor and the float model's tensor it is compared with."""

    float_index: int
    how: str


def _activation_ops(model: tflite_model.TFLiteFile) -> list[tflite_model.OpInfo]:
    """Main-subgraph ops that compute on activations (not ops that only unpack weights)."""
    ops = []
    for op in model.ops:
        if op.subgraph != 0 or not op.outputs:
            continue
        live = [i for i in op.inputs if i >= 0 and not model.tensors[i].is_constant]
        if live:
            ops.append(op)
    return ops


def match_tensors(
    quantized: tflite_model.TFLiteFile, reference: tflite_model.TFLiteFile
) -> dict[int, Match]:
    """Pair each activation tensor of a quantized model with the float model's tensor.

    Both files come from the same Keras model, so most tensors keep their names; the rules, in
    order:

    1. Model inputs and outputs pair by position (the quantizer renames the tensors at the
       edges: a float-I/O int8 model's first tensor is ``tfl.quantize``).
    2. An op's output pairs with the float tensor of the same name: the converter keeps the
       name of each op's output through quantization (fused names such as
       ``dense/MatMul;dense/Relu;dense/BiasAdd`` included).
    3. An op without a namesake keeps its type: it pairs with the first unpaired float op of
       the same type whose output has the same shape (the quantized SOFTMAX whose name moved to
       the DEQUANTIZE after it, ``...:0`` -> ``...:01``, pairs this way).
    4. A QUANTIZE or DEQUANTIZE the quantizer inserted only changes how a tensor is stored: it
       pairs with its input's counterpart, so a QUANTIZE's error is the rounding of its input.

    Tensors that none of these pair are left out (their op is reported as ``unmatched``).

    Args:
        quantized: The converted model.
        reference: The float model.

    Returns:
        Quantized tensor index -> :class:`Match`.
    """
    matches: dict[int, Match] = {}
    for mine, theirs in zip(quantized.inputs, reference.inputs):
        matches[mine] = Match(theirs, "input")
    by_name = {t.name: t.index for t in reference.tensors if not t.is_constant}
    ops = _activation_ops(quantized)
    for op in ops:
        name = quantized.tensors[op.outputs[0]].name
        if op.outputs[0] not in matches and op.name not in _CONVERTS and name in by_name:
            matches[op.outputs[0]] = Match(by_name[name], "name")
    _pair_by_position(quantized, reference, ops, matches)
    for op in ops:
        source = op.inputs[0] if op.inputs else -1
        if op.name in _CONVERTS and op.outputs[0] not in matches and source in matches:
            matches[op.outputs[0]] = Match(matches[source].float_index, "input")
    for mine, theirs in zip(quantized.outputs, reference.outputs):
        matches.setdefault(mine, Match(theirs, "position"))
    return matches


def _pair_by_position(
    quantized: tflite_model.TFLiteFile,
    reference: tflite_model.TFLiteFile,
    ops: list[tflite_model.OpInfo],
    matches: dict[int, Match],
) -> None:
    """Rule 3 of :func:`match_tensors`: same op type and output shape, in execution order."""
    used = {m.float_index for m in matches.values()}
    free = [op for op in _activation_ops(reference) if op.outputs[0] not in used]
    for op in ops:
        out = op.outputs[0]
        if out in matches or op.name in _CONVERTS:
            continue
        shape = quantized.tensors[out].shape
        for twin in free:
            if twin.name == op.name and reference.tensors[twin.outputs[0]].shape == shape:
                free.remove(twin)
                matches[out] = Match(twin.outputs[0], "position")
                break


def preserving_interpreter(model: tflite_model.TFLiteFile, runtime: str | None = None):
    """A LiteRT interpreter that keeps every intermediate tensor, on the reference kernels.

    XNNPACK would fuse ops and free their intermediate outputs, so the default delegates are
    off; the int8 figures are then those of the reference kernels (a few LSB from XNNPACK's).

    Args:
        model: The model.
        runtime: A runtime name of :data:`edgenn.runtime.RUNTIMES` (None: the first installed).

    Returns:
        The allocated interpreter.

    Raises:
        EdgennError: The runtime cannot load the model.
    """
    from edgenn.runtime import find_runtime

    found = find_runtime(runtime)
    kwargs: dict[str, Any] = {
        "model_content": model.data,
        "experimental_preserve_all_tensors": True,
    }
    resolver = getattr(found.module, "OpResolverType", None)
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with capture_stderr() as native:
            interpreter = found.module.Interpreter(**kwargs)
            interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        message = " ".join((str(exc) + " " + native.text).split())[:300]
        raise EdgennError(
            f"{found.name} cannot run {model.path or 'the model'}: {message}"
        ) from None
    return interpreter


class _Side:
    """One model's interpreter: set a float input, read any tensor back as float."""

    def __init__(self, model: tflite_model.TFLiteFile, runtime: str | None) -> None:
        self.interpreter = preserving_interpreter(model, runtime)
        self.details = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        self.input = self.interpreter.get_input_details()[0]

    def run(self, x: np.ndarray) -> None:
        shape = tuple(int(s) for s in self.input["shape"])
        dtype = np.dtype(self.input["dtype"])
        scale, zero = self.input["quantization"]
        x = np.asarray(x, np.float32).reshape(shape)
        if dtype.kind in "iu" and scale:
            info = np.iinfo(dtype)
            x = np.clip(np.rint(x / scale) + zero, info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(dtype))
        self.interpreter.invoke()

    def value(self, index: int) -> np.ndarray:
        """A tensor's real values: dequantized with its own (per-tensor or per-axis) scales."""
        raw = self.interpreter.get_tensor(index)
        params = self.details[index].get("quantization_parameters") or {}
        scales = np.asarray(params.get("scales", []), np.float64)
        zeros = np.asarray(params.get("zero_points", []), np.int64)
        if scales.size == 0 or np.dtype(raw.dtype).kind == "f":
            return np.asarray(raw, np.float64)
        if scales.size == 1:
            return classify.dequantize(raw, float(scales[0]), int(zeros[0])).astype(np.float64)
        axis = int(params.get("quantized_dimension", 0))
        shape = [1] * raw.ndim
        shape[axis] = scales.size
        return (raw.astype(np.int64) - zeros.reshape(shape)) * scales.reshape(shape)


class _Errors:
    """Running sums for one tensor pair over all samples."""

    def __init__(self) -> None:
        self.count = 0
        self.samples = 0
        self.noise = 0.0
        self.signal = 0.0
        self.cosines = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.channel_max: np.ndarray | None = None

    def add(self, q: np.ndarray, f: np.ndarray) -> None:
        q, f = q.reshape(-1), f.reshape(-1)
        # Element-wise sums, not BLAS dot products: on a busy machine BLAS's worker threads cost
        # milliseconds per call on these small vectors.
        noise, signal = float(np.square(q - f).sum()), float(np.square(f).sum())
        self.count += f.size
        self.samples += 1
        self.noise += noise
        self.signal += signal
        norms = math.sqrt(float(np.square(q).sum()) * signal)
        cross = float((q * f).sum())
        self.cosines += cross / norms if norms else float(not q.any() and not f.any())
        self.low = min(self.low, float(f.min()))
        self.high = max(self.high, float(f.max()))

    def add_channels(self, f: np.ndarray) -> None:
        absmax = np.abs(f.reshape(-1, f.shape[-1])).max(axis=0) if f.ndim else np.abs(f)
        self.channel_max = (
            absmax if self.channel_max is None else np.maximum(self.channel_max, absmax)
        )

    def figures(self) -> tuple[float | None, float | None, float | None, float | None]:
        """``(snr_db, rmse_rel, cosine, range_ratio)``, rounded; None where undefined."""
        if not self.count:
            return None, None, None, None
        span = self.high - self.low
        rmse = math.sqrt(self.noise / self.count)
        snr = None
        if self.noise > 0:
            snr = round(10 * math.log10(max(self.signal, 1e-30) / self.noise), 2)
            snr = None if snr > IDENTICAL_DB else snr
        rmse_rel = round(rmse / span, 6) if span > 0 else (0.0 if rmse == 0 else None)
        cosine = round(self.cosines / self.samples, 6)
        ratio = None
        if self.channel_max is not None and self.channel_max.size >= 4:
            live = self.channel_max[self.channel_max > 0]
            if live.size:
                ratio = round(float(live.max() / np.median(live)), 2)
        return snr, rmse_rel, cosine, ratio


def compare(
    quantized: tflite_model.TFLiteFile,
    reference: tflite_model.TFLiteFile,
    samples: np.ndarray,
    precision: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    runtime: str | None = None,
) -> QuantizationReport:
    """Measure every op's output error against the float model on the same inputs.

    Args:
        quantized: The converted model.
        reference: The float .tflite of the same Keras model.
        samples: Float model inputs ``(N, ...)`` (validation examples, say).
        precision: The quantized model's precision, for the record.
        progress: Optional callable ``progress(done, total)``.
        runtime: A runtime name (None: the first installed).

    Returns:
        The report, ops ordered as :data:`ORDER` says.

    Raises:
        EdgennError: No samples, a model with several inputs, or a model the runtime refuses.
    """
    if len(samples) == 0:
        raise EdgennError("The per-layer comparison needs at least one input example.")
    if len(quantized.inputs) != 1 or len(reference.inputs) != 1:
        raise EdgennError(
            f"The per-layer comparison supports one-input models; received {len(quantized.inputs)} "
            f"and {len(reference.inputs)} inputs."
        )
    start = time.perf_counter()
    matches = match_tensors(quantized, reference)
    mine, theirs = _Side(quantized, runtime), _Side(reference, runtime)
    sums = {index: _Errors() for index in matches}
    for n, x in enumerate(samples):
        mine.run(x)
        theirs.run(x)
        for index, match in matches.items():
            f = theirs.value(match.float_index)
            q = mine.value(index)
            if q.size != f.size:
                continue
            sums[index].add(q, f)
            sums[index].add_channels(f)
        if progress is not None and (n % 50 == 49 or n == len(samples) - 1):
            progress(n + 1, len(samples))
    report = _report(quantized, reference, matches, sums, len(samples))
    report.precision = precision
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def _nsr(snr: float | None) -> float:
    """Noise-to-signal power ratio of an SNR in dB (0 for identical tensors)."""
    return 0.0 if snr is None else 10 ** (-snr / 10)


def _report(
    quantized: tflite_model.TFLiteFile,
    reference: tflite_model.TFLiteFile,
    matches: dict[int, Match],
    sums: dict[int, _Errors],
    samples: int,
) -> QuantizationReport:
    """Per-op figures, the origin of each op's error, the order and the summary lists."""
    figures = {index: s.figures() for index, s in sums.items()}
    entries = []
    for op in _activation_ops(quantized):
        out = op.outputs[0]
        entry = OpError(op.index, op.name, quantized.tensors[out].name, None, None, None)
        if out in matches and sums[out].count:
            entry.snr_db, entry.rmse_rel, entry.cosine, entry.range_ratio = figures[out]
            entry.float_tensor = reference.tensors[matches[out].float_index].name
            entry.matched_by = matches[out].how
            _origin(entry, [figures[i][0] for i in op.inputs if i in figures and sums[i].count])
        entries.append(entry)
    # Worst first; identical outputs (nothing to fix) and unmatched ops last, in op order.
    entries.sort(key=lambda e: (e.snr_db is None, e.snr_db if e.snr_db is not None else 0, e.index))
    scored = [e for e in entries if e.snr_db is not None]
    adding = sorted(
        (e for e in scored if e.origin == INTRODUCED), key=lambda e: (e.introduced_db, e.index)
    )
    first_out = quantized.outputs[0] if quantized.outputs else -1
    return QuantizationReport(
        ops=entries,
        samples=samples,
        inputs=[
            {"name": quantized.tensors[i].name, "snr_db": figures[i][0], "rmse_rel": figures[i][1]}
            for i in quantized.inputs
            if i in figures
        ],
        output_snr_db=figures[first_out][0] if first_out in figures else None,
        worst=[e.index for e in scored[:5]],
        introduced_by=[e.index for e in adding[:5]],
        unmatched=sorted(e.index for e in entries if e.origin == UNMATCHED),
    )


def _origin(entry: OpError, input_snrs: list[float | None]) -> None:
    """Where an op's output error comes from: its inputs, or the op itself.

    Errors that pass through an op keep their relative size (to first order), so the noise an op
    adds is its output's noise-to-signal ratio minus its noisiest input's.
    """
    nsr_in = max((_nsr(s) for s in input_snrs), default=0.0)
    worst_in = [s for s in input_snrs if s is not None]
    entry.input_snr_db = min(worst_in) if worst_in else None
    if entry.snr_db is None:
        entry.origin = EXACT
        return
    added = _nsr(entry.snr_db) - nsr_in
    entry.introduced_db = round(-10 * math.log10(added), 2) if added > 0 else None
    entry.origin = INTRODUCED if added > nsr_in else INHERITED


def _neighbours(model: tflite_model.TFLiteFile, index: int) -> set[int]:
    """An op with the ops that feed its activations and the ops that read its outputs.

    An op kept in float hands its consumers a float tensor that they quantize again with the
    same per-tensor range, and reads inputs its producers rounded already: keeping a tensor in
    float means keeping both ends of it in float.
    """
    op = model.ops[index]
    group = {index}
    for other in model.ops:
        if other.subgraph != 0:
            continue
        if set(other.outputs) & {i for i in op.inputs if i >= 0}:
            group.add(other.index)
        if set(other.inputs) & set(op.outputs):
            group.add(other.index)
    return {i for i in group if model.ops[i].name not in _CONVERTS}


def float_candidates(
    report: QuantizationReport, model: tflite_model.TFLiteFile, limit: int = 3
) -> list[list[int]]:
    """Growing sets of ops to keep in float, for the ladder's ``int8-mixed`` step.

    The ops that introduce the most error come first (:attr:`QuantizationReport.introduced_by`,
    then the lowest SNR); each adds its neighbourhood (:func:`_neighbours`) to the set before.

    Args:
        report: The full-int8 model's report.
        model: That model.
        limit: How many sets at most.

    Returns:
        Op index lists (of ``model``), each a superset of the one before and none holding every
        op; empty when nothing can be kept in float.
    """
    order = list(report.introduced_by) + [i for i in report.worst if i not in report.introduced_by]
    # A set holding every op would be the float model again: the ladder's later steps beat it.
    everything = {op.index for op in _activation_ops(model) if op.name not in _CONVERTS}
    sets: list[list[int]] = []
    kept: set[int] = set()
    for index in order:
        grown = kept | _neighbours(model, index)
        if grown >= everything:
            break
        if grown != kept:
            kept = grown
            sets.append(sorted(kept))
        if len(sets) == limit:
            break
    return sets


#: Ops whose output range has no bound: int8's one scale per tensor fits them badly.
UNBOUNDED_OPS = frozenset({"EXP", "POW", "SQUARE", "RSQRT", "DIV", "LOG"})


#: An op that adds less noise than this (introduced_db above it) is at int8's usual level.
HEALTHY_DB = 30.0


def blamed(report: QuantizationReport, count: int = 3) -> list[OpError]:
    """The ops to blame: those that introduce the most error (below :data:`HEALTHY_DB`).

    When no op stands out, the op with the lowest SNR.
    """
    adding = [report.op(i) for i in report.introduced_by]
    worst = [e for e in adding if e.introduced_db is not None and e.introduced_db < HEALTHY_DB]
    if not worst and report.worst:
        worst = [report.op(report.worst[0])]
    return worst[:count]


def describe_op(entry: OpError) -> str:
    """``op 3 FULLY_CONNECTED (SNR 4.1 dB, introduced)`` for messages."""
    snr = "identical" if entry.snr_db is None else f"SNR {entry.snr_db:.1f} dB"
    return f"op {entry.index} {entry.op} ({snr}, {entry.origin})"


def _op_remedies(report: QuantizationReport, model: tflite_model.TFLiteFile) -> list[str]:
    """Remedies read off the blamed ops: outlier channels, unbounded outputs, per-tensor weights."""
    found = []
    producers = {op.outputs[0]: op.index for op in _activation_ops(model)}
    for entry in blamed(report):
        op = model.ops[entry.index]
        # The op's own output and the tensors it reads, each named by the op that writes it.
        for source in [op.index] + [producers[i] for i in op.inputs if i in producers]:
            ratio = report.op(source).range_ratio
            if ratio is not None and ratio >= OUTLIER_RANGE_RATIO:
                found.append(
                    f"The output of op {source} {model.ops[source].name} has outlier channels (the "
                    f"widest spans {ratio:.0f}x the median) and int8 gives a tensor one scale: "
                    "train with batch normalization or weight decay, or a bounded activation "
                    "(ReLU6) there."
                )
        if op.name in UNBOUNDED_OPS:
            found.append(
                f"Op {op.index} {op.name} has an unbounded output range: a different activation "
                "(ReLU6, tanh, sigmoid) quantizes far better."
            )
        weights = [model.tensors[i] for i in op.inputs if i >= 0 and model.tensors[i].is_constant]
        if any(
            w.dtype == "int8" and len(w.scale) == 1 and w.shape and w.shape[0] > 1 for w in weights
        ):
            found.append(
                f"Op {op.index} {op.name} has per-tensor weights: per-channel quantization (one "
                "scale per output channel, TensorFlow's default) keeps small channels apart."
            )
    return found


def remedies(
    report: QuantizationReport,
    model: tflite_model.TFLiteFile,
    calibration_samples: int,
    command: str,
    available: int | None = None,
) -> list[str]:
    """What to try when a full-int8 model misses the accuracy gate, from what the report found.

    Args:
        report: The int8 model's report.
        model: That model.
        calibration_samples: Examples it was calibrated on (the most of a sweep).
        command: The conversion command to extend (``edgenn convert RUN --target micro``).
        available: Training examples there are to calibrate on (None: unknown).

    Returns:
        One sentence per remedy, most specific first; the last one is the calibration sweep.
    """
    found = _op_remedies(report, model)
    limit = available or calibration_samples * 16
    counts = sorted({min(calibration_samples * k, limit) for k in (1, 4, 16)})
    if len(counts) > 1:
        found.append(
            f"Calibrate on more examples: {command} --calibration-samples "
            f"{','.join(map(str, counts))} tries each in turn."
        )
    else:
        found.append(
            f"Calibration already uses all {limit} training examples: train on more varied "
            "data (a larger --limit) to calibrate on."
        )
    return list(dict.fromkeys(found))


def model_digest(data: bytes) -> str:
    """SHA-256 of a model's bytes: ties ``quantization.json`` to the file it describes."""
    return hashlib.sha256(data).hexdigest()


def check_report_free(folder: Path, overwrite: bool) -> None:
    """Refuse before any work when ``--report`` cannot write its two files.

    Args:
        folder: Where the model (and so the report) goes.
        overwrite: Replace existing reports.

    Raises:
        EdgennError: A report exists and ``overwrite`` is off.
        MissingDependencyError: matplotlib (for the PNG) is not installed.
    """
    for name in (REPORT_JSON, REPORT_PNG):
        refuse_existing(Path(folder) / name, overwrite)
    if not optional.available("matplotlib"):
        raise optional.missing("matplotlib", "--report")


def stamp(report: QuantizationReport, model_path: Path) -> None:
    """Tie a report to the model file it describes (its name and SHA-256).

    Args:
        report: The report.
        model_path: The model, already written.
    """
    report.model = Path(model_path).name
    report.model_sha256 = model_digest(Path(model_path).read_bytes())


def write_report(report: QuantizationReport, model_path: Path) -> tuple[Path, Path]:
    """Write ``quantization.json`` and ``quantization.png`` beside a model, each atomically.

    Args:
        report: The report (``model`` and ``model_sha256`` are set from ``model_path``).
        model_path: The model it belongs to (already written).

    Returns:
        The two paths.
    """
    model_path = Path(model_path)
    stamp(report, model_path)
    json_path = model_path.parent / REPORT_JSON
    png_path = model_path.parent / REPORT_PNG
    atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_bytes(png_path, plot(report))
    return json_path, png_path


def plot(report: QuantizationReport) -> bytes:
    """SNR of every op's output in execution order, coloured by where its error comes from.

    Args:
        report: The report.

    Returns:
        PNG bytes.
    """
    plt = optional.pyplot("--report")
    ops = sorted((e for e in report.ops if e.snr_db is not None), key=lambda e: e.index)
    colours = {INTRODUCED: "tab:red", INHERITED: "tab:orange"}
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(ops) + 2), 4.5))
    x = np.arange(len(ops))
    ax.bar(x, [e.snr_db for e in ops], color=[colours.get(e.origin, "tab:grey") for e in ops])
    inputs = [e.input_snr_db if e.input_snr_db is not None else np.nan for e in ops]
    ax.plot(x, inputs, "k_", markersize=14, label="worst input SNR")
    ax.set_xticks(x, [f"{e.index} {e.op}" for e in ops], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("output SNR vs float (dB, higher is better)")
    title = f"{report.model or 'model'}: {report.precision or 'quantized'} vs float"
    ax.set_title(f"{title}, {report.samples} samples (red: error introduced, orange: inherited)")
    ax.grid(axis="y", alpha=0.3)
    if ops:
        ax.legend(loc="lower left", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def load_report(model_path: Path) -> dict[str, Any] | None:
    """The ``quantization.json`` beside a model, when there is one.

    Args:
        model_path: The model.

    Returns:
        The document with a ``stale`` flag (True when it describes another file, or this file
        as it was before it changed), or None when there is none.

    Raises:
        EdgennError: The file is unreadable or not a report.
    """
    path = Path(model_path).parent / REPORT_JSON
    if not path.exists():
        return None
    raw = read_regular(path, "a quantization report", _MAX_REPORT_BYTES)
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgennError(
            f"{path} is not valid JSON ({exc}); expected a quantization report."
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ops"), list):
        raise EdgennError(f"{path} has no 'ops' list; expected a quantization report.")
    digest = model_digest(Path(model_path).read_bytes())
    doc["stale"] = doc.get("model") != Path(model_path).name or doc.get("model_sha256") != digest
    return doc


def summary(doc: dict[str, Any], count: int = 5) -> dict[str, Any]:
    """The part of a stored report ``edgenn inspect`` shows: figures and the worst ops."""
    keys = (
        "model",
        "stale",
        "precision",
        "written_precision",
        "samples",
        "output_snr_db",
        "seconds",
    )
    if "error" in doc:
        return {"error": doc["error"]}
    return {
        **{k: doc.get(k) for k in keys},
        "worst": doc["ops"][:count],
        "introduced_by": doc.get("introduced_by", []),
        "remedies": doc.get("remedies", []),
    }
