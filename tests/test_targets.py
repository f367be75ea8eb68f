"""Target checks on real third-party models that must pass and must fail.

Checks on edgenn's own int8 models (which need TensorFlow to make) are in test_convert.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgenn import precision, quantization, targets, tflite_model
from edgenn.errors import EdgennError, UsageError
from edgenn.targets import edgetpu, gpu, runtime_versions
from edgenn.tflm import smallest_arena

from .conftest import REPO

FP32 = REPO / "tests" / "data" / "tiny_cnn_fp32.tflite"


def load(path):
    return tflite_model.load(path)


def _option(command: str, name: str):
    from edgenn.cli import main

    return next((p for p in main.commands[command].params if p.name == name), None)


def test_cli_target_choices_are_the_registry():
    for command in ("convert", "inspect"):
        assert tuple(_option(command, "target").type.choices) == targets.TARGETS
    # bench measures models on this machine and takes no --target; if it gains one, the same list.
    bench_target = _option("bench", "target")
    assert bench_target is None or tuple(bench_target.type.choices) == targets.TARGETS
    assert _option("convert", "target").default == targets.DEFAULT_TARGET
    assert targets.TARGETS == tuple(targets.REGISTRY)
    assert targets.TARGETS == ("cpu", "gpu", "edgetpu", "micro", "tflite-runtime-2.14")


def test_cli_convert_choices_and_defaults_are_the_librarys():
    from edgenn.host import convert

    assert tuple(_option("convert", "quantize").type.choices) == quantization.QUANTIZE_CHOICES
    assert tuple(_option("convert", "io_type").type.choices) == precision.IO_TYPES
    assert tuple(_option("convert", "fmt").type.choices) == convert.FORMATS
    assert _option("convert", "fmt").default == convert.FORMATS[0]
    samples = _option("convert", "calibration_samples").default
    assert samples == str(convert.DEFAULT_CALIBRATION_SAMPLES)
    assert _option("convert", "max_accuracy_drop").default == convert.DEFAULT_MAX_ACCURACY_DROP
    # The help shows each record's defaults, written from the records.
    quantize_help = _option("convert", "quantize").help
    io_help = _option("convert", "io_type").help
    for record in targets.REGISTRY.values():
        assert f"{record.name} {record.default_precision}" in quantize_help
        assert (f"{record.name} {record.default_io}" in io_help) == (record.default_io != "float")
        assert record.help in _option("convert", "target").help


def test_record_defaults_are_what_convert_uses():
    """convert's plan for each target, with no --quantize / --io, is the record's defaults."""
    from edgenn.host.convert import _plan

    expected = {
        "cpu": ("int8", "float"),
        "gpu": ("fp16", "float"),
        "edgetpu": ("int8", "uint8"),
        "micro": ("int8", "int8"),
        "tflite-runtime-2.14": ("int8", "float"),
    }
    for name, record in targets.REGISTRY.items():
        plan = _plan(name, None, None, (1,))
        assert plan.target is record
        assert (plan.quantize, plan.io) == (record.default_precision, record.default_io)
        assert (plan.quantize, plan.io) == expected[name]
        # Another precision keeps float I/O, and a target that needs int8 refuses the rest.
        for quantize in precision.PRECISIONS:
            if quantize in record.allowed_precisions:
                assert _plan(name, quantize, None, (1,)).io == record.io_for(quantize)
            else:
                with pytest.raises(UsageError, match=f"--target {name} needs a fully int8 model"):
                    _plan(name, quantize, None, (1,))
    assert targets.lookup("gpu").io_for("fp16") == "float"


def test_unknown_option_names_the_valid_ones(sine_float):
    model = load(sine_float)
    with pytest.raises(UsageError, match="Unknown option 'arena_margn' for target micro") as exc:
        targets.check(model, "micro", arena_margn=20)
    assert "valid options: arena_margin." in str(exc.value)
    with pytest.raises(UsageError, match="valid options: output_dir, compile"):
        targets.check(model, "edgetpu", compiled=False)
    with pytest.raises(UsageError, match="target cpu; valid options: none"):
        targets.check(model, "cpu", compile=False)
    with pytest.raises(UsageError, match="arena_margin='10' of target micro: expected float"):
        targets.check(model, "micro", arena_margin="10")
    with pytest.raises(UsageError, match="expected bool"):
        targets.check(model, "edgetpu", compile="no")


def test_options_reach_the_check(sine_float, tmp_path):
    report = targets.check(load(sine_float), "micro", arena_margin=50)
    assert report.details["arena"]["margin_percent"] == 50
    # The margin is rounded down to 16-byte steps, so the arena stays within minimum * 1.5.
    assert (
        report.details["arena"]["minimum_bytes"] * 1.5 - 16
        < report.details["arena"]["recommended_bytes"]
        <= report.details["arena"]["minimum_bytes"] * 1.5
    )
    # A str path is taken as a Path; a float model is refused before anything is compiled.
    tpu = targets.check(load(sine_float), "edgetpu", output_dir=str(tmp_path), compile=True)
    assert not tpu.ok and list(tmp_path.iterdir()) == []


def test_record_options_are_the_check_signatures():
    import inspect

    for record in targets.REGISTRY.values():
        params = list(inspect.signature(record.check.load()).parameters.values())[1:]
        keywords = [p.name for p in params if p.kind is not p.VAR_KEYWORD]
        assert tuple(keywords) == record.option_names, record.name
        assert set(record.unwritten_options) <= set(record.option_names)


def test_listing_targets_imports_no_check():
    code = (
        "import sys, edgenn.targets as t; t.lookup('micro'); "
        "print(sorted(m for m in sys.modules if m.startswith('edgenn.targets.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


# ---- cpu: the real runtime


def test_cpu_runs_a_third_party_model(face_detection):
    report = targets.check(load(face_detection), "cpu")
    assert report.ok and report.verdict.startswith("OK")


def test_cpu_runs_mediapipes_custom_op(selfie_segmentation):
    """LiteRT registers MediaPipe's Convolution2DTransposeBias itself: the real runtime decides."""
    report = targets.check(load(selfie_segmentation), "cpu")
    assert report.ok


