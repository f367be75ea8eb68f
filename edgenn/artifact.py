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
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgenn import tflite_model
from edgenn.errors import EdgennError
from edgenn.fileio import atomic_write_text, read_regular
from edgenn.preprocess import COLOR_MODES, RESIZE_FILTERS, SPEC_VERSION, PreprocessSpec

LABELS_FILE = "labels.txt"
PREPROCESS_FILE = "preprocess.json"
#: The name of edgenn's entry in a .tflite file's metadata list.
METADATA_ENTRY = "edgenn"
#: Version of the embedded document, raised when its meaning changes.
METADATA_FORMAT = 1
#: Companion files are a few KB; anything far larger is not one (and is not read into memory).
MAX_COMPANION_BYTES = 4 * 1024 * 1024
#: What a recipe's ``kind`` and ``task`` may be.
RECIPE_KINDS = ("image", "tabular")
RECIPE_TASKS = ("classification", "regression")
#: Channels of an image recipe's input, by colour mode.
CHANNELS = {"L": 1, "RGB": 3}
#: Scale, offset, mean and std are applied in float32: beyond its range they overflow to inf.
FLOAT32_MAX = 3.4028234663852886e38


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
    """A companion's text: a regular file (never a FIFO or device) of UTF-8, a BOM allowed."""
    data = read_regular(Path(path), what, MAX_COMPANION_BYTES)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EdgennError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected {what}.",
            "Save it as UTF-8.",
        ) from None


def read_labels(path: Path) -> list[str]:
    """Read a labels file: one label per line (trailing newlines ignored).

    Lines may end in LF or CRLF, and a UTF-8 byte order mark is ignored.

    Args:
        path: The file.

    Returns:
        The labels.

    Raises:
        EdgennError: The file is missing, not a regular file, too large or not UTF-8.
    """
    text = _read_small_text(path, "one label per line")
    # A file saved on Windows ends its lines in CRLF; the CR is no part of a label.
    text = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
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
    """Whether ``folder`` holds a preprocessing recipe (the companion a model cannot do without).

    Anything by that name counts (a dangling link, a FIFO): reading it then says what is wrong,
    instead of the model seeming to have no recipe.
    """
    return os.path.lexists(Path(folder) / PREPROCESS_FILE)


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
    if require_labels and not os.path.lexists(labels_path):
        raise EdgennError(
            f"{folder} has no {LABELS_FILE}; the model would not know its classes.",
            f"Write one class name per line into {labels_path}, or retrain with edgenn train.",
        )
    recipe = folder / PREPROCESS_FILE
    if not os.path.lexists(recipe):
        raise EdgennError(
            f"{folder} has no {PREPROCESS_FILE}, so the model's input recipe is unknown.",
            "Pass the run directory that edgenn train wrote, or the .tflite that edgenn convert wrote.",
        )
    try:
        doc = _json(_read_small_text(recipe, "a preprocessing recipe (JSON)"))
    except ValueError as exc:
        raise EdgennError(f"Cannot read {recipe} as JSON: {exc}.") from None
    spec = parse_recipe(doc, str(recipe))
    labels = read_labels(labels_path) if os.path.lexists(labels_path) else []
    return ModelInfo(labels, spec, str(recipe))


