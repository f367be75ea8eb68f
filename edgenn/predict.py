"""[device] Classify images with a .tflite model: the public :class:`Classifier` and ``edgenn predict``.

The model needs nothing beside it: labels and preprocessing come from its embedded metadata (or
the companion files next to it, see :mod:`edgenn.artifact`), so on a Pi
``Classifier("model.tflite").classify("photo.jpg")`` (or ``edgenn predict -m model.tflite
photo.jpg``) is enough.

The hot path, :meth:`Classifier.classify` on decoded pixels, is one precomputed step from pixels
to the model input (the recipe's scale and offset and the input quantization folded together,
written into the interpreter's input buffer), the native invoke, and a top-k on the interpreter's
output buffer: ``benchmarks/runtime_overhead.py`` compares it with a bare ``set_tensor`` /
``invoke`` / ``get_tensor`` loop.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from edgenn import preprocess, tflite_model
from edgenn.artifact import ModelInfo, check_labels, model_info
from edgenn.classify import DEFAULT_TOP_K, Class, ranker
from edgenn.errors import EdgennError, UsageError
from edgenn.runtime import Runner

#: What :meth:`Classifier.classify` accepts.
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
#: Writes one input (pixels or a preprocessed array) into the interpreter's input tensor.
Fill = Callable[[np.ndarray], object]

# Exact dtypes of the fast path: numpy's built-in dtypes are singletons, so ``is`` suffices (an
# equal dtype that is not the singleton still works, through the general path).
_NDARRAY = np.ndarray
_UINT8 = np.dtype(np.uint8)
_FLOAT32 = np.dtype(np.float32)


@dataclasses.dataclass
class Classification:
    """The result for one image file (``edgenn predict --json`` prints one per line).

    Attributes:
        image: The file.
        top_k: Best classes first.
        inference_ms: Time of the interpreter's ``invoke``.
        total_ms: Decode, preprocess and inference.
        error: Why the image was not classified (None when it was).
    """

    image: str
    top_k: list[Class]
    inference_ms: float | None = None
    total_ms: float | None = None
    error: str | None = None


class Classifier:
    """An image classifier: a .tflite model with its labels and preprocessing.

    Needs numpy, Pillow and a LiteRT runtime only (no TensorFlow). Example::

        from edgenn import Classifier

        clf = Classifier("tests/data/tiny_cnn_int8.tflite")
        for c in clf.classify("datasets/fashion-mnist-samples/Bag/test-00018.jpg"):
            print(c.index, c.label, f"{c.score:.3f}")

    Args:
        model: Path of the .tflite file (labels and recipe embedded, or in files beside it).
        top_k: How many classes :meth:`classify` returns unless told otherwise.
        threads: Interpreter threads (None: the runtime's default).
        xnnpack: Use LiteRT's XNNPACK delegate (False: the bit-exact reference kernels).
        delegate: External delegate (see :class:`edgenn.runtime.Runner`).
        runtime: A name of :data:`edgenn.runtime.RUNTIMES` (None: the first installed).

    Attributes:
        labels: Class names, by output index (empty when the model has none).
        spec: The preprocessing recipe.
        info: Labels, recipe and where they came from.
        runner: The interpreter (bound: call ``runner.invoke()``, not the interpreter's).
        top_k: The default number of classes.

    Raises:
        EdgennError: The model is damaged, not an image classifier, or has several inputs.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        top_k: int = DEFAULT_TOP_K,
        *,
        threads: int | None = None,
        xnnpack: bool = True,
        delegate: str | None = None,
        runtime: str | None = None,
    ) -> None:
        if top_k < 1:
            raise UsageError(f"top_k must be at least 1; received {top_k}.")
        parsed = tflite_model.load(Path(model))
        self.info = _image_model_info(parsed, model)
        self.spec = self.info.spec
        self.labels = self.info.labels
        self.top_k = top_k
        # The recipe and the file must agree before a runtime allocates anything for the file's
        # shapes; then the labels must fit the output the runtime actually computes (the file's
        # declared output shape is only a hint to the runtime).
        _check_recipe_fits(self.spec, parsed.input_details[0].shape, model)
        self.runner = Runner(
            parsed, threads=threads, xnnpack=xnnpack, delegate=delegate, runtime=runtime
        )
        _check_recipe_fits(self.spec, self.runner.input_shape, model)
        out_shape = [int(d) for d in self.runner.output_details[0]["shape"]]
        check_labels(
            self.labels,
            tflite_model.count_values(out_shape[1:] if len(out_shape) > 1 else out_shape),
            str(model),
        )
        binding = self.runner.bind()
        self._invoke = binding.invoke
        self._output = binding.output
        self._rank = ranker(self.labels, binding.output.size, *self.runner.output_quantization)
        self._pixel_fills = _pixel_fills(self.runner, self.spec, binding.input)
        self._input_fills = _input_fills(self.runner, self.spec, binding.input)

    def classify(self, image: ImageLike, k: int | None = None) -> list[Class]:
        """Classify one image: the best classes with their scores, best first.

        Args:
            image: An image file's path; a Pillow image; uint8 pixels as a numpy array of any
                size and mode (``HxW``, ``HxWx1``, ``HxWx3``, ``HxWx4``), converted and resized
                exactly as a file is; or the preprocessed float input of the model's shape.
            k: How many classes (default: the ``top_k`` given to the constructor).

        Returns:
            Up to ``k`` :class:`~edgenn.classify.Class` (``index``, ``label``, ``score``).

        Raises:
            EdgennError: The file cannot be decoded, or the array is not an image.
            UsageError: ``k`` is below 1.
        """
        # The hot path: pixels (or an input) already in the model's size go straight into the
        # interpreter's input buffer; anything else is decoded / resized first.
        fill = None
        if type(image) is _NDARRAY:
            dtype = image.dtype
            if dtype is _UINT8:
                fill = self._pixel_fills.get(image.shape)
            elif dtype is _FLOAT32:
                fill = self._input_fills.get(image.shape)
        if fill is None:
            image, fill = self._prepare(image)
        if k is None:
            k = self.top_k
        elif k < 1:
            raise UsageError(f"k must be at least 1; received {k}.")
        fill(image)
        try:
            self._invoke()
        except RuntimeError as exc:  # free unless raised: the hot path pays nothing
            raise self.runner.failure(exc) from None
        return self._rank(self._output, k)

    def _prepare(self, image: ImageLike) -> tuple[np.ndarray, Fill]:
        if isinstance(image, (str, os.PathLike)):
            pixels = preprocess.load_pixels(Path(image), self.spec)
        elif isinstance(image, Image.Image):
            pixels = preprocess.image_to_pixels(image, self.spec)
        else:
            arr = np.asarray(image)
            if arr.dtype.kind == "f":
                fill = self._input_fills.get(arr.shape)
                if fill is None:
                    raise EdgennError(
                        f"Received a float array of shape {arr.shape}; a float array must be "
                        f"the preprocessed model input {list(self.runner.input_shape)}.",
                        "Pass decoded uint8 pixels of any size instead: they are converted and "
                        "resized as the model was trained.",
                    )
                return arr.astype(np.float32, copy=False), fill
            pixels = preprocess.array_to_pixels(arr, self.spec)
        return pixels, self._pixel_fills[pixels.shape]

    def classify_pixels(
        self, pixels: np.ndarray, k: int | None = None
    ) -> tuple[list[Class], float]:
        """Classify uint8 pixels already shaped as the model input, and time the inference.

        Args:
            pixels: uint8 array of ``spec.input_shape``.
            k: How many classes to return (default: the ``top_k`` given to the constructor).

        Returns:
            ``(classes, inference_ms)``: best first, and the time of ``invoke`` alone.
        """
        fill = self._pixel_fills.get(pixels.shape) if pixels.dtype == _UINT8 else None
        if fill is None:
            pixels, fill = self._prepare(pixels)
        fill(pixels)
        start = time.perf_counter()
        try:
            self._invoke()
        except RuntimeError as exc:
            raise self.runner.failure(exc) from None
        inference_ms = (time.perf_counter() - start) * 1000
        return self._rank(self._output, self.top_k if k is None else k), inference_ms

    def classify_file(self, path: Path, k: int | None = None) -> Classification:
        """Decode, preprocess and classify one image file; a bad file gives ``error``, not a raise.

        Args:
            path: The image.
            k: How many classes to return (default: the ``top_k`` given to the constructor).

        Returns:
            The classification.
        """
        start = time.perf_counter()
        try:
            pixels = preprocess.load_pixels(path, self.spec)
        except EdgennError as exc:
            return Classification(str(path), [], error=exc.message)
        top, inference_ms = self.classify_pixels(pixels, k)
        total = (time.perf_counter() - start) * 1000
        return Classification(str(path), top, round(inference_ms, 4), round(total, 4))


def _image_model_info(parsed: tflite_model.TFLiteFile, model: object) -> ModelInfo:
    if len(parsed.inputs) != 1:
        raise EdgennError(
            f"{model} has {len(parsed.inputs)} inputs; edgenn classifies images with "
            "single-input models.",
            "edgenn bench still measures it (with generated inputs).",
        )
    info = model_info(parsed)
    if info.spec.kind != "image":
        raise EdgennError(f"{model} is a {info.spec.kind} model; edgenn predict classifies images.")
    return info


def _check_recipe_fits(
    spec: preprocess.PreprocessSpec, shape: Iterable[int], model: object
) -> None:
    """Refuse a recipe whose input does not hold as many values as the model's input."""
    if tflite_model.count_values(spec.input_shape) != tflite_model.count_values(shape):
        raise EdgennError(
            f"{model}'s recipe says input {spec.input_shape} but the model takes "
            f"{[int(d) for d in shape]}.",
            "Re-convert the model with edgenn convert.",
        )


def _pixel_shapes(shape: Iterable[int]) -> list[tuple[int, ...]]:
    """The shapes one image may arrive in: ``HxWxC``, with a batch axis, and ``HxW`` when C is 1."""
    shape = tuple(int(s) for s in shape)
    shapes = [shape, (1, *shape)]
    if shape[-1] == 1:
        shapes.append(shape[:-1])
    return shapes


def _pixel_fills(runner: Runner, spec: preprocess.PreprocessSpec, dst: np.ndarray) -> dict:
    """One fill per accepted pixel shape: uint8 pixels to the model input in one step.

    The model input of every pixel value is tabulated once, through the same arithmetic a file
    goes through (:func:`edgenn.preprocess.pixels_to_input`, then :meth:`Runner.quantize`): the
    recipe's scale and offset and the input quantization folded into one map. The fill is the
    cheapest numpy operation that reproduces that table, checked against it here on all 256
    values (a lookup in the table otherwise).
    """
    table = runner.quantize(preprocess.pixels_to_input(np.arange(256, dtype=np.uint8), spec))
    make = _fill_kind(table)
    probe = np.empty(256, dtype=dst.dtype)
    make(probe, table, spec)(np.arange(256, dtype=np.uint8))
    if not np.array_equal(probe, table):
        make = _table_fill
    shapes = _pixel_shapes(spec.input_shape)
    return {shape: make(dst.reshape(shape), table, spec) for shape in shapes}


def _fill_kind(table: np.ndarray) -> Callable[..., Fill]:
    if table.dtype.kind == "f":
        return _scaled_fill
    shift = table.astype(np.int64) - np.arange(256)
    if table.dtype.itemsize == 1 and (shift == shift[0]).all():
        return _shifted_fill
    return _table_fill


# The fills pass their arguments positionally and their constants as full arrays: numpy then
# parses no keyword and converts no scalar per call, a third of a microsecond on a 2 us model.


def _scaled_fill(dst: np.ndarray, table: np.ndarray, spec: preprocess.PreprocessSpec) -> Fill:
    """A float input: ``float32(p) * scale (+ offset)``, the float32 operations of training."""
    copyto, multiply, add = np.copyto, np.multiply, np.add
    scale = np.full(dst.shape, spec.scale, np.float32)
    offset = np.full(dst.shape, spec.offset, np.float32)

    def fill(pixels: np.ndarray) -> None:
        copyto(dst, pixels, "unsafe")
        multiply(dst, scale, dst)

    def fill_offset(pixels: np.ndarray) -> None:
        copyto(dst, pixels, "unsafe")
        multiply(dst, scale, dst)
        add(dst, offset, dst)

    return fill_offset if spec.offset else fill


def _shifted_fill(dst: np.ndarray, table: np.ndarray, spec: preprocess.PreprocessSpec) -> Fill:
    """An 8-bit input whose table is ``p + c``: a wrapping uint8 add read as int8 / uint8 bytes.

    The usual case (scale 1/255 in the recipe and in the quantization). Exact, because the table
    shows that no value was clipped.
    """
    copyto, add = np.copyto, np.add
    raw = dst.view(np.uint8)
    constant = np.full(raw.shape, int(table.astype(np.int64)[0]) % 256, np.uint8)
    if not constant.any():
        return lambda pixels: copyto(raw, pixels)
    return lambda pixels: add(pixels, constant, raw)


def _table_fill(dst: np.ndarray, table: np.ndarray, spec: preprocess.PreprocessSpec) -> Fill:
    """Any other map: a lookup in the table."""
    take = table.take
    return lambda pixels: take(pixels, out=dst, mode="clip")


def _input_fills(runner: Runner, spec: preprocess.PreprocessSpec, dst: np.ndarray) -> dict:
    """One fill per accepted shape of an already preprocessed float input.

    A float model takes it through ``set_tensor`` (the runtime's own copy is cheaper than a numpy
    copy into the tensor's view); a quantized one through :meth:`Runner.quantize`.
    """
    fills: dict[tuple[int, ...], Fill] = {}
    set_tensor, index = runner.interpreter.set_tensor, runner.input_details[0]["index"]
    for shape in _pixel_shapes(spec.input_shape):
        if dst.dtype != _FLOAT32:
            view = dst.reshape(shape)
            fills[shape] = lambda x, view=view, quantize=runner.quantize: quantize(x, out=view)
        elif shape == dst.shape:
            fills[shape] = lambda x: set_tensor(index, x)
        else:
            fills[shape] = lambda x, full=dst.shape: set_tensor(index, x.reshape(full))
    return fills


def expand_images(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given, and the image files inside folders (recursively, sorted).

    A path that is not a folder is yielded as it is, even when it does not exist (a missing
    file, a dangling link, a symlink loop): decoding it then fails for that file alone, with its
    one-line reason, and the other files are still classified.

    Args:
        paths: Files and folders.

    Yields:
        Image paths.
    """
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from preprocess.image_files(path)
        else:
            yield path
