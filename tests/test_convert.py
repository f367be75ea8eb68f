"""edgenn convert: every precision, parity with Keras, TFLM bit-exactness, tflite-runtime 2.14."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgenn import artifact, targets, tflite_model
from edgenn import datasets as data
from edgenn.cli import main
from edgenn.errors import EdgennError, UsageError
from edgenn.host.convert import convert
from edgenn.runtime import Runner

from .conftest import REPO

pytestmark = pytest.mark.tf

TFLITE_214 = REPO / ".venv-tflite214" / "bin" / "python"


@pytest.fixture(scope="module")
def cnn_test(cnn_run):
    splits = data.make_splits(data.load_data_spec(cnn_run.run_dir))
    x = splits.model_inputs(splits.x_test[:500])
    return x, splits.y_test[:500], cnn_run.model.predict(x, verbose=0)


@pytest.fixture(scope="module")
def converted(cnn_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    results = {}
    for q in ("fp32", "fp16", "dynamic", "int8"):
        results[q] = convert(cnn_run.run_dir, out / f"cnn_{q}.tflite", quantize=q)
    results["micro"] = convert(cnn_run.run_dir, out / "micro" / "cnn.tflite", target="micro")
    results["edgetpu"] = convert(cnn_run.run_dir, out / "edgetpu" / "cnn.tflite", target="edgetpu")
    return results


@pytest.mark.parametrize("quantize", ["fp32", "fp16", "dynamic", "int8"])
def test_parity_with_keras(converted, cnn_test, quantize):
    x, _, keras_out = cnn_test
    result = converted[quantize]
    out = Runner(Path(result.output)).predict(x)
    agreement = float(np.mean(out.argmax(1) == keras_out.argmax(1)))
    tolerance = {"fp32": 1e-5, "fp16": 2e-2, "dynamic": 0.1, "int8": 0.1}[quantize]
    assert np.abs(out - keras_out).max() < tolerance
    assert agreement >= {"fp32": 1.0, "fp16": 0.99, "dynamic": 0.97, "int8": 0.95}[quantize]
    assert result.accuracy_drop_points <= 1.0
    assert result.test_examples == 10000


def test_sizes_and_ratio(converted):
    fp32 = converted["fp32"]
    assert fp32.size_ratio == 1.0
    assert 0.4 < converted["fp16"].size_ratio < 0.7
    # A 5k-parameter model: graph and metadata weigh as much as the weights; int8 still halves it.
    assert converted["int8"].size_ratio < 0.5
    assert converted["int8"].calibration_samples == 300


def test_static_batch_one_and_no_shape_ops(converted, mlp_run, tmp_path):
    for result in converted.values():
        m = tflite_model.load(Path(result.output))
        assert m.input_details[0].shape[0] == 1
        assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & {op.name for op in m.ops}
    # The MLP's Flatten lowers to a single RESHAPE with the static signature.
    mlp = convert(mlp_run.run_dir, tmp_path / "mlp.tflite", quantize="int8")
    ops = [o["op"] for o in mlp.ops]
    assert ops.count("RESHAPE") == 1 and "SHAPE" not in ops


def test_labels_and_preprocessing_travel_with_the_model(converted, cnn_run):
    path = Path(converted["int8"].output)
    meta = artifact.embedded(tflite_model.load(path))
    assert meta["labels"] == data.FASHION_MNIST_LABELS
    assert meta["preprocess"]["input_shape"] == [28, 28, 1]
    assert (path.parent / "labels.txt").read_text() == (cnn_run.run_dir / "labels.txt").read_text()
    assert json.loads((path.parent / "preprocess.json").read_text())["color_mode"] == "L"


def test_io_types_per_target(converted):
    # Converted without --quantize / --io: the target records' defaults.
    for key in ("micro", "edgetpu"):
        record = targets.lookup(key)
        assert converted[key].quantize == record.default_precision
        assert converted[key].io == record.default_io
    micro = tflite_model.load(Path(converted["micro"].output))
    tpu = tflite_model.load(Path(converted["edgetpu"].output))
    assert micro.input_details[0].dtype == micro.output_details[0].dtype == "int8"
    assert tpu.input_details[0].dtype == tpu.output_details[0].dtype == "uint8"
    assert tflite_model.load(Path(converted["int8"].output)).input_details[0].dtype == "float32"
    assert converted["micro"].check["ok"] and converted["edgetpu"].check["ok"]
    assert converted["micro"].check["details"]["arena"]["minimum_bytes"] > 0


def test_quantized_io_round_trip(converted, cnn_test):
    """uint8 and int8 I/O models give the same probabilities as the float-I/O int8 model."""
    x, _, _ = cnn_test
    ref = Runner(Path(converted["int8"].output), xnnpack=False).predict(x[:100])
    for key in ("micro", "edgetpu"):
        out = Runner(Path(converted[key].output), xnnpack=False).predict(x[:100])
        assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.97
        assert np.abs(out - ref).max() < 0.05


def test_tflm_matches_litert_reference_kernels(converted, cnn_test):
    """TFLite Micro against LiteRT without XNNPACK on the same int8 inputs: bit-exact but for rare
    1-LSB rounding differences between the two kernel libraries (benchmarks/firmware.py counts
    them over the whole test split)."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    x, _, _ = cnn_test
    path = Path(converted["micro"].output)
    model = tflite_model.load(path)
    arena = converted["micro"].check["details"]["arena"]["recommended_bytes"]
    micro = tflm.Interpreter.from_bytes(model.data, arena_size=arena)
    ref = Runner(model, xnnpack=False)
    exact = 0
    for xi in x[:200]:
        ref.set_input(xi)
        ref.invoke()
        expected = ref.interpreter.get_tensor(ref.output_details[0]["index"])
        micro.set_input(ref.interpreter.get_tensor(ref.input_details[0]["index"]), 0)
        micro.invoke()
        diff = np.abs(micro.get_output(0).astype(int) - expected.astype(int)).max()
        assert diff <= 1
        exact += diff == 0
    assert exact >= 196


