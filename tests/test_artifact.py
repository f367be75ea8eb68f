"""edgenn.artifact: a model's companions, embedded or beside it, and the labels/output check."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from edgenn import artifact, tflite_model
from edgenn import datasets as data
from edgenn.errors import EdgennError
from edgenn.preprocess import PreprocessSpec

from .conftest import MODELS, REPO

TEST_DATA = REPO / "tests" / "data"
INT8 = TEST_DATA / "tiny_cnn_int8.tflite"


def test_embedded_metadata_is_read():
    info = artifact.model_info(tflite_model.load(INT8))
    assert info.source == "embedded metadata"
    assert info.labels == data.FASHION_MNIST_LABELS
    assert info.spec.input_shape == [28, 28, 1]


def test_embed_round_trip_replaces_the_old_entry():
    spec = PreprocessSpec.for_images(28, 28, "L")
    labels = [f"c{i}" for i in range(10)]
    again = artifact.embed(INT8.read_bytes(), labels, spec, quantize="int8")
    model = tflite_model.load(again)
    doc = artifact.embedded(model)
    assert doc["labels"] == labels and doc["quantize"] == "int8"
    assert doc["format"] == artifact.METADATA_FORMAT
    assert list(model.metadata).count(artifact.METADATA_ENTRY) == 1
    assert artifact.model_info(model).labels == labels


def test_files_beside_a_model_without_metadata(tmp_path):
    bare = tmp_path / "bare.tflite"
    shutil.copy(MODELS / "face_detection_short_range.tflite", bare)
    with pytest.raises(EdgennError, match="no preprocess.json beside it"):
        artifact.model_info(tflite_model.load(bare))
    artifact.write_companions(tmp_path, [], PreprocessSpec.for_images(128, 128, "RGB"))
    info = artifact.model_info(tflite_model.load(bare))
    assert info.labels == []
    assert info.spec.input_shape == [128, 128, 3]


def test_label_count_must_match_the_output(tmp_path):
    model = tmp_path / "m.tflite"
    shutil.copy(INT8, model)
    spec = PreprocessSpec.for_images(28, 28, "L")
    # The embedded labels win; strip them so that the files beside the model are used.
    bare = tflite_model.embed_metadata(model.read_bytes(), artifact.METADATA_ENTRY, b"{}")
    model.write_bytes(bare)
    artifact.write_companions(tmp_path, ["a", "b", "c"], spec)
    with pytest.raises(EdgennError, match="has 3 labels but 10 outputs"):
        artifact.model_info(tflite_model.load(model))


@pytest.mark.parametrize(
    "labels, message",
    [
        ("abc", "expected a list of one-line strings"),
        ([1, 2], "expected a list of one-line strings"),
        (["a\nb"] * 10, "expected a list of one-line strings"),
    ],
)
def test_embedded_labels_are_validated(labels, message):
    spec = PreprocessSpec.for_images(28, 28, "L").to_dict()
    payload = json.dumps({"labels": labels, "preprocess": spec}).encode()
    data_ = tflite_model.embed_metadata(INT8.read_bytes(), artifact.METADATA_ENTRY, payload)
    with pytest.raises(EdgennError, match=message):
        artifact.model_info(tflite_model.load(data_))


def test_labels_file_must_be_utf8_and_regular(tmp_path):
    path = tmp_path / artifact.LABELS_FILE
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(EdgennError, match="is not UTF-8 text"):
        artifact.read_labels(path)
    with pytest.raises(EdgennError, match="is a directory"):
        artifact.read_labels(tmp_path)


def test_companions_of_another_model_are_not_overwritten(tmp_path):
    spec = PreprocessSpec.for_images(28, 28, "L")
    artifact.write_companions(tmp_path, ["a", "b"], spec)
    artifact.check_companions_free(tmp_path, ["a", "b"], spec, overwrite=False)
    with pytest.raises(EdgennError, match="exists with different content"):
        artifact.check_companions_free(tmp_path, ["x", "y"], spec, overwrite=False)
    artifact.check_companions_free(tmp_path, ["x", "y"], spec, overwrite=True)


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string literal in a module except docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                found.append((node.lineno, node.value))
    return found


def test_only_the_artifact_module_spells_companion_names():
    owner = REPO / "edgenn" / "artifact.py"
    names = (artifact.LABELS_FILE, artifact.PREPROCESS_FILE)
    offenders = []
    for path in sorted(
        [*(REPO / "edgenn").rglob("*.py"), *(REPO / "firmware_export").rglob("*.py")]
    ):
        if path == owner:
            continue
        for line, text in _string_constants(path):
            if any(name in text for name in names):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {text[:60]!r}")
    assert offenders == [], "companion file names spelt outside edgenn/artifact.py"


# --- Malformed recipes and labels: one line naming the field, never a traceback -------------------

IMAGE_RECIPE = PreprocessSpec.for_images(28, 28, "L").to_dict()

MALFORMED_RECIPES = {
    "shape-text": ({"input_shape": "abc"}, "input_shape is 'abc'; expected a list of 3"),
    "shape-short": ({"input_shape": [28]}, "input_shape is [28]; expected a list of 3"),
    "shape-negative": ({"input_shape": [-5, 28, 1]}, "input_shape is [-5, 28, 1]; expected"),
    "shape-null": ({"input_shape": None}, "input_shape is None; expected a list of 3"),
    "shape-float": ({"input_shape": [28.5, 28, 1]}, "input_shape is [28.5, 28, 1]; expected"),
    "shape-bool": ({"input_shape": [True, 28, 1]}, "input_shape is [True, 28, 1]; expected"),
    "shape-channels": ({"input_shape": [28, 28, 3]}, "3 channels but color_mode is 'L'"),
    "shape-huge": ({"input_shape": [100000, 100000, 1]}, "10,000,000,000 values; at most"),
    "scale-text": ({"scale": "x"}, "scale is 'x'; expected a finite number"),
    "scale-nan": ({"scale": float("nan")}, "scale is nan; expected a finite number"),
    "offset-null": ({"offset": None}, "offset is None; expected a finite number"),
    "offset-huge": ({"offset": 1e308}, "offset is 1e+308; expected a finite number (float32)"),
    "resize-list": ({"resize": []}, "resize is []; expected one of"),
    "color-list": ({"color_mode": []}, "color_mode is []; expected one of"),
    "kind-list": ({"kind": []}, "kind is []; expected one of"),
    "task-number": ({"task": 5}, "task is 5; expected one of"),
    "version-text": ({"version": "x"}, "version is 'x'; expected an integer"),
    "version-newer": ({"version": 99}, "version is 99; this edgenn reads recipes up to version 1"),
    "mean-text": ({"kind": "tabular", "input_shape": [2], "mean": "ab"}, "mean is 'ab'; expected"),
    "std-zero": ({"kind": "tabular", "input_shape": [2], "std": [1, 0]}, "std is [1, 0]; expected"),
    "features-count": (
        {"kind": "tabular", "input_shape": [2], "feature_names": ["a"]},
        "feature_names has 1 names; expected 2",
    ),
    "not-object": ([1, 2], "is a list; expected a JSON object"),
    "kind-missing": ({"kind": None}, "kind is None; expected one of"),
}


def _bare_model(folder: Path) -> Path:
    """The tiny CNN without its embedded metadata: its companions are read from ``folder``."""
    model = folder / "m.tflite"
    model.write_bytes(
        tflite_model.embed_metadata(INT8.read_bytes(), artifact.METADATA_ENTRY, b"{}")
    )
    return model


def _malformed(change) -> object:
    return {**IMAGE_RECIPE, **change} if isinstance(change, dict) else change


@pytest.mark.parametrize("name", sorted(MALFORMED_RECIPES))
def test_a_malformed_preprocess_json_names_the_field(tmp_path, name):
    change, message = MALFORMED_RECIPES[name]
    model = _bare_model(tmp_path)
    (tmp_path / artifact.PREPROCESS_FILE).write_text(json.dumps(_malformed(change)))
    with pytest.raises(EdgennError) as err:
        artifact.model_info(tflite_model.load(model))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert artifact.PREPROCESS_FILE in str(err.value)


@pytest.mark.parametrize("name", sorted(MALFORMED_RECIPES))
def test_malformed_embedded_metadata_names_the_field(name):
    change, message = MALFORMED_RECIPES[name]
    doc = {"labels": data.FASHION_MNIST_LABELS, "preprocess": _malformed(change)}
    crafted = tflite_model.embed_metadata(
        INT8.read_bytes(), artifact.METADATA_ENTRY, json.dumps(doc).encode()
    )
    model = tflite_model.load(crafted)
    with pytest.raises(EdgennError) as err:
        artifact.model_info(model)
    assert message in str(err.value) and "\n" not in str(err.value)
    # inspect still describes the file, and says what is wrong with the metadata.
    described = artifact.describe(model)
    assert described["preprocess"] is None and message in described["metadata_error"]


@pytest.mark.parametrize("text", ["[" * 100_000, '{"kind": "image", "scale": 1e999999}'])
def test_a_preprocess_json_the_parser_chokes_on(tmp_path, text):
    """Nested past the parser's recursion limit, or a number out of range: still one line."""
    model = _bare_model(tmp_path)
    (tmp_path / artifact.PREPROCESS_FILE).write_text(text)
    with pytest.raises(EdgennError, match="preprocess.json"):
        artifact.model_info(tflite_model.load(model))


