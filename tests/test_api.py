"""The public Python API: lazy exports, Classifier on every kind of input, and the README examples.

The README's "## Python API" section is executed: every ```python block runs in a fresh
interpreter (from a scratch folder that sees the repository's ``tests/`` and ``datasets/``, so
that ``runs/`` written by an example stays out of the clone), and when a ```text block follows
it, the output must be exactly that text. Blocks whose first line says "Needs TensorFlow" are
marked ``tf``. ``EDGENN_API_DOC`` points the test at another Markdown file holding the section.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgenn
from edgenn import preprocess
from edgenn.errors import EdgennError, UsageError

from .conftest import REPO, SAMPLES, has_tensorflow

SECTION = "## Python API"
TF_MARK = "# Needs TensorFlow"
INT8 = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"
FP32 = REPO / "tests" / "data" / "tiny_cnn_fp32.tflite"
UINT8IO = REPO / "tests" / "data" / "tiny_cnn_uint8io.tflite"
MICRO = REPO / "tests" / "data" / "tiny_cnn_micro.tflite"
BAG = SAMPLES / "Bag" / "test-00018.jpg"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def api_doc() -> Path:
    """The Markdown file whose "Python API" section is tested (README.md unless overridden)."""
    return Path(os.environ.get("EDGENN_API_DOC", REPO / "README.md"))


def python_examples(path: Path) -> list[tuple[str, str | None]]:
    """The section's python blocks, each with the text block that follows it (None if none).

    Args:
        path: A Markdown file with a ``## Python API`` section.

    Returns:
        ``[(code, expected output or None)]`` in order.
    """
    text = path.read_text(encoding="utf-8")
    section = re.search(rf"^{re.escape(SECTION)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if section is None:
        raise AssertionError(f"{path} has no '{SECTION}' section")
    blocks = [(m.group(1), m.group(2)) for m in _FENCE.finditer(section.group(1))]
    examples = []
    for i, (lang, code) in enumerate(blocks):
        if lang == "python":
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            expected = following[1] if following and following[0] == "text" else None
            examples.append((code, expected))
    return examples


def _example_params() -> list:
    try:
        examples = python_examples(api_doc())
    except (OSError, AssertionError) as exc:
        return [pytest.param(None, None, id="missing", marks=pytest.mark.xfail(reason=str(exc)))]
    params = []
    for i, (code, expected) in enumerate(examples):
        marks = [pytest.mark.tf] if code.startswith(TF_MARK) else []
        params.append(pytest.param(code, expected, id=f"example-{i + 1}", marks=marks))
    return params


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A working folder where the examples' relative paths reach the repository's files."""
    folder = tmp_path_factory.mktemp("api")
    for name in ("tests", "datasets"):
        (folder / name).symlink_to(REPO / name)
    return folder


def test_the_section_has_examples():
    examples = python_examples(api_doc())
    assert len(examples) >= 4
    assert any("Classifier" in code for code, _ in examples)
    assert any("edgenn.inspect" in code for code, _ in examples)
    assert any(code.startswith(TF_MARK) and "edgenn.train" in code for code, _ in examples)


@pytest.mark.parametrize("code, expected", _example_params())
def test_readme_example_runs(code, expected, scratch):
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=scratch, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    if expected is not None:
        assert out.stdout == expected


def test_the_helper_finds_blocks_and_outputs(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# x\n\n## Other\n\n```python\nprint(0)\n```\n\n"
        f"{SECTION}\n\n```python\nprint(1)\n```\n\n```text\n1\n```\n\n"
        f"```python\n{TF_MARK}\nprint(2)\n```\n\n## Next\n\n```python\nprint(3)\n```\n"
    )
    assert python_examples(doc) == [("print(1)\n", "1\n"), (f"{TF_MARK}\nprint(2)\n", None)]


