"""Make the small edgenn models that the device-side tests use (they run without TensorFlow).

    .venv/bin/python scripts/make_test_models.py

Trains a tiny CNN on 2,000 Fashion-MNIST training images (seed 0) and converts it with edgenn
convert to fp32, int8 with float I/O, int8 with uint8 I/O (Edge TPU style) and int8 with int8
I/O (microcontrollers), into tests/data/.
The TensorFlow-side tests (test_convert.py) check conversion itself on freshly trained models;
these committed files let the device suite exercise real edgenn models on a machine without
TensorFlow, as a Pi would.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgenn import artifact
from edgenn import datasets as data
from edgenn.host.convert import convert
from edgenn.host.train import TrainConfig, train

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            data=data.DataSpec(limit=2000, seed=0),
            model="cnn",
            filters=[8, 16],
            dense=32,
            epochs=6,
            patience=0,
        )
        run = train(config, Path(tmp) / "run", progress=False).run_dir
        OUT.mkdir(parents=True, exist_ok=True)
        for name, kwargs in {
            "tiny_cnn_fp32": {"quantize": "fp32"},
            "tiny_cnn_int8": {"quantize": "int8"},
            "tiny_cnn_uint8io": {"quantize": "int8", "io_type": "uint8", "target": "edgetpu"},
            "tiny_cnn_micro": {"quantize": "int8", "target": "micro"},
        }.items():
            folder = Path(tmp) / name
            result = convert(run, folder / f"{name}.tflite", **kwargs)
            shutil.copy(result.output, OUT / f"{name}.tflite")
            print(f"{name}: {result.size_bytes} B, accuracy {result.converted_accuracy:.2%}")
        for companion in (artifact.LABELS_FILE, artifact.PREPROCESS_FILE):
            shutil.copy(run / companion, OUT / companion)


if __name__ == "__main__":
    main()
