"""[device] Deterministic, stratified train / validation / test splits, and ``data.json``.

The same :class:`DataSpec` always gives the same splits, and the test split does not depend on
``limit`` or the validation fraction, so training, conversion and ``edgenn bench`` on a Pi all
score on the same examples. A run directory's ``data.json`` is the spec that rebuilds them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import preprocess
from edgenn.datasets.dataset import Dataset, DataSpec
from edgenn.datasets.sources import load_dataset
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_write_text
from edgenn.preprocess import PreprocessSpec

#: The file in a run directory that holds its :class:`DataSpec`.
DATA_FILE = "data.json"


@dataclasses.dataclass
class Splits:
    """Train / validation / test arrays of one data set.

    Attributes:
        x_train: Training inputs (raw: uint8 images or unscaled features).
        y_train: Training targets.
        x_val: Validation inputs (model selection, early stopping).
        y_val: Validation targets.
        x_test: Test inputs: never seen in training or model selection.
        y_test: Test targets.
        labels: Class names.
        spec: Preprocessing recipe (for tabular data: mean and std of the training split).
        data: The spec that rebuilds these splits.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    spec: PreprocessSpec
    data: DataSpec

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"``."""
        return self.spec.task

    def model_inputs(self, x: np.ndarray) -> np.ndarray:
        """Raw inputs of any split as float32 model inputs.

        Args:
            x: Raw inputs from one of the splits.

        Returns:
            float32 array ready for the model.
        """
        if self.spec.kind == "image":
            return preprocess.pixels_to_input(x, self.spec)
        return preprocess.features_to_input(x, self.spec)

    def summary(self) -> dict[str, Any]:
        """Sizes of the splits, for metrics.json."""
        return {
            "n_train": int(len(self.y_train)),
            "n_val": int(len(self.y_val)),
            "n_test": int(len(self.y_test)),
        }


def _strata(y: np.ndarray, task: str) -> np.ndarray:
    """One stratum id per example: the class, or the target's quintile for regression."""
    if task == "classification":
        return y
    # Regression: stratify on quantile bins so each split spans the range of the target.
    edges = np.quantile(y, [0.2, 0.4, 0.6, 0.8])
    return np.searchsorted(edges, y)


