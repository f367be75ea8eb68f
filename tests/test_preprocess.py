"""edgenn.preprocess: the recipe, image decoding and the training pipeline's arithmetic."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgenn import optional, preprocess
from edgenn.errors import EdgennError
from edgenn.preprocess import PreprocessSpec

from .conftest import SAMPLES, finishes, has_tensorflow

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


#: The first box of a HEIC file as an iPhone writes it (ISO base media ``ftyp``, brand heic),
#: followed by the start of its ``meta`` box.
HEIC_HEADER = (
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    + b"\x00\x00\x01\x0ameta\x00\x00\x00\x00"
    + b"\x00\x00\x00\x22hdlr\x00\x00\x00\x00\x00\x00\x00\x00pict"
    + bytes(14)
)


def test_exif_orientation_is_applied(tmp_path):
    """A camera stores the pixels sideways and says so in EXIF: the model sees them upright."""
    spec = PreprocessSpec.for_images(28, 28, "L")
    src = next(SAMPLES.glob("Trouser/*.jpg"))
    upright = preprocess.load_pixels(src, spec).astype(int)
    stored_for = {6: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180}
    for orientation, transpose in stored_for.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        photo = tmp_path / f"o{orientation}.jpg"
        Image.open(src).convert("RGB").resize((280, 280)).transpose(transpose).save(
            photo, quality=90, exif=exif
        )
        assert np.abs(preprocess.load_pixels(photo, spec).astype(int) - upright).mean() < 8
        # Ignoring the tag would give a rotated garment: far from the upright one.
        raw = np.asarray(Image.open(photo).convert("L").resize((28, 28), Image.Resampling.BILINEAR))
        assert np.abs(raw.astype(int) - upright[..., 0]).mean() > 15


@pytest.mark.parametrize("side", [10000, 14000])
def test_over_the_pixel_limit_is_one_message_and_no_warning(tmp_path, side):
    """100 Mpx (Pillow only warns) and 196 Mpx (Pillow raises) get the same one line."""
    path = tmp_path / f"big{side}.png"
    Image.new("1", (side, side)).save(path)
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that reached the user fails the test
        for call in (
            lambda: preprocess.load_pixels(path, PreprocessSpec.for_images(28, 28, "L")),
            lambda: preprocess.open_image(path, "RGB"),
        ):
            with pytest.raises(EdgennError) as info:
                call()
            assert info.value.message == (
                f"{path} is refused as a decompression bomb: {side * side:,} pixels; edgenn "
                f"decodes at most {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); downscale it first."
            )


@pytest.mark.parametrize(
    "kind, message",
    [
        ("fifo", "is not a regular file"),
        ("dev-zero", "is not a regular file"),
        ("directory", "is a directory"),
        ("loop", "is a symlink loop"),
        ("dangling", "is a dangling symlink"),
    ],
)
def test_only_regular_files_are_decoded(tmp_path, kind, message):
    path = tmp_path / "odd.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "loop":
        path.symlink_to(path)
    else:
        path.symlink_to(tmp_path / "gone.jpg")
    spec = PreprocessSpec.for_images(28, 28, "L")
    fifos = [path] if kind == "fifo" else []
    with pytest.raises(EdgennError, match=f"^{path} {message}; expected an image"):
        finishes(lambda: preprocess.load_pixels(path, spec), fifos=fifos)


def test_a_missing_file_is_named():
    with pytest.raises(EdgennError, match="Image not found: no/such.jpg"):
        preprocess.open_image(Path("no/such.jpg"), "L")


def test_a_heic_photo_names_the_package_that_reads_it(tmp_path):
    if optional.available("pillow_heif"):
        pytest.skip("pillow-heif is installed: HEIC photos are read")
    for name in ("IMG_0001.HEIC", "renamed.jpg"):
        (tmp_path / name).write_bytes(HEIC_HEADER)
        with pytest.raises(EdgennError) as info:
            preprocess.open_image(tmp_path / name, "RGB")
        assert "HEIC" in info.value.message and "pillow-heif" in info.value.message
        assert optional.dependency("pillow_heif").install in info.value.message


def _jpeg(path, size, mode="RGB"):
    Image.open(SAMPLE).convert(mode).resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def test_jpegs_decode_reduced_to_no_less_than_twice_the_model_input(tmp_path):
    photo = _jpeg(tmp_path / "big.jpg", (1600, 1200))
    for side, size in ((28, (200, 150)), (96, (400, 300)), (300, (800, 600)), (700, (1600, 1200))):
        spec = PreprocessSpec.for_images(side, side, "L")
        assert preprocess.decode_side(spec) == 2 * side
        img = preprocess.open_image(photo, "L", preprocess.decode_side(spec))
        assert img.size == size and (min(size) >= 2 * side or size == (1600, 1200))
    assert preprocess.open_image(photo, "L").size == (1600, 1200)


def test_reduced_decoding_stays_close_to_a_full_decode(tmp_path):
    spec = PreprocessSpec.for_images(28, 28, "L")
    photo = _jpeg(tmp_path / "big.jpg", (1600, 1200))
    full = preprocess.resize_pixels(preprocess.open_image(photo, "L"), spec).astype(int)
    assert np.abs(preprocess.load_pixels(photo, spec).astype(int) - full).mean() < 3


def test_small_images_decode_exactly_as_before(tmp_path):
    """Nothing to reduce (Fashion-MNIST's 28x28 JPEGs, a 40x30 photo): a plain full decode."""
    for path in (SAMPLE, _jpeg(tmp_path / "small.jpg", (40, 30))):
        for mode in ("L", "RGB"):
            spec = PreprocessSpec.for_images(28, 28, mode)
            with Image.open(path) as img:
                expected = preprocess.resize_pixels(img.convert(mode), spec)
            np.testing.assert_array_equal(preprocess.load_pixels(path, spec), expected)


@pytest.mark.parametrize("mode", ["CMYK", "L", "RGBA", "P", "I;16"])
def test_files_and_decoded_frames_of_any_mode_give_the_same_pixels(tmp_path, mode):
    """A camera frame (the file decoded to RGB) and the file itself give the same model input."""
    img = Image.open(SAMPLE).convert("RGB").resize((400, 300))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 200)
    elif mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(Image.linear_gradient("L").resize(img.size))
    else:
        img = img.convert(mode)
    path = tmp_path / ("photo.jpg" if mode in ("CMYK", "L") else "photo.png")
    img.save(path)
    for model_mode in ("L", "RGB"):
        spec = PreprocessSpec.for_images(28, 28, model_mode)
        frame = np.asarray(preprocess.open_image(path, "RGB", preprocess.decode_side(spec)))
        np.testing.assert_array_equal(
            preprocess.array_to_pixels(frame, spec), preprocess.load_pixels(path, spec)
        )
