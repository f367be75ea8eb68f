"""Shared fixtures: real data (Debian's Fashion-MNIST, sklearn's files, datasets/ samples)."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
import threading
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "datasets" / "fashion-mnist-samples"
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
#: Real third-party models, extracted from MediaPipe 0.10.21's wheel by scripts/setup.sh.
MODELS = REPO / "tests" / ".models"

# Keep TensorFlow quiet in the test log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


@pytest.fixture(scope="session")
def fmnist_dir() -> Path:
    """Debian's dataset-fashion-mnist files (scripts/setup.sh installs the package)."""
    if not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(
            "Debian's dataset-fashion-mnist is not installed; run: bash scripts/setup.sh test"
        )
    return DEBIAN_FMNIST


@pytest.fixture(scope="session")
def sklearn_data_dir() -> Path:
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None, "scikit-learn is part of the [test] extra"
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@pytest.fixture(scope="session")
def iris_csv(tmp_path_factory, sklearn_data_dir) -> Path:
    """scikit-learn's bundled iris data (150 rows, 3 species) as a CSV with a text target."""
    names = ["setosa", "versicolor", "virginica"]
    rows = list(csv.reader(open(sklearn_data_dir / "iris.csv")))[1:]
    path = tmp_path_factory.mktemp("iris") / "iris.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        for r in rows:
            w.writerow([*r[:4], names[int(r[4])]])
    return path


@pytest.fixture(scope="session")
def diabetes_csv(tmp_path_factory, sklearn_data_dir) -> Path:
    """scikit-learn's bundled diabetes data (442 patients, 10 features, a disease-progression
    score to predict) as a CSV: a real regression table."""
    features = np.loadtxt(gzip.open(sklearn_data_dir / "diabetes_data_raw.csv.gz"))
    target = np.loadtxt(gzip.open(sklearn_data_dir / "diabetes_target.csv.gz"))
    path = tmp_path_factory.mktemp("diabetes") / "diabetes.csv"
    cols = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*cols, "progression"])
        for f, t in zip(features, target):
            w.writerow([*(f"{v:g}" for v in f), f"{t:g}"])
    return path


@pytest.fixture(scope="session")
def breast_cancer_csv(tmp_path_factory, sklearn_data_dir) -> Path:
    """scikit-learn's bundled Wisconsin breast-cancer data: 569 rows, 30 features, 2 classes."""
    rows = list(csv.reader(open(sklearn_data_dir / "breast_cancer.csv")))[1:]
    path = tmp_path_factory.mktemp("cancer") / "cancer.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*(f"f{i}" for i in range(30)), "diagnosis"])
        for r in rows:
            w.writerow([*r[:30], "malignant" if r[30] == "0" else "benign"])
    return path


def third_party_model(name: str) -> Path:
    path = MODELS / f"{name}.tflite"
    if not path.is_file():
        pytest.fail(f"{path} is missing; run: bash scripts/setup.sh test")
    return path


@pytest.fixture(scope="session")
def face_detection() -> Path:
    """MediaPipe's face detector: fp16 weights (DEQUANTIZE), float I/O, 2 outputs."""
    return third_party_model("face_detection_short_range")


@pytest.fixture(scope="session")
def sparse_face_detection() -> Path:
    """MediaPipe's full-range face detector: sparse weights (DENSIFY)."""
    return third_party_model("face_detection_full_range_sparse")


@pytest.fixture(scope="session")
def selfie_segmentation() -> Path:
    """MediaPipe's selfie segmentation: a custom op (Convolution2DTransposeBias)."""
    return third_party_model("selfie_segmentation")


@pytest.fixture(scope="session")
def sine_float() -> Path:
    """The float sine model that the tflite-micro package ships."""
    spec = importlib.util.find_spec("tflite_micro")
    assert spec is not None, "tflite-micro is part of the [test] extra"
    return (
        Path(list(spec.submodule_search_locations)[0])
        / "python"
        / "tflite_micro"
        / "sine_float.tflite"
    )


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory):
    """A tiny CNN run on 2,000 Fashion-MNIST images (needs TensorFlow)."""
    from edgenn import datasets as data
    from edgenn.host.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "fmnist-cnn"
    config = TrainConfig(
        data=data.DataSpec(limit=2000, seed=0), model="cnn", filters=[16, 32], epochs=4, patience=0
    )
    return train(config, out)


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory):
    """A tiny 784-32-10 MLP run on 2,000 Fashion-MNIST images (needs TensorFlow)."""
    from edgenn import datasets as data
    from edgenn.host.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "fmnist-mlp"
    config = TrainConfig(
        data=data.DataSpec(limit=2000, seed=0), model="mlp", hidden=[32], epochs=4, patience=0
    )
    return train(config, out)


def finishes(fn, seconds=30, fifos=()):
    """Run ``fn`` in a thread; fail (and unblock any reader of ``fifos``) if it hangs."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:  # a reader blocked on a FIFO gets EOF once a writer comes and goes
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"hung for {seconds} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")