def _shown(value: Any) -> str:
    """A received JSON value for a one-line message (repr keeps newlines escaped)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_float32(value: Any) -> bool:
    return _is_number(value) and abs(value) <= FLOAT32_MAX


def _numbers(value: Any, n: int, positive: bool = False) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(_is_float32(v) and (v > 0 or not positive) for v in value)
    )


def _field_rules(image: bool, n: int) -> dict[str, tuple[Callable[[Any], bool], str]]:
    """Each recipe field but ``kind`` and ``input_shape``: its check and what it expects.

    Args:
        image: Whether the recipe is an image recipe (``color_mode`` and ``resize`` required).
        n: Values in the input (features of a table: the length of its per-feature lists).
    """

    def maybe(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
        return lambda v: v is None or ok(v)

    def choice(values: list[str]) -> Callable[[Any], bool]:
        # A list, not a set or dict: a received list or object is compared, never hashed.
        return (lambda v: v in values) if image else maybe(lambda v: v in values)

    return {
        "task": (lambda v: v in list(RECIPE_TASKS), f"one of {list(RECIPE_TASKS)}"),
        "color_mode": (choice(list(COLOR_MODES)), f"one of {list(COLOR_MODES)}"),
        "resize": (choice(sorted(RESIZE_FILTERS)), f"one of {sorted(RESIZE_FILTERS)}"),
        "scale": (_is_float32, "a finite number (float32)"),
        "offset": (_is_float32, "a finite number (float32)"),
        "feature_names": (
            maybe(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
            "a list of strings",
        ),
        "mean": (maybe(lambda v: _numbers(v, n)), f"a list of {n} finite numbers (float32)"),
        "std": (
            maybe(lambda v: _numbers(v, n, True)),
            f"a list of {n} positive finite numbers (float32)",
        ),
        "target_mean": (maybe(_is_number), "a finite number or null"),
        "target_std": (maybe(lambda v: _is_number(v) and v > 0), "a positive number or null"),
        "target_name": (maybe(lambda v: isinstance(v, str)), "a string or null"),
        "version": (lambda v: _is_int(v) and v >= 1, "an integer"),
    }


def _check_shape(doc: dict[str, Any], where: str) -> list[int]:
    """``input_shape``: [height, width, channels] of an image, [features] of a table."""
    shape = doc.get("input_shape")
    rank, wanted = (3, "[height, width, channels]") if doc["kind"] == "image" else (1, "[features]")
    if not (
        isinstance(shape, list) and len(shape) == rank and all(_is_int(d) and d > 0 for d in shape)
    ):
        raise EdgennError(
            f"{where}: input_shape is {_shown(shape)}; expected a list of {rank} positive "
            f"integers {wanted}.",
            "Re-create it with edgenn train or edgenn convert.",
        )
    values = math.prod(shape)
    if values > tflite_model.MAX_IO_VALUES:
        raise EdgennError(
            f"{where}: input_shape {shape} holds {values:,} values; at most "
            f"{tflite_model.MAX_IO_VALUES:,} values fit a model input."
        )
    return shape


def parse_recipe(doc: Any, where: str) -> PreprocessSpec:
    """Validate a preprocessing recipe's JSON document field by field, then build the spec.

    Every field is checked for its type and range before anything uses it, so a damaged or
    crafted ``preprocess.json`` (or embedded recipe) is one line naming the field and what it
    should be, never a traceback later in decoding or scaling.

    Args:
        doc: The parsed JSON.
        where: Where it came from, for the messages.

    Returns:
        The spec.

    Raises:
        EdgennError: A field is missing, of the wrong type, out of range, or the fields disagree.
    """
    hint = "Re-create it with edgenn train or edgenn convert."
    if not isinstance(doc, dict):
        raise EdgennError(f"{where} is a {_json_type(doc)}; expected a JSON object.", hint)
    if doc.get("kind") not in list(RECIPE_KINDS):
        got = _shown(doc["kind"]) if "kind" in doc else "missing"
        raise EdgennError(f"{where}: kind is {got}; expected one of {list(RECIPE_KINDS)}.", hint)
    shape = _check_shape(doc, where)
    image = doc["kind"] == "image"
    for field, (ok, expected) in _field_rules(image, math.prod(shape)).items():
        if field in doc and not ok(doc[field]):
            raise EdgennError(
                f"{where}: {field} is {_shown(doc[field])}; expected {expected}.", hint
            )
        if field not in doc and image and field in ("color_mode", "resize"):
            raise EdgennError(f"{where}: {field} is missing; expected {expected}.", hint)
    if doc.get("version", SPEC_VERSION) > SPEC_VERSION:
        raise EdgennError(
            f"{where}: version is {doc['version']}; this edgenn reads recipes up to version "
            f"{SPEC_VERSION}.",
            "Upgrade edgenn on this machine.",
        )
    names = doc.get("feature_names")
    if not image and names is not None and len(names) != shape[0]:
        raise EdgennError(
            f"{where}: feature_names has {len(names)} names; expected {shape[0]}, one per "
            "input feature.",
            hint,
        )
    if image and shape[2] != CHANNELS[doc["color_mode"]]:
        raise EdgennError(
            f"{where}: input_shape {shape} has {shape[2]} channels but color_mode is "
            f"{doc['color_mode']!r}, which has {CHANNELS[doc['color_mode']]}.",
            hint,
        )
    return PreprocessSpec.from_dict(doc, source=where)


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

    Raises:
        LabelMismatchError: The labels do not fit the model's output (nothing is embedded).
    """
    check_labels(labels, output_units(tflite_model.load(model_bytes)), "The model")
    payload = metadata_bytes(labels, spec, **extra)
    return tflite_model.embed_metadata(model_bytes, METADATA_ENTRY, payload)