def test_a_valid_tabular_recipe_is_accepted(tmp_path):
    doc = {"kind": "tabular", "input_shape": [2], "task": "regression", "feature_names": ["a", "b"]}
    doc.update(mean=[0.5, 1], std=[2, 0.25], target_mean=3.0, target_std=1.5, target_name="y")
    (tmp_path / artifact.PREPROCESS_FILE).write_text(json.dumps(doc))
    spec = artifact.read_companions(tmp_path).spec
    assert spec.kind == "tabular" and spec.std == [2, 0.25] and spec.target_name == "y"


def test_inspect_shows_labels_only_as_a_list_that_fits():
    """Labels given as a string are not one label per character; a wrong count is said."""
    as_text = json.dumps({"labels": "abc", "preprocess": IMAGE_RECIPE}).encode()
    model = tflite_model.load(
        tflite_model.embed_metadata(INT8.read_bytes(), artifact.METADATA_ENTRY, as_text)
    )
    doc = artifact.describe(model)
    assert doc["labels"] is None and "labels is 'abc'; expected a list" in doc["metadata_error"]
    three = json.dumps({"labels": ["a", "b", "c"], "preprocess": IMAGE_RECIPE}).encode()
    model = tflite_model.load(
        tflite_model.embed_metadata(INT8.read_bytes(), artifact.METADATA_ENTRY, three)
    )
    doc = artifact.describe(model)
    assert "has 3 labels but 10 outputs" in doc["metadata_error"]
    assert artifact.describe(tflite_model.load(INT8))["metadata_error"] is None