def test_accuracy_drop_limit_writes_nothing(cnn_run, tmp_path):
    out = tmp_path / "m.tflite"
    with pytest.raises(EdgennError, match="more than --max-accuracy-drop -50"):
        convert(cnn_run.run_dir, out, quantize="int8", max_accuracy_drop=-50)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(converted, cnn_run):
    out = Path(converted["fp32"].output)
    before = out.read_bytes()
    with pytest.raises(EdgennError, match="already exists"):
        convert(cnn_run.run_dir, out, quantize="fp32")
    assert out.read_bytes() == before


def test_bad_inputs(cnn_run, tmp_path):
    with pytest.raises(UsageError, match="--target edgetpu needs a fully int8 model"):
        convert(cnn_run.run_dir, tmp_path / "m.tflite", quantize="fp16", target="edgetpu")
    with pytest.raises(UsageError, match="--io uint8 needs --quantize int8"):
        convert(cnn_run.run_dir, tmp_path / "m.tflite", quantize="fp32", io_type="uint8")
    with pytest.raises(EdgennError, match="does not exist"):
        convert(tmp_path / "nothing", tmp_path / "m.tflite")
    no_labels = tmp_path / "run"
    no_labels.mkdir()
    (no_labels / "model.keras").write_bytes((cnn_run.run_dir / "model.keras").read_bytes())
    with pytest.raises(EdgennError, match="has no labels.txt"):
        convert(no_labels, tmp_path / "m.tflite")
    # No data.json: int8 has nothing to calibrate on.
    for name in ("labels.txt", "preprocess.json"):
        (no_labels / name).write_bytes((cnn_run.run_dir / name).read_bytes())
    with pytest.raises(EdgennError, match="int8 quantization needs calibration data"):
        convert(no_labels, tmp_path / "m.tflite", quantize="int8")
    assert not (tmp_path / "m.tflite").exists()


def _load_with_tflite_runtime_214(model: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys, numpy as np\n"
        "from tflite_runtime.interpreter import Interpreter\n"
        "it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()\n"
        "d = it.get_input_details()[0]\n"
        "it.set_tensor(d['index'], np.zeros(d['shape'], d['dtype'])); it.invoke()\n"
        "print(it.get_tensor(it.get_output_details()[0]['index']).shape)\n"
    )
    assert TFLITE_214.is_file(), "run: bash scripts/setup.sh test (it makes .venv-tflite214)"
    return subprocess.run([str(TFLITE_214), "-c", code, str(model)], capture_output=True, text=True)