def _with_op_version(path, op_name: str, version: int) -> bytes:
    """The same real model with one opcode's version raised (as a newer converter would write)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if isinstance(v, int)}
    for code in model.operatorCodes:
        if names[max(code.builtinCode, code.deprecatedBuiltinCode)] == op_name:
            code.version = version
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_cpu_fails_on_an_op_version_the_runtime_lacks(sine_float):
    report = targets.check(load(_with_op_version(sine_float, "FULLY_CONNECTED", 99)), "cpu")
    assert not report.ok and report.verdict.startswith("FAILS")
    assert "FULLY_CONNECTED" in report.verdict and "99" in report.verdict


def test_tflite_runtime_214_rejects_fully_connected_v12(sine_float):
    report = targets.check(
        load(_with_op_version(sine_float, "FULLY_CONNECTED", 12)), "tflite-runtime-2.14"
    )
    assert not report.ok
    assert report.rows[0].reason == "tflite-runtime 2.14.0 loads FULLY_CONNECTED up to version 10"
    assert "loadable by: ai-edge-litert 2.3.0" in report.notes


# ---- tflite-runtime 2.14: measured op versions


def test_measured_tables_match_the_known_limit():
    tables = runtime_versions.op_version_tables()
    # The issue that motivated the check: 2.14 stops at FULLY_CONNECTED v10, LiteRT 2.3 goes further.
    assert tables["tflite-runtime 2.14.0"]["FULLY_CONNECTED"] == 10
    assert tables["ai-edge-litert 2.3.0"]["FULLY_CONNECTED"] > 10


def test_tflite_runtime_214_loads_mediapipe(face_detection):
    report = targets.check(load(face_detection), "tflite-runtime-2.14")
    assert report.ok, report.table()


# ---- edgetpu: documented compiler rules


def test_edgetpu_refuses_a_float_model(face_detection):
    report = targets.check(load(face_detection), "edgetpu")
    assert not report.ok and report.verdict.startswith("FAILS")
    assert "not quantized" in report.verdict and "uint8 or int8" in report.verdict
    assert all(r.status == targets.FAILS for r in report.rows)
    # Either the compiler ran, or the report says plainly that it did not and how to run it.
    assert report.details.get("compiled") is not None or any(
        "NOT compiled" in n for n in report.notes
    )


def test_edgetpu_compiler_log_table():
    log = (
        "Edge TPU Compiler version 16.0.384591198\n"
        "Operator                       Count      Status\n\n"
        "CONV_2D                        3          Mapped to Edge TPU\n"
        "SOFTMAX                        1          Mapped to Edge TPU\n"
        "MEAN                           1          Operation is otherwise supported, but not mapped due to some unspecified limitation\n"
    )
    rows = edgetpu.parse_compiler_log(log)
    assert rows[0] == {"op": "CONV_2D", "count": 3, "status": "Mapped to Edge TPU"}
    assert len(rows) == 3 and rows[2]["op"] == "MEAN"


# ---- gpu: the delegate's rules, not TensorFlow's always-"compatible" analyzer


def test_gpu_takes_a_float_detector(face_detection):
    report = targets.check(load(face_detection), "gpu")
    assert report.ok, report.table()
    assert report.details["gpu_partitions"] == 1


def test_gpu_takes_mediapipes_transposed_convolution(selfie_segmentation):
    """The stock delegate implements Convolution2DTransposeBias (LiteRT's gpu_compatibility.cc,
    CheckCustomOpsGpuDelegateCompatibility): the whole selfie segmenter runs on the GPU."""
    report = targets.check(load(selfie_segmentation), "gpu")
    assert report.ok, report.table()
    assert report.verdict == "OK: all 246 ops run on the GPU delegate (one partition)."
    assert report.details["gpu_partitions"] == 1
    (custom,) = [r for r in report.rows if r.op == "Convolution2DTransposeBias"]
    assert custom.status == targets.RUNS and custom.reason == ""


def _edited(path, edit) -> bytes:
    """The same real model with ``edit(schema, model)`` applied to its flatbuffer."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    edit(s, model)
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _custom_op(model):
    """The selfie segmenter's one custom op and its opcode."""
    (op,) = [
        o for o in model.subgraphs[0].operators if model.operatorCodes[o.opcodeIndex].customCode
    ]
    return op, model.operatorCodes[op.opcodeIndex]


