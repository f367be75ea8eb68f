"""Shared fixtures: real data (Debian's Fashion-MNIST, sklearn's files, datasets/ samples)."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "datasets" / "fashion-mnist-samples"
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")

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