def test_tflite_runtime_214_loads_what_its_target_produces(mlp_run, tmp_path):
    """Dynamic range for tflite-runtime 2.14 loads there; the default conversion does not, and the
    check predicted both."""
    ok = convert(
        mlp_run.run_dir,
        tmp_path / "a" / "m.tflite",
        quantize="dynamic",
        target="tflite-runtime-2.14",
    )
    assert ok.check["ok"] and {"op": "FULLY_CONNECTED", "version": 9, "count": 2} in ok.ops
    run = _load_with_tflite_runtime_214(Path(ok.output))
    assert run.returncode == 0 and "(1, 10)" in run.stdout, run.stderr[-1500:]

    default = convert(mlp_run.run_dir, tmp_path / "b" / "m.tflite", quantize="dynamic")
    report = targets.check(tflite_model.load(Path(default.output)), "tflite-runtime-2.14")
    assert not report.ok
    run = _load_with_tflite_runtime_214(Path(default.output))
    assert run.returncode != 0
    assert "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'" in run.stderr


def test_int8_model_loads_in_tflite_runtime_214(converted):
    run = _load_with_tflite_runtime_214(Path(converted["int8"].output))
    assert run.returncode == 0, run.stderr[-1500:]


def _keras_model_with(tmp_path, build):
    """A small real Keras model saved as a run directory (labels, preprocess, data.json)."""
    import keras

    from edgenn.preprocess import PreprocessSpec

    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, build(keras, inputs))
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    artifact.write_companions(
        run, data.FASHION_MNIST_LABELS, PreprocessSpec.for_images(28, 28, "L")
    )
    data.save_data_spec(data.DataSpec(limit=200), run)
    return run


def test_gpu_check_flags_an_op_the_delegate_lacks(tmp_path):
    """LOG_SOFTMAX is not in the GPU delegate; TensorFlow's own analyzer would call it compatible."""

    def build(keras, x):
        return keras.ops.log_softmax(keras.layers.Dense(10)(keras.layers.Flatten()(x)))

    run = _keras_model_with(tmp_path, build)
    result = convert(
        run, tmp_path / "gpu.tflite", quantize="fp16", target="gpu", max_accuracy_drop=100
    )
    report = result.check
    assert not report["ok"] and report["verdict"].startswith("PARTIAL")
    assert [r["op"] for r in report["rows"] if r["status"] == "falls back"] == ["LOG_SOFTMAX"]
    assert report["details"]["gpu_partitions"] == 1


def test_edgetpu_check_splits_at_the_first_unsupported_op(tmp_path):
    def build(keras, x):
        y = keras.layers.Conv2D(4, 3, activation="relu")(x)
        y = keras.layers.Conv2D(4, 3, activation="elu")(y)  # ELU: not on the Edge TPU
        y = keras.layers.GlobalAveragePooling2D()(y)
        return keras.layers.Dense(10, activation="softmax")(y)

    run = _keras_model_with(tmp_path, build)
    result = convert(run, tmp_path / "tpu.tflite", target="edgetpu", max_accuracy_drop=100)
    rows = result.check["rows"]
    statuses = [r["status"] for r in rows]
    first = statuses.index("falls back")
    # The converter keeps ELU in float between DEQUANTIZE and QUANTIZE: the split comes there.
    assert rows[first]["op"] == "DEQUANTIZE" and rows[first + 1]["op"] == "ELU"
    assert all(s == "falls back" for s in statuses[first:]) and first > 0
    assert "after op" in rows[-1]["reason"]
    assert result.check["verdict"].startswith("PARTIAL")


def test_micro_refuses_a_dynamic_range_model(mlp_run, tmp_path):
    result = convert(mlp_run.run_dir, tmp_path / "dyn.tflite", quantize="dynamic")
    report = targets.check(tflite_model.load(Path(result.output)), "micro")
    assert not report.ok
    assert any("hybrid" in r.reason for r in report.rows)


