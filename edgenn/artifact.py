"""[device] A model and its companions: embedded metadata, ``labels.txt`` and ``preprocess.json``.

A model edgenn makes carries what a device needs to use it: the class names and the preprocessing
recipe, embedded in the ``.tflite`` as a metadata entry and also written beside it as two small
files (Coral-style ``labels.txt``, and ``preprocess.json``). A run directory from ``edgenn train``
holds the same two files beside ``model.keras``. This module is the only one that spells those
names or reads and writes them, and the one place that checks that the labels fit the model's
output: a mismatch is an error that says both numbers, in every command.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from edgenn import tflite_model
from edgenn.errors import EdgennError
from edgenn.fileio import atomic_write_text
from edgenn.preprocess import PreprocessSpec

LABELS_FILE = "labels.txt"
PREPROCESS_FILE = "preprocess.json"
#: The name of edgenn's entry in a .tflite file's metadata list.
METADATA_ENTRY = "edgenn"
#: Version of the embedded document, raised when its meaning changes.
METADATA_FORMAT = 1
#: Companion files are a few KB; anything far larger is not one (and is not read into memory).
MAX_COMPANION_BYTES = 4 * 1024 * 1024


class LabelMismatchError(EdgennError):
    """The labels do not fit the model's output (a wrong labels file, not a missing one)."""


@dataclasses.dataclass
class ModelInfo:
    """What travels with a model: its labels and preprocessing.

    Attributes:
        labels: Class names (index = class id); the target's name for a regression model; empty
            when the model came without labels.
        spec: The preprocessing recipe.
        source: Where they came from (``embedded metadata`` or the files beside the model).
    """

    labels: list[str]
    spec: PreprocessSpec
    source: str


def _read_small_text(path: Path, what: str) -> str:
    path = Path(path)
    try:
        if not path.is_file():
            raise EdgennError(f"{path} is not a regular file; expected {what}.")
        if path.stat().st_size > MAX_COMPANION_BYTES:
            raise EdgennError(
                f"{path} has {path.stat().st_size:,} bytes; {what} is at most "
                f"{MAX_COMPANION_BYTES:,}."
            )
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EdgennError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected {what}.",
            "Save it as UTF-8.",
        ) from None
    except OSError as exc:
        raise EdgennError(f"Cannot read {path} ({exc.strerror or exc}); expected {what}.") from None


def read_labels(path: Path) -> list[str]:
    """Read a labels file: one label per line (trailing newlines ignored).

    Args:
        path: The file.

    Returns:
        The labels.

    Raises:
        EdgennError: The file is missing, not a regular file, too large or not UTF-8.
    """
    text = _read_small_text(path, "one label per line").rstrip("\n")
    return text.split("\n") if text else []


def labels_text(labels: list[str]) -> str:
    """The content of ``labels.txt`` for ``labels``."""
    return "".join(f"{label}\n" for label in labels)


def companion_texts(labels: list[str], spec: PreprocessSpec) -> dict[str, str]:
    """The companion files of a model, by file name: ``{labels.txt: ..., preprocess.json: ...}``."""
    return {
        LABELS_FILE: labels_text(labels),
        PREPROCESS_FILE: json.dumps(spec.to_dict(), indent=2) + "\n",
    }


def check_companions_free(
    folder: Path, labels: list[str], spec: PreprocessSpec, overwrite: bool
) -> None:
    """Refuse to write companions over another model's (different content) unless ``overwrite``.

    Args:
        folder: Where the companions would go.
        labels: The labels to write.
        spec: The recipe to write.
        overwrite: Whether replacing different content was asked for.

    Raises:
        EdgennError: A companion exists with other content and ``overwrite`` is false.
    """
    for name, text in companion_texts(labels, spec).items():
        path = Path(folder) / name
        if overwrite or not path.exists():
            continue
        if _read_small_text(path, name) != text:
            raise EdgennError(
                f"{path} exists with different content (another model's?); nothing was written.",
                "Write the model into its own folder, or pass --overwrite.",
            )


def write_companions(folder: Path, labels: list[str], spec: PreprocessSpec) -> list[Path]:
    """Write ``labels.txt`` and ``preprocess.json`` into ``folder`` (each atomically).

    Args:
        folder: Destination folder.
        labels: Class names.
        spec: Preprocessing recipe.

    Returns:
        The paths written.
    """
    written = []
    for name, text in companion_texts(labels, spec).items():
        atomic_write_text(Path(folder) / name, text)
        written.append(Path(folder) / name)
    return written


def has_companions(folder: Path) -> bool:
    """Whether ``folder`` holds a preprocessing recipe (the companion a model cannot do without)."""
    return (Path(folder) / PREPROCESS_FILE).is_file()


def read_companions(folder: Path, require_labels: bool = False) -> ModelInfo:
    """Labels and preprocessing from the files in ``folder`` (a run directory, a model's folder).

    Args:
        folder: The folder.
        require_labels: Raise when ``labels.txt`` is missing (else: no labels).

    Returns:
        The info.

    Raises:
        EdgennError: ``preprocess.json`` (or a required ``labels.txt``) is missing or invalid.
    """
    folder = Path(folder)
    labels_path = folder / LABELS_FILE
    if require_labels and not labels_path.exists():
        raise EdgennError(
            f"{folder} has no {LABELS_FILE}; the model would not know its classes.",
            f"Write one class name per line into {labels_path}, or retrain with edgenn train.",
        )
    recipe = folder / PREPROCESS_FILE
    if not recipe.exists():
        raise EdgennError(
            f"{folder} has no {PREPROCESS_FILE}, so the model's input recipe is unknown.",
            "Pass the run directory that edgenn train wrote, or the .tflite that edgenn convert wrote.",
        )
    try:
        doc = json.loads(_read_small_text(recipe, "a preprocessing recipe (JSON)"))
    except ValueError as exc:
        raise EdgennError(f"Cannot read {recipe} as JSON: {exc}.") from None
    spec = PreprocessSpec.from_dict(doc, source=str(recipe))
    labels = read_labels(labels_path) if labels_path.exists() else []
    return ModelInfo(labels, spec, str(recipe))