def _json(text: str) -> Any:
    """``json.loads``, with a document nested too deep for the parser as ValueError too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


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
        doc = _json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EdgennError(f"{where} is not UTF-8 JSON ({exc}).") from None
    if not isinstance(doc, dict):
        raise EdgennError(f"{where} is a {_json_type(doc)}; expected a JSON object.")
    return doc


def _is_ours(doc: dict[str, Any] | None) -> bool:
    """Whether an embedded document carries a model's labels and recipe (edgenn convert's)."""
    return doc is not None and ("labels" in doc or "preprocess" in doc)


def _embedded_info(model: tflite_model.TFLiteFile, doc: dict[str, Any]) -> ModelInfo:
    """The labels and recipe of an embedded document, each field validated."""
    where = f"{model.path or 'the model'}'s {METADATA_ENTRY} metadata"
    hint = "Re-convert the model with edgenn convert."
    version = doc.get("format", METADATA_FORMAT)
    if not _is_int(version) or version < 1:
        raise EdgennError(f"{where}: format is {_shown(version)}; expected an integer.", hint)
    if version > METADATA_FORMAT:
        raise EdgennError(
            f"{where}: format is {version}; this edgenn reads formats up to {METADATA_FORMAT}.",
            "Upgrade edgenn on this machine.",
        )
    labels = doc.get("labels")
    if not isinstance(labels, list) or not all(
        isinstance(x, str) and "\n" not in x and "\r" not in x for x in labels
    ):
        # One line each: labels.txt and the keywords tag writes hold one label per line.
        raise EdgennError(
            f"{where}: labels is {_shown(labels)}; expected a list of one-line strings.", hint
        )
    if "preprocess" not in doc:
        raise EdgennError(f"{where}: preprocess is missing; expected a JSON object.", hint)
    spec = parse_recipe(doc["preprocess"], f"{where} (preprocess)")
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
    if _is_ours(doc):
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

    Embedded labels and recipe are shown only once validated (labels given as a string are not
    shown one per character); what is wrong with them is ``metadata_error``, and the file's own
    facts are still described.

    Args:
        model: The parsed model.

    Returns:
        A JSON-serializable dict; ``labels`` and ``preprocess`` are None unless valid, and
        ``metadata_error`` is the one-line reason they are not (or that the labels do not fit
        the output), else None.
    """
    doc = tflite_model.describe(model)
    doc.update(labels=None, preprocess=None, metadata_error=None)
    try:
        meta = embedded(model)
        if _is_ours(meta):
            info = _embedded_info(model, meta)
            doc["labels"], doc["preprocess"] = info.labels, meta["preprocess"]
            check_labels(info.labels, output_units(model), str(model.path or "The model"))
    except EdgennError as exc:
        doc["metadata_error"] = str(exc)
    return doc