def _gpu_row(data: bytes, name: str):
    report = targets.check(load(data), "gpu")
    return next(r for r in report.rows if r.op == name), report


def test_gpu_reads_a_custom_ops_parameters_from_its_options(selfie_segmentation):
    """The delegate reads TfLiteTransposeConvParams (padding, stride_w, stride_h) from the raw
    custom options: a zero stride, or no options at all, leave the op to the CPU."""
    import numpy as np

    def stride(w, h):
        def edit(s, model):
            op, _ = _custom_op(model)
            op.customOptions = np.array([1, 0, 0, 0, w, 0, 0, 0, h, 0, 0, 0], dtype=np.uint8)

        return edit

    row, _ = _gpu_row(_edited(selfie_segmentation, stride(2, 0)), "Convolution2DTransposeBias")
    assert row.status == targets.FALLS_BACK
    assert row.reason == "incorrect stride values: height 0, width 2"
    row, _ = _gpu_row(_edited(selfie_segmentation, stride(1, 1)), "Convolution2DTransposeBias")
    assert row.status == targets.RUNS

    def no_options(s, model):
        _custom_op(model)[0].customOptions = None

    row, report = _gpu_row(_edited(selfie_segmentation, no_options), "Convolution2DTransposeBias")
    assert row.status == targets.FALLS_BACK and "has no custom options" in row.reason
    assert report.verdict.startswith("PARTIAL: 245 of 246 ops on the GPU in 2 partition(s)")


@pytest.mark.parametrize(
    "name, options, reason",
    [
        # Pooling parameters (padding, strides, filter, activation); indices as a second output.
        (
            "MaxPoolingWithArgmax2D",
            (1, 2, 2, 2, 2, 0),
            "expects 2 output tensor(s), but the node has 1",
        ),
        ("MaxPoolingWithArgmax2D", (1, 2, 2), "options hold 12 bytes; its parameters need 24"),
        # The input and the indices: two runtime inputs (the weights here are constants).
        (
            "MaxUnpooling2D",
            (1, 2, 2, 2, 2),
            "expects 2 runtime input tensor(s), but the node has 1",
        ),
        ("Resampler", (), "expects 2 runtime input tensor(s), but the node has 1"),
        (
            "MyOwnConvolution",
            (1, 2, 2),
            "custom op MyOwnConvolution is not supported by the GPU delegate",
        ),
    ],
)
def test_gpu_custom_op_conditions(selfie_segmentation, name, options, reason):
    """Each custom op the delegate knows has its own conditions; others fall back."""
    import numpy as np

    def edit(s, model):
        op, code = _custom_op(model)
        code.customCode = name
        op.customOptions = np.array(options, dtype="<i4").view(np.uint8) if options else None

    row, _ = _gpu_row(_edited(selfie_segmentation, edit), name)
    assert row.status == targets.FALLS_BACK and row.reason.endswith(reason), row.reason


