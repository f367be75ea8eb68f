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
    [("abc", "expected a list of strings"), ([1, 2], "expected a list of strings")],
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
    with pytest.raises(EdgennError, match="is not a regular file"):
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
