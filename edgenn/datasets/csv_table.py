"""[device] A CSV table: numeric feature columns and one named target column.

The task (classes or a number to predict) is taken from the target's values unless the user says
which; standardization is fitted later, on the training split only (:mod:`.splits`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgenn.datasets.dataset import Dataset
from edgenn.errors import EdgennError, UsageError
from edgenn.preprocess import PreprocessSpec

#: A numeric CSV target with at most this many distinct integer values is taken as classes.
MAX_AUTO_CLASSES = 20


def _parse_float(text: str) -> float | None:
    """``text`` as a finite float, else None (NaN and infinities are not usable features)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _read_rows(path: Path) -> list[list[str]]:
    """The file's non-blank rows, header first; at least one data row.

    Raises:
        EdgennError: The file is missing, not UTF-8 CSV, or has no data rows.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        raise EdgennError(f"CSV file not found: {path}.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EdgennError(f"Cannot read {path} as a UTF-8 CSV file: {exc}.") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise EdgennError(f"{path} has no data rows (expected a header row and data rows).")
    return rows


def _split_columns(
    path: Path, header: list[str], rows: list[list[str]], target_index: int
) -> tuple[np.ndarray, list[str]]:
    """Parse the feature columns as float32 and collect the raw target cells.

    Args:
        path: The file, for messages.
        header: Column names.
        rows: Data rows (without the header).
        target_index: Position of the target column.

    Returns:
        ``(features (N, F) float32, target cells)``.

    Raises:
        EdgennError: A row has the wrong number of fields or a feature is not a number.
    """
    features = np.empty((len(rows), len(header) - 1), dtype=np.float32)
    targets = []
    for line_no, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise EdgennError(
                f"{path} line {line_no} has {len(row)} fields; the header has {len(header)}."
            )
        col = 0
        for i, cell in enumerate(row):
            if i == target_index:
                targets.append(cell.strip())
                continue
            value = _parse_float(cell.strip())
            if value is None:
                raise EdgennError(
                    f"{path} line {line_no}, column {header[i]!r}: {cell!r} is not a number; "
                    "feature columns must be numeric.",
                    "Encode categories as numbers or drop the column.",
                )
            features[line_no - 2, col] = value
            col += 1
    return features, targets


def _infer_task(targets: list[str], numeric: list[float | None]) -> str:
    """``auto``: classes when the target is text, or integers with few distinct values."""
    all_numeric = all(v is not None for v in numeric)
    integral = all_numeric and all(float(v).is_integer() for v in numeric)
    distinct = len(set(targets))
    if not all_numeric or (integral and distinct <= MAX_AUTO_CLASSES):
        return "classification"
    return "regression"


def _encode_targets(
    path: Path, target_column: str, targets: list[str], numeric: list[float | None], task: str
) -> tuple[np.ndarray, list[str]]:
    """The target cells as model targets.

    Args:
        path: The file, for messages.
        target_column: The column's name, for messages.
        targets: Raw target cells.
        numeric: Each cell as a number (None where it is not one).
        task: ``classification`` or ``regression``.

    Returns:
        ``(y, labels)``: float64 values and no labels for regression; int64 class indices and the
        class names (numeric ones in numeric order) for classification.

    Raises:
        EdgennError: Regression on a non-numeric target, or a single class.
    """
    all_numeric = all(v is not None for v in numeric)
    if task == "regression":
        if not all_numeric:
            bad = next(t for t, v in zip(targets, numeric) if v is None)
            raise EdgennError(
                f"{path}: target {target_column!r} holds {bad!r}, which is not a number; "
                "regression needs a numeric target.",
                "Use --task classification for a categorical target.",
            )
        return np.array(numeric, dtype=np.float64), []
    if all_numeric:
        keys = sorted(set(targets), key=lambda t: float(t))
    else:
        keys = sorted(set(targets))
    if len(keys) < 2:
        raise EdgennError(
            f"{path}: target {target_column!r} has a single class ({keys[0]!r}); "
            "classification needs at least 2.",
        )
    index = {k: i for i, k in enumerate(keys)}
    return np.array([index[t] for t in targets], dtype=np.int64), keys


def load_csv(path: Path, target_column: str | None, task: str = "auto") -> Dataset:
    """Load a CSV table: numeric feature columns and one named target column.

    Args:
        path: CSV file with a header row.
        target_column: Column to predict.
        task: ``auto`` (classes when the target is text, or integers with at most 20 values),
            ``classification`` or ``regression``.

    Returns:
        The data set (features as float32; standardization is fitted later on the train split).

    Raises:
        EdgennError: The file, the target column or a value is unusable; the message names it.
        UsageError: No target column was given.
    """
    path = Path(path)
    if not target_column:
        raise UsageError(
            f"{path} is a CSV data set; pass --target-column NAME (the column to predict)."
        )
    rows = _read_rows(path)
    header = [h.strip() for h in rows[0]]
    if target_column not in header:
        raise EdgennError(
            f"{path} has no column {target_column!r}; its columns are: {', '.join(header)}.",
            "Pass --target-column with one of them.",
        )
    target_index = header.index(target_column)
    feature_names = [h for i, h in enumerate(header) if i != target_index]
    if not feature_names:
        raise EdgennError(f"{path} has only the target column; expected feature columns too.")
    features, targets = _split_columns(path, header, rows[1:], target_index)
    numeric = [_parse_float(t) for t in targets]
    if task == "auto":
        task = _infer_task(targets, numeric)
    y, labels = _encode_targets(path, target_column, targets, numeric, task)
    spec = PreprocessSpec(
        kind="tabular",
        input_shape=[len(feature_names)],
        task=task,
        feature_names=feature_names,
        target_name=target_column,
    )
    return Dataset(name=str(path), x=features, y=y, labels=labels, spec=spec)