def test_gpu_builtin_conditions_follow_the_delegate(sine_float, face_detection):
    """Per-op conditions of the builtin switch, on real models edited one field at a time."""

    def zero_kernel(s, model):
        for op in model.subgraphs[0].operators:
            if isinstance(op.builtinOptions, s.Pool2DOptionsT):
                op.builtinOptions.filterWidth = 0

    # A zero-sized window is now refused when the model is read, before any check sees it.
    with pytest.raises(
        EdgennError, match=r"MAX_POOL_2D\) has a stride, dilation or window below 1"
    ):
        load(_edited(face_detection, zero_kernel))

    def shuffled_weights(s, model):
        for op in model.subgraphs[0].operators:
            if isinstance(op.builtinOptions, s.FullyConnectedOptionsT):
                op.builtinOptions.weightsFormat = (
                    s.FullyConnectedOptionsWeightsFormat.SHUFFLED4x16INT8
                )

    report = targets.check(load(_edited(sine_float, shuffled_weights)), "gpu")
    assert {r.reason for r in report.rows} == {"FULLY_CONNECTED weights format 1 is not supported"}

    def softmax_beta(s, model):
        for op in model.subgraphs[0].operators:
            if isinstance(op.builtinOptions, s.SoftmaxOptionsT):
                op.builtinOptions.beta = 0.5

    row, _ = _gpu_row(_edited(FP32, softmax_beta), "SOFTMAX")
    assert row.reason == "SOFTMAX with beta != 1 is not supported"


def test_gpu_op_table_is_the_delegates_switch():
    for op in ("ARG_MAX", "SQUEEZE", "CUSTOM", "WHILE", "LOG_SOFTMAX", "SHAPE"):
        assert op not in gpu.SUPPORTED_OPS
    for op in ("BITCAST", "CUMSUM", "ONE_HOT", "STABLEHLO_CLAMP", "TOPK_V2", "REVERSE_V2"):
        assert op in gpu.SUPPORTED_OPS
    assert gpu.CUSTOM_OPS == {
        "Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"
    }  # fmt: skip


# ---- micro: TFLite Micro's real interpreter


def test_micro_runs_the_sine_model_and_measures_its_arena(sine_float):
    report = targets.check(load(sine_float), "micro")
    assert report.ok, report.table()
    arena = report.details["arena"]
    assert 0 < arena["minimum_bytes"] < arena["recommended_bytes"]
    assert arena["recommended_bytes"] <= arena["minimum_bytes"] * 1.1 + 16
    # The measured minimum is tight: 16 bytes less fails.
    from edgenn import tflm

    ok, _ = tflm.try_run(tflm.runtime(), sine_float.read_bytes(), arena["minimum_bytes"] - 16)
    assert ok is None


def test_micro_refuses_fp16_and_sparse_models(sparse_face_detection):
    report = targets.check(load(sparse_face_detection), "micro")
    assert not report.ok and report.verdict.startswith("FAILS")
    reasons = " ".join(r.reason for r in report.rows)
    assert "DENSIFY" in reasons or "float16" in reasons
    assert "TFLM" in report.verdict or "TFLite Micro" in report.verdict


def test_smallest_arena_margin_is_applied(sine_float):
    a = smallest_arena(sine_float.read_bytes(), margin_percent=50)
    assert a.minimum_bytes * 1.5 - 16 < a.recommended_bytes <= a.minimum_bytes * 1.5


def test_reports_serialize(face_detection):
    for target in targets.TARGETS:
        json.dumps(targets.check(load(face_detection), target).to_dict())


def test_unknown_target():
    with pytest.raises(UsageError, match="Unknown target 'tpu'; expected one of cpu, gpu, edgetpu"):
        targets.check(None, "tpu")