def test_labels_that_do_not_fit_are_never_embedded():
    spec = PreprocessSpec.for_images(28, 28, "L")
    with pytest.raises(artifact.LabelMismatchError, match="has 3 labels but 10 outputs"):
        artifact.embed(INT8.read_bytes(), ["a", "b", "c"], spec)


def test_labels_file_line_endings_and_byte_order_mark(tmp_path):
    path = tmp_path / artifact.LABELS_FILE
    path.write_bytes("\ufeffcat\r\ndog\r\n".encode())
    assert artifact.read_labels(path) == ["cat", "dog"]


def test_companions_are_read_only_from_regular_files(tmp_path):
    import os

    from .test_tflite_model import deadline

    model = _bare_model(tmp_path)
    os.mkfifo(tmp_path / artifact.PREPROCESS_FILE)
    with deadline(10), pytest.raises(EdgennError, match="not a regular file"):
        artifact.model_info(tflite_model.load(model))
    (tmp_path / artifact.PREPROCESS_FILE).unlink()
    (tmp_path / artifact.PREPROCESS_FILE).write_text(json.dumps(IMAGE_RECIPE))
    (tmp_path / artifact.LABELS_FILE).symlink_to("/dev/zero")
    with deadline(10), pytest.raises(EdgennError, match="not a regular file"):
        artifact.model_info(tflite_model.load(model))
    (tmp_path / artifact.LABELS_FILE).unlink()
    (tmp_path / artifact.LABELS_FILE).symlink_to(tmp_path / "gone.txt")
    with pytest.raises(EdgennError, match="dangling symlink"):
        artifact.model_info(tflite_model.load(model))
