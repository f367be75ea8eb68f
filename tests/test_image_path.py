"""One image path: every command turns a photo file into the same model input, as training did.

Real photos at camera size (sklearn's bundled china.jpg and flower.jpg, Fashion-MNIST test
images, upscaled to 1600x1200 JPEGs, some with EXIF orientation, one grayscale, one CMYK, a PNG
with transparency, one small JPEG) go through training's loader, the Python API, predict, tag,
camera and bench; the model input must be identical in each, and so must every score.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn import artifact, bench, datasets, preprocess, tag, tflite_model
from edgenn.camera.pipeline import CameraOptions, run_camera
from edgenn.cli import main
from edgenn.predict import Classifier

from .conftest import REPO, SAMPLES

MODEL = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"
#: Class folder names: the model's outputs, relabelled so that a folder can carry each name.
LABELS = [f"class{i}" for i in range(10)]
#: Pixels stored so that the EXIF orientation turns them upright again, as a camera does.
STORED_FOR = {
    6: Image.Transpose.ROTATE_90,
    3: Image.Transpose.ROTATE_180,
    8: Image.Transpose.ROTATE_270,
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny Fashion-MNIST CNN (28x28 grayscale, int8) with folder-friendly labels."""
    spec = artifact.model_info(tflite_model.load(MODEL)).spec
    path = tmp_path_factory.mktemp("model") / "tiny.tflite"
    path.write_bytes(artifact.embed(MODEL.read_bytes(), LABELS, spec))
    return path


def _save(img: Image.Image, path, orientation=None, **kwargs):
    exif = Image.Exif()
    if orientation:
        img = img.transpose(STORED_FOR[orientation])
        exif[0x0112] = orientation
    img.save(path, exif=exif, **kwargs)