def metadata_bytes(labels: list[str], spec: PreprocessSpec, **extra: Any) -> bytes:
    """The embedded metadata document: labels, preprocessing and ``extra`` facts (precision...).

    Args:
        labels: Class names.
        spec: Preprocessing recipe.
        **extra: Further JSON-serializable fields (``quantize``, ``io``, ``target``, ``source``).

    Returns:
        UTF-8 JSON.
    """
    doc = {"format": METADATA_FORMAT, "labels": list(labels), "preprocess": spec.to_dict()}
    return json.dumps({**doc, **extra}).encode("utf-8")


def embed(model_bytes: bytes, labels: list[str], spec: PreprocessSpec, **extra: Any) -> bytes:
    """Return the .tflite bytes with edgenn's metadata entry set (an old one is replaced).

    Args:
        model_bytes: The flatbuffer.
        labels: Class names.
        spec: Preprocessing recipe.
        **extra: Further fields for :func:`metadata_bytes`.

    Returns:
        The new flatbuffer.
    """
    payload = metadata_bytes(labels, spec, **extra)
    return tflite_model.embed_metadata(model_bytes, METADATA_ENTRY, payload)


def embedded(model: tflite_model.TFLiteFile) -> dict[str, Any] | None:
    """Edgenn's embedded metadata document (None for models edgenn did not convert).

    Raises:
        EdgennError: The entry exists but is not a JSON object.
    """
    raw = model.metadata.get(METADATA_ENTRY)
    if raw is None:
        return None
    where = f"{model.path or 'the model'}'s {METADATA_ENTRY} metadata"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EdgennError(f"{where} is not UTF-8 JSON ({exc}).") from None
    if not isinstance(doc, dict):
        raise EdgennError(f"{where} is a {type(doc).__name__}; expected a JSON object.")
    return doc


def _embedded_info(model: tflite_model.TFLiteFile, doc: dict[str, Any]) -> ModelInfo:
    where = f"{model.path or 'the model'}'s {METADATA_ENTRY} metadata"
    labels = doc.get("labels")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise EdgennError(
            f"{where}: labels is {str(labels)[:60]!r}; expected a list of strings.",
            "Re-convert the model with edgenn convert.",
        )
    spec = PreprocessSpec.from_dict(doc["preprocess"], source=where)
    return ModelInfo(labels, spec, "embedded metadata")


def output_units(model: tflite_model.TFLiteFile) -> int:
    """Values in the first output without its batch axis (classes of a classifier)."""
    shape = model.output_details[0].shape if model.outputs else []
    units = 1
    for dim in shape[1:] if len(shape) > 1 else shape:
        units *= max(int(dim), 1)
    return units


def check_labels(labels: list[str], units: int, name: str) -> None:
    """Refuse labels that do not fit a model with ``units`` outputs.

    A model without labels is accepted (classes are then named by index); one sigmoid unit may
    carry two labels (negative, positive).

    Args:
        labels: The labels.
        units: Values in the model's output (without the batch axis).
        name: The model, for the message.

    Raises:
        LabelMismatchError: The counts differ.
    """
    if not labels or len(labels) == units or (units == 1 and len(labels) == 2):
        return
    raise LabelMismatchError(
        f"{name} has {len(labels)} labels but {units} outputs; each output needs one label.",
        f"Fix {LABELS_FILE} (one class name per line, in output order), or re-convert the model.",
    )


def model_info(model: tflite_model.TFLiteFile) -> ModelInfo:
    """Labels and preprocessing: from the embedded metadata, else from the files beside the model.

    Args:
        model: The parsed model.

    Returns:
        The info, with the labels checked against the model's output size.

    Raises:
        EdgennError: Neither is available, either is invalid, or the labels do not fit.
    """
    doc = embedded(model)
    name = str(model.path or "The model")
    if doc and doc.get("labels") is not None and doc.get("preprocess"):
        info = _embedded_info(model, doc)
    else:
        folder = model.path.parent if model.path else None
        if folder is None or not has_companions(folder):
            raise EdgennError(
                f"{name} carries no edgenn metadata and has no {PREPROCESS_FILE} beside it, so "
                "its input recipe is unknown.",
                f"Convert it with edgenn convert, or put {PREPROCESS_FILE} and {LABELS_FILE} "
                "next to it.",
            )
        info = read_companions(folder)
    check_labels(info.labels, output_units(model), name)
    return info


def describe(model: tflite_model.TFLiteFile) -> dict[str, Any]:
    """The ``edgenn inspect`` document: the flatbuffer's facts plus the embedded labels and recipe.

    Args:
        model: The parsed model.

    Returns:
        A JSON-serializable dict.
    """
    doc = tflite_model.describe(model)
    try:
        meta = embedded(model) or {}
    except EdgennError:
        meta = {}
    doc["labels"] = meta.get("labels")
    doc["preprocess"] = meta.get("preprocess")
    return doc