def test_inspect_several_subgraphs_and_int16(tmp_path):
    """Third-party shapes of model: a WHILE loop (3 subgraphs) and int16x8 quantization."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def loop(x):
        return tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 2.0), [0, x])[1]

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [loop.get_concrete_function()], loop
    )
    m = tflite_model.load(converter.convert())
    assert m.subgraphs == 3 and "WHILE" in {op.name for op in m.ops}

    import keras

    inputs = keras.Input((8,), batch_size=1)
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [np.random.rand(1, 8).astype(np.float32)] for _ in range(20)
    )
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    path = tmp_path / "int16.tflite"
    path.write_bytes(converter.convert())
    doc = tflite_model.describe(tflite_model.load(path))
    result = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["ops"] == doc["ops"]
    dtypes = {t.dtype for t in tflite_model.load(path).tensors}
    assert {"int16", "int8"} <= dtypes


def test_cli_convert_and_inspect(cnn_run, tmp_path):
    out = tmp_path / "cli" / "m.tflite"
    result = CliRunner().invoke(
        main, ["convert", str(cnn_run.run_dir), "--target", "micro", "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["quantize"] == "int8" and doc["io"] == "int8" and doc["check"]["ok"]
    shown = CliRunner().invoke(main, ["inspect", str(out), "--target", "micro"])
    assert shown.exit_code == 0, shown.output
    assert "verdict (micro): OK" in shown.stdout and "labels (10): T-shirt/top" in shown.stdout
    fails = CliRunner().invoke(main, ["inspect", str(Path(doc["output"])), "--target", "gpu"])
    assert fails.exit_code == 0  # int8 runs on the GPU delegate (dequantized)
    usage = CliRunner().invoke(main, ["convert", str(cnn_run.run_dir), "--quantize", "fp4"])
    assert usage.exit_code == 2


def test_onnx_export_and_bench_against_litert(cnn_run, converted, tmp_path):
    """ONNX Runtime, what many Pi users would pick instead, side by side with LiteRT and Keras."""
    from edgenn.bench import BenchOptions, bench
    from edgenn.host.convert import export_onnx

    exported = export_onnx(cnn_run.run_dir, tmp_path / "onnx" / "cnn.onnx")
    assert exported.size_bytes > 0 and exported.opset
    rows = bench(
        [cnn_run.run_dir, Path(exported.output), Path(converted["int8"].output)],
        BenchOptions(runs=20, warmup=2, accuracy_limit=500),
    )
    keras_row, onnx_row, tflite_row = rows
    assert [r.error for r in rows] == [None, None, None]
    assert keras_row.format == "keras" and keras_row.runtime.startswith("keras")
    assert onnx_row.runtime.startswith("onnxruntime") and tflite_row.runtime.startswith("litert")
    # The float ONNX model answers as the Keras model does; drops are measured against Keras.
    assert onnx_row.accuracy == pytest.approx(keras_row.accuracy, abs=0.003)
    assert keras_row.accuracy_drop == 0 and tflite_row.accuracy_drop is not None


def test_mobilenet_base_with_weights_from_a_file(tmp_path):
    """--base mobilenet_v2 --weights FILE: offline, from weights saved earlier."""
    from edgenn.host import models

    base = models.build_application_base("mobilenet_v2", (32, 32, 3), None)
    path = tmp_path / "mobilenet.weights.h5"
    base.save_weights(path)
    again = models.build_application_base("mobilenet_v2", (32, 32, 3), str(path))
    for a, b in zip(base.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(UsageError, match="needs RGB input of at least 32x32"):
        models.build_application_base("mobilenet_v2", (28, 28, 1), None)
    with pytest.raises(EdgennError, match="Could not load mobilenet_v2 weights"):
        models.build_application_base("mobilenet_v2", (32, 32, 3), str(tmp_path / "missing.h5"))


def test_fp16_model_runs_whole_on_the_gpu(converted):
    """fp16 weights sit behind DEQUANTIZE; the delegate folds them, so FULLY_CONNECTED stays on
    the GPU (a check that counted them as runtime inputs would send it to the CPU)."""
    report = targets.check(tflite_model.load(Path(converted["fp16"].output)), "gpu")
    assert report.ok, report.table()
    assert "FULLY_CONNECTED" in {r.op for r in report.rows}


def test_two_input_model_predict_refuses_bench_measures(tmp_path):
    """A model with two inputs: predict says it is unsupported, bench times it with generated
    inputs of each input's dtype and shape."""
    import keras
    import tensorflow as tf

    a = keras.Input((28, 28, 1), batch_size=1)
    b = keras.Input((4,), batch_size=1)
    features = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(a))
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Concatenate()([features, b]))
    model = keras.Model([a, b], out)
    path = tmp_path / "two.tflite"
    with_meta = tflite_model.embed_metadata(
        tf.lite.TFLiteConverter.from_keras_model(model).convert(),
        "edgenn",
        json.dumps(
            {
                "labels": data.FASHION_MNIST_LABELS,
                "preprocess": {
                    "kind": "image",
                    "input_shape": [28, 28, 1],
                    "color_mode": "L",
                    "resize": "bilinear",
                    "scale": 1 / 255,
                },
            }
        ).encode(),
    )
    path.write_bytes(with_meta)
    result = CliRunner().invoke(main, ["predict", "-m", str(path), str(REPO / "datasets")])
    assert result.exit_code == 1 and "has 2 inputs" in result.output
    bench = CliRunner().invoke(main, ["bench", str(path), "-n", "10", "--json"])
    row = json.loads(bench.stdout)["rows"][0]
    assert row["error"] is None and row["input"] == "generated" and row["accuracy"] is None


