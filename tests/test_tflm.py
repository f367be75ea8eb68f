"""edgenn.tflm: TFLite Micro's reference interpreter, the arena bisection and its kernel list."""

from __future__ import annotations

import numpy as np
import pytest

from edgenn import tflm
from edgenn.errors import EdgennError
from edgenn.runtime import Runner
from edgenn.tflite_model import load

from .conftest import REPO

MICRO = REPO / "tests" / "data" / "tiny_cnn_micro.tflite"


@pytest.fixture(scope="module")
def aligned() -> bytes:
    return tflm.align(MICRO.read_bytes())


def test_align_keeps_the_network(aligned):
    original, again = load(MICRO), load(aligned)
    assert [op.name for op in again.ops] == [op.name for op in original.ops]
    assert again.weight_bytes == original.weight_bytes


def test_smallest_arena_is_tight_and_the_margin_applied(aligned):
    arena = tflm.smallest_arena(aligned, margin_percent=25)
    assert arena.minimum_bytes % tflm.ALIGN == 0 and arena.measured_on == tflm.ON_INTERPRETER
    # The margin in whole 16-byte steps, never above the percent asked for.
    assert arena.minimum_bytes * 1.25 - tflm.ALIGN < arena.recommended_bytes
    assert arena.recommended_bytes <= arena.minimum_bytes * 1.25
    assert arena.recommended_bytes % tflm.ALIGN == 0
    runtime = tflm.runtime()
    works, _ = tflm.try_run(runtime, aligned, arena.minimum_bytes)
    fails, message = tflm.try_run(runtime, aligned, arena.minimum_bytes - tflm.ALIGN)
    assert works is not None and fails is None
    assert tflm.reason(message) != "no reason given"


def test_interpreter_matches_litert_reference_kernels(aligned):
    """TFLM with the measured arena gives bit-exact the outputs of LiteRT without XNNPACK."""
    arena = tflm.smallest_arena(aligned, 0)
    micro = tflm.Interpreter(aligned, arena.recommended_bytes)
    ref = Runner(aligned, xnnpack=False)
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.integers(-128, 128, size=ref.input_shape).astype(np.int8)
        ref.set_input(x)
        ref.invoke()
        expected = ref.interpreter.get_tensor(ref.output_details[0]["index"])
        assert np.array_equal(micro.run(x), expected)


def test_kernels_and_static_problems(face_detection):
    kernels = tflm.kernels()
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= kernels
    assert tflm.static_problems(load(MICRO)) == {}
    problems = tflm.static_problems(load(face_detection))
    assert problems and any("float16" in why for why in problems.values())


def test_a_model_tflm_cannot_run_is_an_error(face_detection):
    with pytest.raises(EdgennError, match="TFLite Micro cannot run the model"):
        tflm.smallest_arena(face_detection.read_bytes())


def test_io_bytes_counts_inputs_and_outputs():
    assert tflm.io_bytes(load(MICRO)) == 28 * 28 + 10


def test_with_margin_never_exceeds_the_percent_nor_drops_below_the_minimum():
    for minimum in (16, 4240, 10432, 35888, 1_000_000):
        for margin in (0, 10, 12.5, 100):
            size = tflm.with_margin(minimum, margin)
            assert minimum <= size <= minimum * (1 + margin / 100)
            assert size % tflm.ALIGN == 0 and size > minimum * (1 + margin / 100) - tflm.ALIGN
    assert tflm.with_margin(10432, 10) == 11472


def test_bisect_arena_finds_the_smallest_working_step():
    tried = []

    def works(size: int) -> bool:
        tried.append(size)
        return size >= 10_420

    assert tflm.bisect_arena(works, 65_536) == 10_432  # the next 16-byte step
    assert len(tried) <= 13 and all(size % tflm.ALIGN == 0 for size in tried)
    assert tflm.bisect_arena(lambda size: True, 100) == tflm.ALIGN