def stratified_indices(
    strata: np.ndarray, fraction_or_count: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (taken, rest), keeping each stratum's share.

    Args:
        strata: One stratum id per example (the class, or a target bin).
        fraction_or_count: Share (float < 1) or number of examples (int) to take.
        seed: Seed; the same seed gives the same split.

    Returns:
        Sorted index arrays ``(taken, rest)``.
    """
    n = len(strata)
    if isinstance(fraction_or_count, float) and fraction_or_count < 1:
        want = fraction_or_count * n
    else:
        want = min(int(fraction_or_count), n)
    rng = np.random.default_rng(seed)
    taken = []
    groups = np.unique(strata)
    # Largest-remainder allocation: exact total, every stratum gets its share.
    counts = {g: int(np.sum(strata == g)) for g in groups}
    quotas = {g: want * counts[g] / n for g in groups}
    alloc = {g: int(np.floor(quotas[g])) for g in groups}
    remainder = int(round(want)) - sum(alloc.values())
    for g in sorted(groups, key=lambda g: quotas[g] - alloc[g], reverse=True)[: max(remainder, 0)]:
        alloc[g] += 1
    for g in groups:
        members = np.flatnonzero(strata == g)
        taken.append(rng.permutation(members)[: alloc[g]])
    taken_idx = np.sort(np.concatenate(taken)) if taken else np.array([], dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[taken_idx] = False
    return taken_idx, np.flatnonzero(mask)


def _check_split_options(data: DataSpec) -> None:
    """Raise a usage error for fractions outside (0, 1) or a limit below 10 examples."""
    if not 0 < data.val_fraction < 1 or not 0 < data.test_fraction < 1:
        raise UsageError(
            f"--val-fraction {data.val_fraction} and --test-fraction {data.test_fraction} must be "
            "between 0 and 1."
        )
    if data.limit is not None and data.limit < 10:
        raise UsageError(f"--limit {data.limit} is too small; expected at least 10 examples.")


def _pool_and_test(
    ds: Dataset, data: DataSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Set the test split aside first, then limit the rest: ``(pool_x, pool_y, x_test, y_test)``.

    Seeds for each step derive from the user's seed so that changing one step leaves the others.
    """
    if ds.x_test is not None:
        pool_x, pool_y, x_test, y_test = ds.x, ds.y, ds.x_test, ds.y_test
    else:
        test_idx, pool_idx = stratified_indices(
            _strata(ds.y, ds.task), data.test_fraction, data.seed
        )
        pool_x, pool_y = ds.x[pool_idx], ds.y[pool_idx]
        x_test, y_test = ds.x[test_idx], ds.y[test_idx]
    if data.limit is not None and data.limit < len(pool_y):
        keep, _ = stratified_indices(_strata(pool_y, ds.task), int(data.limit), data.seed + 1)
        pool_x, pool_y = pool_x[keep], pool_y[keep]
    return pool_x, pool_y, x_test, y_test


def _fitted_spec(spec: PreprocessSpec, x_train: np.ndarray, y_train: np.ndarray) -> PreprocessSpec:
    """A copy of ``spec``; for tabular data, with the training split's mean and std filled in."""
    spec = dataclasses.replace(spec)
    if spec.kind == "tabular":
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std[std == 0] = 1.0  # constant column: leave it centred, do not divide by zero
        spec.mean = [float(v) for v in mean]
        spec.std = [float(v) for v in std]
        if spec.task == "regression":
            spec.target_mean = float(np.mean(y_train))
            spec.target_std = float(np.std(y_train)) or 1.0
    return spec


def make_splits(data: DataSpec, dataset: Dataset | None = None) -> Splits:
    """Deterministic, stratified train / validation / test splits.

    The test split is fixed first (the data set's own test split, or ``test_fraction`` of all
    examples) and does not depend on ``limit`` or ``val_fraction``. ``limit`` then takes a
    stratified subset of the remaining pool, and ``val_fraction`` of that becomes validation.

    Args:
        data: What to load and how to split it.
        dataset: An already loaded data set (loaded from ``data`` when None).

    Returns:
        The splits. For tabular data the recipe gets the training split's mean and std.

    Raises:
        UsageError: Fractions or limit out of range.
        EdgennError: A split would be empty.
    """
    _check_split_options(data)
    ds = dataset if dataset is not None else load_dataset(data)
    pool_x, pool_y, x_test, y_test = _pool_and_test(ds, data)
    val_idx, train_idx = stratified_indices(
        _strata(pool_y, ds.task), data.val_fraction, data.seed + 2
    )
    if len(train_idx) == 0 or len(val_idx) == 0 or len(y_test) == 0:
        raise EdgennError(
            f"{ds.name} has {len(ds.y)} examples: too few for non-empty train "
            f"({len(train_idx)}), validation ({len(val_idx)}) and test ({len(y_test)}) splits.",
            "Add data or raise --limit.",
        )
    x_train, y_train = pool_x[train_idx], pool_y[train_idx]
    return Splits(
        x_train=x_train,
        y_train=y_train,
        x_val=pool_x[val_idx],
        y_val=pool_y[val_idx],
        x_test=x_test,
        y_test=y_test,
        labels=list(ds.labels),
        spec=_fitted_spec(ds.spec, x_train, y_train),
        data=data,
    )


def representative_sample(
    x: np.ndarray, y: np.ndarray, count: int, seed: int = 0, task: str = "classification"
) -> np.ndarray:
    """A stratified sample of inputs, e.g. to calibrate int8 quantization on the training split.

    Args:
        x: Inputs (normally the training split).
        y: Their targets.
        count: How many to take.
        seed: Seed.
        task: ``classification`` or ``regression`` (how to stratify).

    Returns:
        The sampled inputs.
    """
    idx, _ = stratified_indices(_strata(y, task), int(count), seed)
    return x[idx]


def save_data_spec(data: DataSpec, run_dir: Path) -> None:
    """Write ``data.json`` into a run directory.

    Args:
        data: The spec.
        run_dir: The run directory.
    """
    atomic_write_text(Path(run_dir) / DATA_FILE, json.dumps(data.to_dict(), indent=2) + "\n")


def load_data_spec(run_dir: Path) -> DataSpec:
    """Read ``data.json`` from a run directory.

    Args:
        run_dir: The run directory.

    Returns:
        The spec.

    Raises:
        EdgennError: The file is missing or unreadable.
    """
    path = Path(run_dir) / DATA_FILE
    try:
        return DataSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise EdgennError(
            f"{run_dir} has no {DATA_FILE}; it is not an edgenn run directory."
        ) from None
    except ValueError as exc:
        raise EdgennError(f"{path} is not valid JSON: {exc}.") from None