def test_firmware_refuses_a_dynamic_range_model_and_takes_the_micro_one(mlp_run, tmp_path):
    from firmware_export import export_firmware

    dynamic = convert(mlp_run.run_dir, tmp_path / "dyn" / "m.tflite", quantize="dynamic")
    with pytest.raises(EdgennError, match="hybrid \\(dynamic-range\\) kernel"):
        export_firmware(Path(dynamic.output), tmp_path / "fw-dyn")
    assert not (tmp_path / "fw-dyn").exists()
    micro = convert(mlp_run.run_dir, tmp_path / "micro" / "m.tflite", target="micro")
    result = export_firmware(Path(micro.output), tmp_path / "fw", name="mlp", verify_examples=200)
    # TFLM and TFLite round a few int8 boundary cases differently: at most 1 LSB, rarely.
    assert result.max_lsb_difference <= 1 and result.exact_examples >= 190
    assert result.ops == ["RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert result.arena_min_bytes == micro.check["details"]["arena"]["minimum_bytes"]


@pytest.fixture(scope="module")
def outlier_run(mlp_run, tmp_path_factory):
    """The MLP run with an outlier channel: a model that really suffers under int8.

    Hidden unit 0 is scaled up 1000x and the output layer's weights that read it down 1000x.
    ReLU commutes with a positive scale, so the float model computes the same function (same
    accuracy), but the hidden tensor now has one channel 1000x wider than the other 31, and int8
    gives a whole activation tensor one scale: the other units fall to a level or two. That is
    the outlier-channel problem of models trained without normalization, made deterministic.
    """
    import shutil

    import keras

    run = tmp_path_factory.mktemp("outlier") / "run"
    shutil.copytree(mlp_run.run_dir, run)
    model = keras.models.load_model(run / "model.keras")
    hidden, head = model.get_layer("dense_0"), model.layers[-1]
    (w1, b1), (w2, b2) = hidden.get_weights(), head.get_weights()
    w1[:, 0] *= 1000
    b1[0] *= 1000
    w2[0] /= 1000
    hidden.set_weights([w1, b1])
    head.set_weights([w2, b2])
    model.save(run / "model.keras")
    return run


def test_auto_ladder_leaves_int8_for_a_model_that_suffers(outlier_run, tmp_path):
    out = tmp_path / "auto" / "m.tflite"
    result = convert(outlier_run, out, quantize="auto", report=True)
    first, chosen = result.ladder[0], result.ladder[-1]
    assert set(first) >= {"precision", "accuracy", "drop_points", "size_bytes", "chosen"}
    # Full int8 fails the gate by far; keeping both ends of the outlier tensor in float does not.
    assert first["precision"] == "int8" and first["drop_points"] > 20 and not first["chosen"]
    assert chosen["chosen"] and [e["chosen"] for e in result.ladder].count(True) == 1
    assert result.quantize == chosen["precision"] == "int8-mixed"
    assert result.accuracy_drop_points == chosen["drop_points"] <= 1.0
    kept = [k["op"] for k in chosen["kept_float"]]
    assert kept.count("FULLY_CONNECTED") == 2 and chosen["size_bytes"] > first["size_bytes"]
    assert chosen["latency_ms"] > 0 and first["latency_ms"] > 0
    assert result.decision.startswith("int8-mixed (ops ") and "lost" in result.decision
    model = tflite_model.load(out)
    dense_outputs = {
        model.tensors[op.outputs[0]].dtype for op in model.ops if op.name == "FULLY_CONNECTED"
    }
    assert dense_outputs == {"float32"} and "int8" in {t.dtype for t in model.tensors}
    # The written file itself, run again on part of the test split, keeps the float accuracy.
    x, y = _test_inputs(outlier_run)
    assert np.mean(Runner(out).predict(x).argmax(1) == y) > first["accuracy"] + 0.3
    # The report explains the int8 step the ladder left behind, and what would fix it.
    doc = json.loads((out.parent / "quantization.json").read_text())
    assert doc["precision"] == "int8" and doc["written_precision"] == "int8-mixed"
    assert [e["precision"] for e in doc["ladder"]] == [e["precision"] for e in result.ladder]
    assert doc["ops"][0]["snr_db"] < 5 and doc["ops"][0]["op"] in ("FULLY_CONNECTED", "SOFTMAX")
    assert any("outlier channels" in r for r in doc["remedies"])
    assert (out.parent / "quantization.png").stat().st_size > 5000 and result.report_seconds > 0


def _test_inputs(run):
    splits = data.make_splits(data.load_data_spec(run))
    return splits.model_inputs(splits.x_test[:2000]), splits.y_test[:2000]


def test_auto_stops_at_int8_when_int8_is_fine(mlp_run, tmp_path):
    """A sweep stops at its first count within the gate, and so does the ladder."""
    result = convert(
        mlp_run.run_dir, tmp_path / "m.tflite", quantize="auto", calibration_samples=[50, 300]
    )
    assert len(result.ladder) == 1 and result.ladder[0]["chosen"]
    assert result.quantize == "int8" and result.calibration_samples == 50
    assert result.decision.startswith("int8 (50 calibration samples) written: lost")


def test_full_int8_target_blames_layers_and_names_remedies(outlier_run, tmp_path):
    out = tmp_path / "micro" / "m.tflite"
    with pytest.raises(EdgennError) as failed:
        convert(outlier_run, out, target="micro", calibration_samples=[100, 400])
    text = str(failed.value)
    assert (
        "int8 (100 calibration samples) lost" in text
        and "int8 (400 calibration samples) lost" in text
    )
    assert "Layers to blame in the int8 model: op " in text and "FULLY_CONNECTED" in text
    assert "has outlier channels" in text and "--target micro --calibration-samples 400," in text
    # micro runs full int8 only: no ladder is offered.
    assert "--quantize auto" not in text and not out.parent.exists()


def test_int8_failure_offers_the_ladder(outlier_run, tmp_path):
    with pytest.raises(EdgennError) as failed:
        convert(outlier_run, tmp_path / "m.tflite", quantize="int8")
    assert "int8 conversion lost" in failed.value.message
    assert "--quantize auto (int8 -> int8-mixed -> dynamic -> fp16;" in failed.value.hint
    assert not (tmp_path / "m.tflite").exists()


def test_cli_auto_report_and_inspect(mlp_run, tmp_path):
    out = tmp_path / "cli" / "m.tflite"
    args = ["convert", str(mlp_run.run_dir), "--quantize", "auto", "--report", "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ladder"][0]["precision"] == "int8" and doc["report"].endswith("quantization.json")
    shown = CliRunner().invoke(main, ["inspect", str(out)])
    assert "quantization.json: int8 vs float on " in shown.stdout
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists" in again.output
    bad = CliRunner().invoke(main, [*args[:2], "--calibration-samples", "100,x"])
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output
    sweep = CliRunner().invoke(
        main, [*args[:2], "--quantize", "fp16", "--calibration-samples", "1,2"]
    )
    assert sweep.exit_code == 2 and "sweeps int8 calibration" in sweep.output
    io = CliRunner().invoke(main, [*args[:4], "--io", "uint8", "-o", str(tmp_path / "x.tflite")])
    assert io.exit_code == 2 and "on some steps of the ladder" in io.output
