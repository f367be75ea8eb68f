"""edgenn.preprocess: the recipe, image decoding and the training pipeline's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgenn import preprocess
from edgenn.errors import EdgennError
from edgenn.preprocess import PreprocessSpec

from .conftest import SAMPLES, has_tensorflow

SAMPLE = sorted((SAMPLES / "Sneaker").glob("*.jpg"))[0]


def test_spec_round_trip():
    spec = PreprocessSpec.for_images(28, 28, "L")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "doc, match",
    [
        ({"kind": "image"}, "not an edgenn preprocessing recipe"),
        ({"kind": "audio", "input_shape": [1]}, "kind is 'audio'"),
        (
            {"kind": "image", "input_shape": [2, 2, 1], "color_mode": "CMYK", "resize": "bilinear"},
            "color_mode",
        ),
    ],
)
def test_spec_validation(doc, match):
    with pytest.raises(EdgennError, match=match):
        PreprocessSpec.from_dict(doc)


def test_load_pixels_grayscale_and_rgb_model():
    gray = preprocess.load_pixels(SAMPLE, PreprocessSpec.for_images(28, 28, "L"))
    rgb = preprocess.load_pixels(SAMPLE, PreprocessSpec.for_images(28, 28, "RGB"))
    assert gray.shape == (28, 28, 1) and rgb.shape == (28, 28, 3)
    # A grayscale photo for an RGB model is converted: three equal channels.
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert np.abs(rgb[..., 0].astype(int) - gray[..., 0]).max() <= 1


def test_rgba_is_flattened_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.save(tmp_path / "clear.png")
    out = preprocess.load_pixels(tmp_path / "clear.png", PreprocessSpec.for_images(4, 4, "RGB"))
    assert out.min() == 255


def test_16_bit_image_is_scaled_not_clipped(tmp_path):
    arr = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    out = preprocess.load_pixels(tmp_path / "deep.png", PreprocessSpec.for_images(4, 4, "L"))
    assert out.max() == 255 and out.min() == 0


def test_not_an_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello")
    with pytest.raises(EdgennError, match="is not an image Pillow can decode"):
        preprocess.open_image(tmp_path / "notes.jpg", "L")


def test_truncated_jpeg(tmp_path):
    raw = SAMPLE.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(EdgennError, match="could not be decoded"):
        preprocess.open_image(tmp_path / "cut.jpg", "L")


def test_pixels_to_input_reuses_buffer():
    spec = PreprocessSpec.for_images(28, 28, "L")
    px = preprocess.load_pixels(SAMPLE, spec)
    out = np.empty(px.shape, np.float32)
    res = preprocess.pixels_to_input(px, spec, out=out)
    assert res is out and out.max() <= 1.0
    np.testing.assert_array_equal(out, px.astype(np.float32) * np.float32(1 / 255))


def test_pillow_images_and_arrays_become_the_pixels_of_a_file(tmp_path):
    spec = PreprocessSpec.for_images(28, 28, "L")
    rgb = Image.open(SAMPLE).convert("RGB").resize((90, 60))
    rgb.save(tmp_path / "wide.png")
    from_file = preprocess.load_pixels(tmp_path / "wide.png", spec)
    np.testing.assert_array_equal(preprocess.image_to_pixels(rgb, spec), from_file)
    np.testing.assert_array_equal(preprocess.array_to_pixels(np.asarray(rgb), spec), from_file)
    rgba = np.dstack([np.asarray(rgb), np.full((60, 90), 255, np.uint8)])
    np.testing.assert_array_equal(preprocess.array_to_pixels(rgba[None], spec), from_file)
    rgb_spec = PreprocessSpec.for_images(28, 28, "RGB")
    grey = np.asarray(Image.open(SAMPLE))[:, :, None]
    assert preprocess.array_to_pixels(grey, rgb_spec).shape == (28, 28, 3)


def test_pixels_already_in_shape_are_returned_as_they_are():
    spec = PreprocessSpec.for_images(28, 28, "L")
    px = preprocess.load_pixels(SAMPLE, spec)
    assert preprocess.array_to_pixels(px, spec) is px
    np.testing.assert_array_equal(preprocess.array_to_pixels(px[:, :, 0], spec), px)


@pytest.mark.parametrize(
    "array", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8), np.zeros(16, np.uint8)]
)
def test_arrays_that_are_not_pixels(array):
    with pytest.raises(EdgennError, match=r"expected uint8 pixels shaped HxW, HxWx1, HxWx3"):
        preprocess.array_to_pixels(array, PreprocessSpec.for_images(4, 4, "L"))


@pytest.mark.tf
def test_training_pipeline_scales_like_the_device():
    """The tf.data pipeline of edgenn.host.train feeds the model the same floats as edgenn.preprocess."""
    assert has_tensorflow()
    import tensorflow as tf

    from edgenn import datasets as data
    from edgenn.host.train import _dataset

    ds = data.load_dataset(data.DataSpec(dataset=str(SAMPLES)))
    for spec in (
        ds.spec,
        PreprocessSpec(**{**ds.spec.to_dict(), "scale": 2 / 255, "offset": -1.0}),
    ):
        pipeline = _dataset(tf, ds.x, ds.y, spec, 64, False, 0, False)
        batches = np.concatenate([xb.numpy() for xb, _ in pipeline])
        np.testing.assert_array_equal(batches, preprocess.pixels_to_input(ds.x, spec))