def test_import_edgenn_is_light():
    code = (
        "import sys, edgenn\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'PIL', 'tensorflow', 'ai_edge_litert', 'click') or m.startswith('edgenn.'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "['edgenn.errors']", out.stdout


def test_lazy_exports_and_docstrings():
    from edgenn.classify import Class
    from edgenn.predict import Classifier

    assert edgenn.Classifier is Classifier and edgenn.Class is Class
    assert {"Classifier", "Class", "inspect", "train", "convert"} <= set(edgenn.__all__)
    assert {"Classifier", "Class"} <= set(dir(edgenn))
    for name in ("Classifier", "Class", "inspect", "train", "convert"):
        assert len(getattr(edgenn, name).__doc__ or "") > 80, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        edgenn.nope  # noqa: B018


def test_classify_every_kind_of_input_agrees():
    clf = edgenn.Classifier(INT8, top_k=3)
    expected = clf.classify(BAG)
    assert [c.index for c in expected] and expected[0].label == "Bag"
    assert expected == sorted(expected, key=lambda c: -c.score)
    assert all(c.label == clf.labels[c.index] for c in expected)
    img = Image.open(BAG)
    pixels = preprocess.load_pixels(BAG, clf.spec)
    inputs = [
        str(BAG),
        img,
        img.convert("RGBA"),
        pixels,
        pixels[:, :, 0],
        pixels[None],
        np.asarray(img.convert("RGB")),
        preprocess.pixels_to_input(pixels, clf.spec),
        preprocess.pixels_to_input(pixels, clf.spec)[None].astype(np.float64),
    ]
    for image in inputs:
        assert clf.classify(image) == expected, type(image)


def test_large_rgb_pixels_are_resized_like_a_file(tmp_path):
    clf = edgenn.Classifier(INT8)
    big = Image.open(BAG).convert("RGB").resize((300, 200))
    big.save(tmp_path / "big.png")
    from_file = clf.classify(tmp_path / "big.png")
    assert clf.classify(np.asarray(big)) == from_file
    assert clf.classify(big) == from_file


def test_exif_orientation_of_a_pillow_image_is_applied(tmp_path):
    """A photo taken sideways classifies as its upright self, from a file or a Pillow image."""
    clf = edgenn.Classifier(INT8)
    upright = Image.open(next(SAMPLES.glob("Trouser/*.jpg"))).convert("L")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the camera held sideways
    sideways.save(tmp_path / "sideways.jpg", exif=exif, quality=100)
    expected = clf.classify(np.asarray(upright))[0].label
    assert clf.classify(tmp_path / "sideways.jpg")[0].label == expected
    assert clf.classify(Image.open(tmp_path / "sideways.jpg"))[0].label == expected


@pytest.mark.parametrize("model", [INT8, FP32, UINT8IO, MICRO], ids=lambda p: p.stem)
def test_fast_path_input_is_exactly_the_training_input(model):
    """The one-step pixel fill writes exactly what preprocess + Runner.quantize_input would."""
    clf = edgenn.Classifier(model)
    for path in sorted(SAMPLES.glob("*/*.jpg"))[::30]:
        pixels = preprocess.load_pixels(path, clf.spec)
        top = clf.classify(pixels, k=1)
        expected = clf.runner.quantize_input(preprocess.pixels_to_input(pixels, clf.spec))
        np.testing.assert_array_equal(clf.runner.bind().input, expected)
        reference = clf.runner.run(preprocess.pixels_to_input(pixels, clf.spec))[0]
        assert top[0].index == int(reference.argmax())
        assert top[0].score == pytest.approx(float(reference.max()), abs=1e-6)


def test_classify_pixels_and_file_keep_their_contract():
    clf = edgenn.Classifier(INT8, threads=1)
    top, ms = clf.classify_pixels(preprocess.load_pixels(BAG, clf.spec), 2)
    assert len(top) == 2 and top[0].label == "Bag" and ms > 0
    result = clf.classify_file(BAG, 1)
    doc = json.loads(json.dumps(dataclasses.asdict(result)))
    assert doc["top_k"][0] == {"index": 8, "label": "Bag", "score": top[0].score}
    assert doc["error"] is None and doc["inference_ms"] > 0


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((32, 32), np.float32), "a float array must be the preprocessed model input"),
        (np.zeros((28, 28, 2), np.uint8), "expected uint8 pixels shaped"),
        (np.zeros((28, 28), np.int32), "Received a int32 array"),
        ("no/such/photo.jpg", "Image not found"),
    ],
)
def test_bad_inputs_are_one_clear_error(image, message):
    with pytest.raises(EdgennError, match=re.escape(message)):
        edgenn.Classifier(INT8).classify(image)


def test_bad_counts_are_usage_errors():
    with pytest.raises(UsageError, match="top_k must be at least 1"):
        edgenn.Classifier(INT8, top_k=0)
    with pytest.raises(UsageError, match="k must be at least 1"):
        edgenn.Classifier(INT8).classify(BAG, k=0)


def test_inspect_is_the_cli_document():
    from click.testing import CliRunner

    from edgenn.cli import main

    doc = edgenn.inspect(INT8, target="gpu")
    result = CliRunner().invoke(main, ["inspect", str(INT8), "--target", "gpu", "--json"])
    assert json.loads(json.dumps(doc)) == json.loads(result.stdout)
    assert doc["check"]["ok"] is True
    assert doc["labels"][8] == "Bag" and "check" not in edgenn.inspect(INT8)


def test_train_and_convert_reach_the_host_functions(tmp_path):
    with pytest.raises(UsageError, match="Unknown train setting.*no_such_setting.*epochs"):
        edgenn.train(tmp_path / "run", no_such_setting=1)
    with pytest.raises(EdgennError, match="does not exist"):
        edgenn.convert(tmp_path / "missing-run")


@pytest.mark.skipif(has_tensorflow(), reason="checks the error raised without TensorFlow")
def test_train_without_tensorflow_names_the_install(tmp_path):
    with pytest.raises(edgenn.MissingDependencyError, match=r"pip install 'edgenn\[train\]'"):
        edgenn.train(tmp_path / "run", limit=100)
    assert not (tmp_path / "run").exists()
