"""[device] Benchmark models side by side: latency statistics, memory, size and accuracy.

The statistics are those of LiteRT's ``benchmark_model`` (init time, first inference, warm-up
mean, then mean / std / min / percentiles / max over the counted runs of ``invoke()``), so figures
can be compared with it. Each model runs in its own child process: its peak RSS is its own, and a
model that crashes its runtime becomes a row with an error while the other rows still run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import artifact, classify, datasets, optional, preprocess, tflite_model
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import MAX_READ_BYTES, atomic_write_bytes, atomic_write_text, open_regular

#: What a row needs in the JSON output (checked by the tests).
ROW_KEYS = (
    "model",
    "size_bytes",
    "init_ms",
    "first_ms",
    "latency_ms",
    "throughput_per_s",
    "peak_rss_mb",
    "accuracy",
    "runtime",
    "threads",
    "delegate",
    "error",
)


@dataclasses.dataclass
class LatencyStats:
    """Milliseconds over the counted runs."""

    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples_ms: np.ndarray) -> LatencyStats:
        """Statistics of a sample of run times (ms)."""
        s = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(s, [50, 90, 99])
        return cls(
            *(round(float(v), 5) for v in (s.mean(), s.std(), s.min(), p50, p90, p99, s.max()))
        )


@dataclasses.dataclass
class BenchRow:
    """One model's figures (``--json`` prints a list of these).

    Attributes:
        model: The file (or run directory for a Keras row).
        format: ``tflite``, ``onnx`` or ``keras``.
        size_bytes: File size.
        init_ms: Load and allocate.
        first_ms: First inference.
        warmup_ms: Mean of the warm-up runs.
        latency_ms: Statistics over the counted runs.
        throughput_per_s: Inferences per second at the mean latency.
        peak_rss_mb: Peak resident memory of the process that ran this model.
        accuracy: Test-split accuracy (None without a matching data set).
        accuracy_drop: Points below the reference row (the Keras model, else the first model).
        examples: Test examples scored.
        runtime: Runtime name and version.
        threads: Interpreter threads (None: the runtime's default).
        delegate: External delegate, or ``xnnpack`` / ``none`` for LiteRT's CPU kernels.
        delegated_ops: Ops the external delegate took (None without one).
        input: ``dataset`` (a real test image) or ``generated`` (random, of the right dtype).
        runs: Counted runs.
        note: Anything the reader should know about this row.
        error: Why the row has no figures (None when it has).
        samples_ms: Every counted run (for --plot; not printed).
    """

    model: str
    format: str = "tflite"
    size_bytes: int | None = None
    init_ms: float | None = None
    first_ms: float | None = None
    warmup_ms: float | None = None
    latency_ms: LatencyStats | None = None
    throughput_per_s: float | None = None
    peak_rss_mb: float | None = None
    accuracy: float | None = None
    accuracy_drop: float | None = None
    examples: int = 0
    runtime: str | None = None
    threads: int | None = None
    delegate: str | None = None
    delegated_ops: int | None = None
    input: str | None = None
    runs: int = 0
    note: str | None = None
    error: str | None = None
    samples_ms: list[float] = dataclasses.field(default_factory=list, repr=False)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        """The JSON row (without the per-run samples unless asked)."""
        doc = dataclasses.asdict(self)
        if not samples:
            doc.pop("samples_ms")
        return doc


@dataclasses.dataclass
class BenchOptions:
    """Options shared by every row; the CLI's defaults are these fields' defaults.

    Attributes:
        dataset: Data set whose test split scores accuracy (None: not scored).
        data_dir: Fashion-MNIST folder.
        runs: Counted runs per model.
        warmup: Uncounted runs before them.
        threads: Interpreter threads (None: the runtime's default).
        xnnpack: LiteRT's XNNPACK delegate (False: the reference kernels).
        delegate: External delegate (see :class:`edgenn.runtime.Runner`).
        accuracy_limit: Score accuracy on the first N test examples only.
        runtime: A name of :data:`edgenn.runtime.RUNTIMES` (None: the first installed).
    """

    dataset: str | None = datasets.DEFAULT_DATASET
    data_dir: str | None = None
    runs: int = 200
    warmup: int = 10
    threads: int | None = None
    xnnpack: bool = True
    delegate: str | None = None
    accuracy_limit: int | None = None
    runtime: str | None = None

    def validate(self) -> None:
        """Raise UsageError for counts out of range."""
        if self.runs < 1:
            raise UsageError(f"-n/--runs must be at least 1; received {self.runs}.")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more; received {self.warmup}.")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be at least 1; received {self.threads}.")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (VmHWM on Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 2)
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in KiB on Linux and bytes on macOS.
    return round(peak / (1024 * 1024 if platform.system() == "Darwin" else 1024), 2)


def _preview(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def label_mismatch(model_labels: list[str], data_labels: list[str], dataset: str) -> str | None:
    """Why a model's outputs cannot be scored against a data set's classes (None: they can).

    An accuracy compares output index ``i`` with the data set's class ``i``: unless the model's
    labels are the data set's class names in the same order, that figure is meaningless.

    Args:
        model_labels: The model's labels (empty: unknown, scored by index).
        data_labels: The data set's class names.
        dataset: The data set's name, for the message.

    Returns:
        The reason, naming both lists, or None.
    """
    if not model_labels or list(model_labels) == list(data_labels):
        return None
    return (
        f"the model's {len(model_labels)} labels ({_preview(model_labels)}) are not {dataset}'s "
        f"{len(data_labels)} classes ({_preview(data_labels)}); pass the data set the model was "
        "trained on, or --dataset none"
    )


def scoring_inputs(options: BenchOptions, spec: preprocess.PreprocessSpec, labels: list[str]):
    """The data set's test inputs shaped for this model.

    Args:
        options: The data set to load.
        spec: The model's recipe.
        labels: The model's labels, checked against the data set's class names.

    Returns:
        ``(x, y, None)``, or ``(None, None, reason)`` when accuracy cannot be scored.
    """
    if not options.dataset:
        return None, None, "no --dataset"
    if spec.kind != "image":
        return None, None, "accuracy on a tabular model needs its CSV; not scored"
    # Load the images at the model's shape, as training did: one resize, from the file.
    spec_data = datasets.DataSpec(
        dataset=options.dataset,
        data_dir=options.data_dir,
        input_size=list(spec.image_size),
        color_mode=spec.color_mode,
    )
    splits = datasets.make_splits(spec_data, datasets.load_dataset(spec_data))
    reason = label_mismatch(labels, splits.labels, options.dataset)
    if reason:
        return None, None, reason
    x = datasets.adapt_images(splits.x_test, splits.spec, spec)
    y = splits.y_test
    if options.accuracy_limit:
        x, y = x[: options.accuracy_limit], y[: options.accuracy_limit]
    return preprocess.pixels_to_input(x, spec), y, None


def _time(fn: Callable[[], object], count: int) -> np.ndarray:
    samples = np.empty(count, dtype=np.float64)
    for i in range(count):
        start = time.perf_counter_ns()
        fn()
        samples[i] = (time.perf_counter_ns() - start) / 1e6
    return samples


def record_accuracy(row: BenchRow, outputs: np.ndarray, labels: np.ndarray) -> None:
    """Store the accuracy of a model's outputs on the test split in ``row``.

    Args:
        row: The row to fill.
        outputs: Model outputs ``(N, units)``.
        labels: True classes.
    """
    row.accuracy = round(classify.accuracy(outputs, labels), 6)
    row.examples = int(len(labels))


def fill_timing(row: BenchRow, invoke: Callable[[], object], options: BenchOptions) -> None:
    """Time the first call, the warm-up and the counted runs of ``invoke`` into ``row``.

    Args:
        row: The row to fill.
        invoke: One inference, inputs already set (as benchmark_model times ``Invoke``).
        options: Warm-up and run counts.

    The first inference is timed here unless the caller already set ``row.first_ms``.
    """
    if row.first_ms is None:
        start = time.perf_counter_ns()
        invoke()
        row.first_ms = round((time.perf_counter_ns() - start) / 1e6, 5)
    if options.warmup:
        row.warmup_ms = round(float(_time(invoke, options.warmup).mean()), 5)
    samples = _time(invoke, options.runs)
    row.latency_ms = LatencyStats.of(samples)
    row.throughput_per_s = round(1000.0 / row.latency_ms.mean, 2) if row.latency_ms.mean else None
    row.runs = options.runs
    row.samples_ms = [round(float(v), 5) for v in samples]


def _since_ms(start_ns: int, digits: int = 5) -> float:
    return round((time.perf_counter_ns() - start_ns) / 1e6, digits)


def _tflite_scoring(parsed: tflite_model.TFLiteFile, options: BenchOptions, row: BenchRow):
    """The test split for a .tflite model, or ``(None, None)`` with ``row.note`` saying why.

    A model that comes without labels or recipe (a third-party model) is timed on generated
    inputs; one whose labels do not fit its output is an error, as for ONNX and Keras rows.
    """
    try:
        info = artifact.model_info(parsed)
    except artifact.LabelMismatchError:
        raise
    except EdgennError as exc:
        row.note = f"accuracy not scored: {exc.message}"
        return None, None
    if len(parsed.inputs) != 1:
        row.note = f"accuracy not scored: the model has {len(parsed.inputs)} inputs"
        return None, None
    x_test, y_test, reason = scoring_inputs(options, info.spec, info.labels)
    if reason:
        row.note = f"accuracy not scored: {reason}"
    return x_test, y_test


def _set_generated_inputs(runner) -> None:
    """Random inputs of the right dtype and shape for every input (third-party models)."""
    rng = np.random.default_rng(0)
    for detail in runner.input_details:
        dtype = np.dtype(detail["dtype"])
        if dtype.kind in "fc":
            value = rng.random(detail["shape"], dtype=np.float32).astype(dtype)
        elif dtype == np.bool_:
            value = rng.integers(0, 2, detail["shape"]).astype(dtype)
        else:
            info = np.iinfo(dtype)
            low, high = max(info.min, -128), min(info.max, 127)
            value = rng.integers(low, high + 1, detail["shape"]).astype(dtype)
        runner.interpreter.set_tensor(detail["index"], value)


def bench_tflite(path: Path, options: BenchOptions) -> BenchRow:
    """Benchmark one .tflite model in this process.

    Args:
        path: The model.
        options: Runs, warm-up, threads, delegate, runtime, data set.

    Returns:
        The row (``error`` set instead of raising for a model that cannot run).
    """
    from edgenn.runtime import Runner

    row = BenchRow(model=str(path), threads=options.threads)
    runner = None
    try:
        parsed = tflite_model.load(path)
        row.size_bytes = parsed.size_bytes
        start = time.perf_counter_ns()
        runner = Runner(
            parsed, options.threads, options.xnnpack, options.delegate, runtime=options.runtime
        )
        row.init_ms = _since_ms(start, 4)
        row.runtime = f"{runner.runtime.name} {runner.runtime.version}"
        row.delegate = options.delegate or ("xnnpack" if options.xnnpack else "none")
        row.delegated_ops = runner.delegated_ops
        # First inference and the memory peak before any data set is loaded, so that the RSS
        # figure is the runtime's and the model's, not the test images'.
        start = time.perf_counter_ns()
        runner.invoke()  # a runtime failure here is an EdgennError, so a row error
        row.first_ms = _since_ms(start)
        row.peak_rss_mb = peak_rss_mb()
        x_test, y_test = _tflite_scoring(parsed, options, row)
        if x_test is not None:
            runner.set_input(x_test[0])
        else:
            _set_generated_inputs(runner)
        row.input = "dataset" if x_test is not None else "generated"
        fill_timing(row, runner.interpreter.invoke, options)
        if x_test is not None:
            record_accuracy(row, runner.predict(x_test), y_test)
    except EdgennError as exc:
        row.error = str(exc)
    except RuntimeError as exc:  # the timed loop calls the interpreter itself
        row.error = str(runner.failure(exc)) if runner is not None else str(exc)
    return row


def _onnx_session(ort, path: Path, options: BenchOptions):
    so = ort.SessionOptions()
    if options.threads:
        so.intra_op_num_threads = options.threads
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise EdgennError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}") from None


def _onnx_scoring(path: Path, session, options: BenchOptions, row: BenchRow):
    """The test split for an ONNX model (recipe beside it), or ``(None, None)`` and a note."""
    if not artifact.has_companions(path.parent):
        row.note = f"accuracy not scored: no {artifact.PREPROCESS_FILE} beside {path.name}"
        return None, None
    info = artifact.read_companions(path.parent)
    units = int(
        np.prod([d if isinstance(d, int) else 1 for d in session.get_outputs()[0].shape[1:]])
    )
    artifact.check_labels(info.labels, units, str(path))
    x_test, y_test, reason = scoring_inputs(options, info.spec, info.labels)
    if reason:
        row.note = f"accuracy not scored: {reason}"
    return x_test, y_test


def bench_onnx(path: Path, options: BenchOptions) -> BenchRow:
    """Benchmark an ONNX model with ONNX Runtime (what many Pi users would pick instead).

    The preprocessing recipe and labels are read from the companion files beside the model.

    Args:
        path: The ``.onnx`` file.
        options: As for :func:`bench_tflite`.

    Returns:
        The row.
    """
    row = BenchRow(model=str(path), format="onnx", threads=options.threads, delegate="cpu")
    try:
        # Only a regular file reaches ONNX Runtime (a FIFO would block it, /dev/zero flood it).
        fd = open_regular(path, "an ONNX model", MAX_READ_BYTES)
        row.size_bytes = os.fstat(fd).st_size
        os.close(fd)
        ort = optional.require("onnxruntime", "Benchmarking an ONNX model")
        start = time.perf_counter_ns()
        session = _onnx_session(ort, path, options)
        row.init_ms = _since_ms(start, 4)
        row.runtime = f"onnxruntime {ort.__version__}"
        name = session.get_inputs()[0].name
        shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
        start = time.perf_counter_ns()
        session.run(None, {name: np.zeros(shape, dtype=np.float32)})
        row.first_ms = _since_ms(start)
        row.peak_rss_mb = peak_rss_mb()  # before the test images are loaded, as for .tflite rows
        x_test, y_test = _onnx_scoring(path, session, options, row)
        if x_test is not None:
            feed = x_test[:1]
        else:
            feed = np.random.default_rng(0).random(shape, dtype=np.float32)
        row.input = "dataset" if x_test is not None else "generated"
        fill_timing(row, lambda: session.run(None, {name: feed}), options)
        if x_test is not None:
            runs = [session.run(None, {name: x_test[i : i + 1]})[0] for i in range(len(x_test))]
            record_accuracy(row, np.concatenate(runs), y_test)
    except EdgennError as exc:
        row.error = str(exc)
    return row


def bench_one(model: Path, options: BenchOptions) -> BenchRow:
    """Benchmark one ``.tflite`` or ``.onnx`` model in this process.

    Args:
        model: The model file.
        options: Shared options.

    Returns:
        The row.
    """
    model = Path(model)
    if model.is_dir():
        # A run directory's Keras model needs TensorFlow, which device code never imports: it is
        # measured by the host module edgenn.host.keras_bench in its own process (see _run_isolated).
        return BenchRow(
            model=str(model),
            format="keras",
            error="run directories are benchmarked in their own process",
        )
    if model.suffix.lower() == ".onnx":
        return bench_onnx(model, options)
    return bench_tflite(model, options)


def bench(
    models: list[Path],
    options: BenchOptions,
    isolate: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[BenchRow]:
    """Benchmark several models, one row each, each in its own process.

    Args:
        models: Model files (and run directories for Keras rows).
        options: Shared options.
        isolate: Run each model in a child process (separate peak RSS; a crash is contained).
        progress: Optional ``progress(done, total, model)``.

    Returns:
        The rows, with ``accuracy_drop`` against the Keras row (else the first row with an
        accuracy).

    Raises:
        UsageError: Options out of range or no model given.
    """
    options.validate()
    if not models:
        raise UsageError("Give at least one model to benchmark.")
    rows = []
    for i, model in enumerate(models):
        if progress:
            progress(i, len(models), str(model))
        rows.append(
            _run_isolated(Path(model), options) if isolate else bench_one(Path(model), options)
        )
    if progress:
        progress(len(models), len(models), "")
    reference = next((r for r in rows if r.format == "keras" and r.accuracy is not None), None)
    reference = reference or next((r for r in rows if r.accuracy is not None), None)
    for r in rows:
        if reference is not None and r.accuracy is not None:
            r.accuracy_drop = round((reference.accuracy - r.accuracy) * 100, 4)
    return rows


def _run_isolated(model: Path, options: BenchOptions) -> BenchRow:
    request = json.dumps({"model": str(model), "options": dataclasses.asdict(options)})
    worker = "edgenn.host.keras_bench" if model.is_dir() else "edgenn.bench"
    proc = subprocess.run(
        [sys.executable, "-m", worker],
        input=request,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:]
        return BenchRow(
            model=str(model), error=f"the benchmark process died ({how}) {' '.join(tail)}".strip()
        )
    doc = json.loads(lines[-1])
    stats = doc.pop("latency_ms")
    row = BenchRow(**doc)
    row.latency_ms = LatencyStats(**stats) if stats else None
    return row


def write_csv(rows: list[BenchRow], path: Path) -> None:
    """Write the rows as CSV (latency statistics flattened to ``latency_p50_ms`` etc.).

    Args:
        rows: The rows.
        path: Destination (written atomically).
    """
    buf = io.StringIO()
    stats = [f.name for f in dataclasses.fields(LatencyStats)]
    fields = [k for k in BenchRow.__dataclass_fields__ if k not in ("latency_ms", "samples_ms")]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields + [f"latency_{s}_ms" for s in stats])
    for r in rows:
        d = r.to_dict()
        lat = d["latency_ms"] or {}
        writer.writerow(
            [d[k] if d[k] is not None else "" for k in fields] + [lat.get(s, "") for s in stats]
        )
    atomic_write_text(path, buf.getvalue())


def check_plotting() -> None:
    """Raise before benchmarking when --plot cannot be honoured."""
    if not optional.available("matplotlib"):
        raise optional.missing("matplotlib", "--plot")


def plot(rows: list[BenchRow], path: Path) -> None:
    """Latency distribution per model, and accuracy versus latency with size as marker area.

    Args:
        rows: The rows.
        path: PNG to write.
    """
    plt = optional.pyplot("--plot")

    ok = [r for r in rows if r.samples_ms]
    names = [Path(r.model).name for r in ok]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, max(4, 0.5 * len(ok) + 2)))
    if ok:
        ax1.boxplot([r.samples_ms for r in ok], orientation="horizontal", showfliers=True)
        ax1.set_yticks(range(1, len(ok) + 1), names)
    ax1.set_xscale("log")
    ax1.set_xlabel("latency per inference (ms, log scale)")
    ax1.set_title("latency distribution")
    scored = [r for r in ok if r.accuracy is not None]
    if scored:
        sizes = np.array([r.size_bytes or 0 for r in scored], dtype=float)
        area = 40 + 800 * sizes / max(sizes.max(), 1)
        ax2.scatter(
            [r.latency_ms.p50 for r in scored],
            [r.accuracy * 100 for r in scored],
            s=area,
            alpha=0.5,
        )
        for r in scored:
            ax2.annotate(Path(r.model).name, (r.latency_ms.p50, r.accuracy * 100), fontsize=8)
        ax2.set_xscale("log")
    else:
        ax2.text(0.5, 0.5, "no accuracy scored", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_xlabel("p50 latency (ms, log scale)")
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title("accuracy vs latency (marker area: file size)")
    ax2.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def worker_reply(bench_fn: Callable[[Path, BenchOptions], BenchRow], request: str) -> str:
    """A benchmark child process's answer to its request: the protocol of :func:`bench`.

    A child (``python -m edgenn.bench`` for .tflite and .onnx models, ``python -m
    edgenn.host.keras_bench`` for run directories) reads one JSON request on stdin, and its
    ``__main__`` entry prints this reply as its one stdout line, which ``_run_isolated`` reads.

    Args:
        bench_fn: What measures the model.
        request: ``{"model": path, "options": BenchOptions fields}`` as JSON.

    Returns:
        The row, with its samples, as one JSON line.
    """
    doc = json.loads(request)
    row = bench_fn(Path(doc["model"]), BenchOptions(**doc["options"]))
    return json.dumps(row.to_dict(samples=True))


if __name__ == "__main__":
    # The child process's entry point: its one stdout line is the protocol.
    print(worker_reply(bench_one, sys.stdin.read()))
