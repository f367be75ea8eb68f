"""[host] The Keras row of ``edgenn bench``: a run directory's model as the float reference.

``edgenn.bench`` (device side) never imports TensorFlow; when a run directory is among the models
it starts ``python -m edgenn.host.keras_bench`` in a child process, which measures the Keras model with
the same statistics and prints one JSON row.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edgenn import artifact
from edgenn.bench import (
    BenchOptions,
    BenchRow,
    fill_timing,
    peak_rss_mb,
    record_accuracy,
    scoring_inputs,
    worker_reply,
)
from edgenn.errors import EdgennError


def bench_keras(run_dir: Path, options: BenchOptions) -> BenchRow:
    """The Keras model of a run directory, as the float reference (needs TensorFlow).

    Args:
        run_dir: The run directory.
        options: As for :func:`bench_tflite`.

    Returns:
        The row.
    """
    row = BenchRow(model=str(run_dir), format="keras", threads=options.threads, delegate="cpu")
    try:
        from edgenn.host.models import load_keras_model
        from edgenn.host.tfutil import import_keras

        keras = import_keras("A Keras row in edgenn bench")
        start = time.perf_counter_ns()
        model = load_keras_model(run_dir)
        row.init_ms = round((time.perf_counter_ns() - start) / 1e6, 4)
        row.runtime = f"keras {keras.__version__}"
        row.size_bytes = (run_dir / "model.keras").stat().st_size
        info = artifact.read_companions(run_dir)
        spec, labels = info.spec, info.labels
        artifact.check_labels(labels, int(np.prod(model.outputs[0].shape[1:])), str(run_dir))
        x_test, y_test, reason = scoring_inputs(options, spec, labels)
        if reason:
            row.note = f"accuracy not scored: {reason}"
        feed = x_test[:1] if x_test is not None else np.zeros((1, *spec.input_shape), np.float32)
        row.input = "dataset" if x_test is not None else "generated"
        fill_timing(row, lambda: model(feed, training=False), options)
        row.peak_rss_mb = peak_rss_mb()
        if x_test is not None:
            record_accuracy(row, model.predict(x_test, batch_size=256, verbose=0), y_test)
    except EdgennError as exc:
        row.error = str(exc)
    return row


if __name__ == "__main__":
    # The child process's entry point: its one stdout line is the protocol of edgenn.bench.
    print(worker_reply(bench_keras, sys.stdin.read()))