@pytest.fixture(scope="module")
def album(tmp_path_factory, sklearn_data_dir):
    """30 photos in 10 class folders (3 each), every kind of file a camera roll holds."""
    root = tmp_path_factory.mktemp("album")
    images = sklearn_data_dir.parent / "images"
    real = [Image.open(images / "china.jpg"), Image.open(images / "flower.jpg")]
    real += [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*/*.jpg"))[::7][:4]]
    for i in range(30):
        folder = root / LABELS[i % 10]
        folder.mkdir(exist_ok=True)
        src = real[i % len(real)].resize((1600, 1200), Image.Resampling.BICUBIC)
        kind = i % 6
        if kind == 0:
            _save(src, folder / f"p{i}.jpg", quality=90)
        elif kind == 1:
            _save(src, folder / f"p{i}.jpg", orientation=[6, 3, 8][i % 3], quality=85)
        elif kind == 2:
            _save(src.convert("L"), folder / f"p{i}.jpg", quality=90)
        elif kind == 3:
            _save(src.convert("CMYK"), folder / f"p{i}.jpg", quality=90)
        elif kind == 4:
            rgba = src.resize((800, 600)).convert("RGBA")
            rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
            _save(rgba, folder / f"p{i}.png")
        else:
            _save(src.resize((40, 30)), folder / f"p{i}.jpg", quality=90)
    return root


def _input_tensor(clf: Classifier) -> np.ndarray:
    detail = clf.runner.input_details[0]
    return clf.runner.interpreter.get_tensor(detail["index"]).copy()


def _scores(top_k) -> dict[str, float]:
    """Label -> score of classes given as :class:`Class` or as their JSON."""
    return dict(
        (c["label"], c["score"]) if isinstance(c, dict) else (c.label, c.score) for c in top_k
    )


def _rounded(scores: dict[str, float], digits: int) -> dict[str, float]:
    return {label: round(score, digits) for label, score in scores.items()}


@pytest.fixture(scope="module")
def reference(model, album):
    """Per photo: the pixels training's loader gives, the interpreter input and all 10 scores
    through the Python API."""
    clf = Classifier(model)
    photos = preprocess.image_files(album)
    pixels, tensors, scores = {}, {}, {}
    for photo in photos:
        pixels[photo] = preprocess.load_pixels(photo, clf.spec)
        scores[photo] = _scores(clf.classify(photo, k=10))
        tensors[photo] = _input_tensor(clf)
    return clf, photos, pixels, tensors, scores


def test_training_loads_the_pixels_every_command_uses(album, reference):
    clf, photos, pixels, _, _ = reference
    ds = datasets.load_image_folder(album, clf.spec.image_size, clf.spec.color_mode)
    assert ds.labels == LABELS and ds.spec.input_shape == clf.spec.input_shape
    loaded = [path for path, _ in datasets.list_image_folder(album)[1]]
    assert sorted(loaded) == photos
    for row, path in zip(ds.x, loaded):
        np.testing.assert_array_equal(row, pixels[path])


def test_predict_and_the_api_feed_the_interpreter_the_same_tensor(model, reference):
    clf, photos, pixels, tensors, scores = reference
    other = Classifier(model)
    for photo in photos:
        result = other.classify_file(photo, k=10)  # what edgenn predict calls
        np.testing.assert_array_equal(_input_tensor(other), tensors[photo])
        assert _scores(result.top_k) == scores[photo]
        other.classify(Image.fromarray(pixels[photo][..., 0]), k=10)  # decoded pixels as-is
        np.testing.assert_array_equal(_input_tensor(other), tensors[photo])
        other.classify(pixels[photo], k=10)
        np.testing.assert_array_equal(_input_tensor(other), tensors[photo])


def test_predict_and_tag_commands_give_the_same_scores(model, album, reference, tmp_path):
    _, photos, _, _, scores = reference
    result = CliRunner().invoke(
        main, ["predict", "-m", str(model), str(album), "-k", "10", "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in photos]
    for line, photo in zip(lines, photos):
        assert _scores(line["top_k"]) == scores[photo]
    summary, results = tag.tag(
        model, tag.find_photos([album], recursive=True), top_k=10, threshold=0, dry_run=True
    )
    assert summary.tagged == len(photos) and summary.failed == 0
    for r in results:  # tag records scores to 4 digits: enough to tell int8 steps (1/256) apart
        assert r.scores == _rounded(scores[Path(r.photo)], 4), r.photo


def test_camera_on_a_folder_gives_the_same_scores(model, album, reference):
    _, photos, _, _, scores = reference
    seen = []
    summary = run_camera(
        model,
        CameraOptions(source=str(album), every_frame=True, top_k=10),
        on_result=seen.append,
    )
    assert summary.frames == len(photos)
    for frame, photo in zip(seen, photos):  # the camera reports 5 digits
        assert _rounded(_scores(frame.top_k), 5) == _rounded(scores[photo], 5), photo


def test_bench_scores_accuracy_on_the_tensors_of_the_files(album, reference):
    clf, _, pixels, _, _ = reference
    options = bench.BenchOptions(dataset=str(album))
    x, y, reason = bench.scoring_inputs(options, clf.spec, LABELS)
    assert reason is None and len(x) == len(y) > 0
    expected = {preprocess.pixels_to_input(p, clf.spec).tobytes() for p in pixels.values()}
    assert all(row.tobytes() in expected for row in x)


def test_an_image_over_the_pixel_limit_is_the_same_one_line_in_predict_and_tag(model, tmp_path):
    big = tmp_path / "scan.png"
    Image.new("1", (10000, 10000)).save(big)  # 100 Mpx: Pillow itself only warns
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["predict", "-m", str(model), str(big), "--json"])
        predicted = json.loads(result.stdout)["error"]
        summary, _ = tag.tag(model, [big], dry_run=True)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert "DecompressionBombWarning" not in result.stderr
    assert "decompression bomb" in predicted and summary.failures[0]["error"] == predicted
