"""The training path on tiny real slices: data -> model -> train -> artifacts -> reload."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgenn import datasets as data
from edgenn.cli import main
from edgenn.cli.train import config_from_cli
from edgenn.errors import EdgennError, UsageError
from edgenn.host import models
from edgenn.host.train import (
    DISTRIBUTE_STRATEGIES,
    FINE_TUNE_PHASE,
    LR_SCHEDULES,
    OPTIONS_KEY,
    TRAIN_PHASE,
    TrainConfig,
    config_from_options,
    config_options,
    read_config,
    train,
)
from edgenn.preprocess import COLOR_MODES

from .conftest import SAMPLES

TINY = dict(epochs=2, batch_size=64, patience=0)


@pytest.mark.tf
def test_run_directory_artifacts(cnn_run):
    run = cnn_run.run_dir
    names = {p.name for p in run.iterdir()}
    assert names == {
        "model.keras",
        "labels.txt",
        "preprocess.json",
        "data.json",
        "history.csv",
        "curves.png",
        "confusion_matrix.png",
        "metrics.json",
    }
    assert (run / "labels.txt").read_text().splitlines() == data.FASHION_MNIST_LABELS
    m = json.loads((run / "metrics.json").read_text())
    for key in ("test_accuracy", "params", "epochs_run", "train_seconds", "dataset", "seed"):
        assert key in m
    assert m["dataset"] == "fashion-mnist" and m["seed"] == 0 and m["epochs_run"] == 4
    assert m["n_train"] == 1800 and m["n_val"] == 200 and m["n_test"] == 10000
    # Four epochs on 1,800 images: far better than chance (10%), far from converged.
    assert 0.35 < m["test_accuracy"] < 0.95
    assert np.array(m["confusion_matrix"]).sum() == 10000
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert len(rows) == 4 and {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(rows[0])
    for png in ("curves.png", "confusion_matrix.png"):
        with Image.open(run / png) as img:
            assert img.format == "PNG" and img.width > 300


@pytest.mark.tf
def test_reload_gives_the_same_predictions(cnn_run):
    splits = data.make_splits(data.load_data_spec(cnn_run.run_dir))
    x = splits.model_inputs(splits.x_test[:256])
    before = cnn_run.model.predict(x, verbose=0)
    reloaded = models.load_keras_model(cnn_run.run_dir)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6)
    # The metrics file agrees with a fresh evaluation of the reloaded model on the same test split.
    full = reloaded.predict(splits.model_inputs(splits.x_test), verbose=0)
    assert float(np.mean(full.argmax(1) == splits.y_test)) == pytest.approx(
        cnn_run.metrics["test_accuracy"], abs=1e-4
    )


@pytest.mark.tf
def test_existing_run_is_not_overwritten(cnn_run):
    before = (cnn_run.run_dir / "model.keras").read_bytes()
    with pytest.raises(EdgennError, match="already exists.*--overwrite"):
        train(TrainConfig(data=data.DataSpec(limit=100), **TINY), cnn_run.run_dir)
    assert (cnn_run.run_dir / "model.keras").read_bytes() == before


@pytest.mark.tf
def test_failed_run_leaves_nothing(tmp_path, iris_csv):
    out = tmp_path / "run"
    iris = data.DataSpec(dataset=str(iris_csv), target_column="species")
    with pytest.raises(UsageError, match="--model cnn needs image input"):
        train(TrainConfig(data=iris, model="cnn", **TINY), out)
    with pytest.raises(UsageError, match="--loss mse is for regression"):
        train(TrainConfig(data=iris, model="mlp", loss="mse", **TINY), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.tf
def test_mlp_classic_784_128_10(tmp_path):
    config = TrainConfig(
        data=data.DataSpec(limit=2000),
        model="mlp",
        hidden=[128],
        activation="tanh",
        optimizer="nesterov",
        learning_rate=0.05,
        lr_schedule="plateau",
        **TINY,
    )
    reports = []
    result = train(config, tmp_path / "mlp", progress=reports.append)
    assert result.metrics["params"] == 784 * 128 + 128 + 128 * 10 + 10
    assert result.metrics["test_accuracy"] > 0.6
    # One report per batch and one per epoch end, in order; the epoch ends carry validation.
    steps = -(-result.metrics["n_train"] // 64)
    assert {r.steps for r in reports} == {steps}
    ends = [r for r in reports if r.epoch_end]
    assert [(r.phase, r.epoch, r.epochs) for r in ends] == [
        (TRAIN_PHASE, 1, 2),
        (TRAIN_PHASE, 2, 2),
    ]
    assert [r.step for r in reports if not r.epoch_end] == list(range(1, steps + 1)) * 2
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(ends[-1].metrics)
    history = list(csv.DictReader(open(tmp_path / "mlp" / "history.csv")))
    assert [float(row["val_loss"]) for row in history] == pytest.approx(
        [r.metrics["val_loss"] for r in ends], rel=1e-5
    )


@pytest.mark.tf
def test_transfer_from_fashion_mnist_to_digits_offline(cnn_run, tmp_path):
    config = TrainConfig(
        data=data.DataSpec(dataset="digits"),
        base=str(cnn_run.run_dir),
        fine_tune_epochs=2,
        epochs=12,
        patience=0,
        learning_rate=1e-2,
    )
    reports = []
    result = train(config, tmp_path / "digits", progress=reports.append)
    m = result.metrics
    ends = [(r.phase, r.epoch) for r in reports if r.epoch_end]
    assert ends == [(TRAIN_PHASE, i) for i in range(1, 13)] + [
        (FINE_TUNE_PHASE, 1),
        (FINE_TUNE_PHASE, 2),
    ]
    # The digits were resized to the base's 28x28 input; only the new head trained at first.
    spec = json.loads((tmp_path / "digits" / "preprocess.json").read_text())
    assert spec["input_shape"] == [28, 28, 1]
    assert m["model"].startswith("transfer:") and m["epochs_run"] == 14
    assert m["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert (tmp_path / "digits" / "labels.txt").read_text().split() == [str(i) for i in range(10)]


@pytest.mark.tf
def test_csv_regression_run(diabetes_csv, tmp_path):
    config = TrainConfig(
        data=data.DataSpec(dataset=str(diabetes_csv), target_column="progression"),
        model="mlp",
        hidden=[32, 16],
        epochs=30,
        patience=5,
        learning_rate=5e-3,
    )
    result = train(config, tmp_path / "reg")
    m = result.metrics
    assert m["task"] == "regression"
    # Better than predicting the training mean (R2 = 0) on held-out patients.
    assert m["test_r2"] > 0.2
    assert "test_mse" in m and (tmp_path / "reg" / "predictions.png").is_file()
    assert (tmp_path / "reg" / "labels.txt").read_text() == "progression\n"


@pytest.mark.tf
def test_binary_csv_uses_a_sigmoid_head(breast_cancer_csv, tmp_path):
    config = TrainConfig(
        data=data.DataSpec(dataset=str(breast_cancer_csv), target_column="diagnosis"),
        model="mlp",
        hidden=[16],
        epochs=10,
        patience=0,
        optimizer="rmsprop",
        learning_rate=1e-2,
    )
    result = train(config, tmp_path / "bin")
    assert result.metrics["loss_function"] == "binary_crossentropy"
    assert result.model.output_shape == (None, 1)
    assert result.metrics["test_accuracy"] > 0.85


@pytest.mark.tf
def test_categorical_crossentropy_and_image_folder(tmp_path):
    config = TrainConfig(
        data=data.DataSpec(dataset=str(SAMPLES), seed=1),
        model="cnn",
        filters=[8, 16],
        loss="categorical_crossentropy",
        optimizer="adagrad",
        learning_rate=0.05,
        augment=True,
        **TINY,
    )
    result = train(config, tmp_path / "folder")
    assert result.metrics["n_test"] == 60 and result.metrics["num_classes"] == 10


@pytest.mark.tf
@pytest.mark.parametrize("name", models.OPTIMIZERS)
def test_every_optimizer_builds(name):
    opt = models.make_optimizer(name, 0.01)
    assert float(opt.learning_rate) == pytest.approx(0.01)


@pytest.mark.tf
@pytest.mark.parametrize("activation", models.ACTIVATIONS)
def test_builders_and_activations(activation):
    cnn = models.build_cnn((28, 28, 1), 10, depthwise=True, dense=32, activation=activation)
    assert cnn.output_shape == (None, 10)
    assert any(layer.__class__.__name__ == "DepthwiseConv2D" for layer in cnn.layers)
    mlp = models.build_mlp(
        (13,), 1, hidden=[8, 4], activation=activation, dropout=0.1, output_activation="linear"
    )
    assert mlp.output_shape == (None, 1)


@pytest.mark.tf
def test_default_cnn_is_compact():
    assert models.build_cnn((28, 28, 1), 10).count_params() <= 100_000


@pytest.mark.tf
def test_loading_a_non_model_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(EdgennError, match="could not be loaded as a Keras model"):
        models.load_keras_model(bad)


def test_cli_defaults_and_choices_are_the_library_s():
    """Runs without TensorFlow: edgenn train's options are read from the library."""
    command = main.commands["train"]
    ctx = command.make_context("train", ["-o", "run"])
    assert config_from_cli(ctx.params, ctx) == TrainConfig()
    choices = {p.name: list(p.type.choices) for p in command.params if hasattr(p.type, "choices")}
    assert choices == {
        "task": list(data.TASKS),
        "color_mode": list(COLOR_MODES),
        "model": list(models.MODEL_KINDS),
        "head": list(models.CNN_HEADS),
        "activation": list(models.ACTIVATIONS),
        "loss": list(models.LOSSES),
        "optimizer": list(models.OPTIMIZERS),
        "lr_schedule": list(LR_SCHEDULES),
        "distribute": list(DISTRIBUTE_STRATEGIES),
    }
    given = command.make_context("train", ["-o", "run", "--model", "mlp", "--hidden", "64,32"])
    assert config_from_cli(given.params, given) == TrainConfig(model="mlp", hidden=[64, 32])


@pytest.mark.tf
def test_cli_prints_a_line_per_epoch_on_stderr(iris_csv, tmp_path):
    args = ["train", "--dataset", str(iris_csv), "--target-column", "species", "--model", "mlp"]
    args += ["--epochs", "2", "--patience", "0", "-o", str(tmp_path / "iris")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert "val_loss" in lines[-1] and "\r" not in result.stderr
    assert result.stdout.startswith(f"{tmp_path / 'iris'}: mlp on ")
    quiet = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "quiet"), "--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_config_options_are_train_s_parameters_and_round_trip():
    """The --config format is keyed by edgenn train's parameter names and converts both ways."""
    command = main.commands["train"]
    names = {p.name for p in command.params}
    options = config_options(TrainConfig())
    others = {"config", "output", "overwrite", "as_json", "verbose", "quiet"}
    assert set(options) == names - others
    assert config_from_options(options) == TrainConfig()
    changed = TrainConfig(
        data=data.DataSpec(dataset="digits", input_size=[16, 16], limit=500, seed=7),
        model="cnn",
        filters=(8, 16),  # a tuple, as a builder default might be passed: written as a list
        depthwise=True,
        dropout=0.25,
        learning_rate=1e-3,
        distribute="mirrored",
    )
    doc = json.loads(json.dumps(config_options(changed)))
    assert doc["filters"] == [8, 16] and doc["learning_rate"] == 1e-3 and doc["seed"] == 7
    assert config_options(config_from_options(doc)) == doc
    # Some options over a base change only those; an integer is taken for a float option.
    partial = config_from_options({"epochs": 3, "learning_rate": 1}, base=changed)
    assert partial.epochs == 3 and partial.learning_rate == 1.0 and partial.data.limit == 500


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch-size": 32}, "Unknown train option.s. 'batch-size'; expected some of: dataset, "),
        ({"epochs": "5"}, "'epochs' received \"5\"; expected an integer"),
        ({"epochs": 2.5}, "'epochs' received 2.5; expected an integer"),
        ({"augment": 1}, "'augment' received 1; expected true or false"),
        ({"filters": [8, "16"]}, "'filters' received .8, \"16\".; expected a list of integers"),
        ({"hidden": None}, "'hidden' received null; expected a list of integers"),
        ({"limit": "all"}, "'limit' received \"all\"; expected an integer or null"),
        ({"learning_rate": float("nan")}, "'learning_rate' received NaN; expected a number"),
        ({"model": "rnn"}, "'model' received 'rnn'; expected one of mlp, cnn"),
        ({"distribute": "horovod"}, "expected one of none, mirrored, multi-worker"),
        ({"epochs": 0}, "--epochs .0. and --batch-size .64. must be at least 1"),
        (["model", "cnn"], "Received train options as list; expected a JSON object"),
    ],
)
def test_config_from_options_names_the_bad_key_or_value(options, message):
    with pytest.raises(EdgennError, match=message):
        config_from_options(options)


def test_config_file_under_command_line_options(tmp_path):
    """Options given on the command line override the file; options left at default do not."""
    path = tmp_path / "best.json"
    options = {"model": "mlp", "hidden": [64], "depthwise": True, "limit": 500, "seed": 4}
    path.write_text(json.dumps(options))
    command = main.commands["train"]

    def config(*args: str) -> TrainConfig:
        ctx = command.make_context("train", ["-o", "run", "--config", str(path), *args])
        return config_from_cli(ctx.params, ctx)

    assert config() == config_from_options(options)
    # --seed 0 is train's default value, but given explicitly it still wins over the file.
    over = config("--hidden", "16,8", "--no-depthwise", "--seed", "0", "--lr", "0.01")
    assert (over.hidden, over.depthwise, over.data.seed, over.learning_rate) == (
        [16, 8],
        False,
        0,
        0.01,
    )
    assert (over.model, over.data.limit) == ("mlp", 500)
    # A finished run's metrics.json replays through its options entry.
    run = tmp_path / "metrics.json"
    run.write_text(json.dumps({"test_accuracy": 0.9, OPTIONS_KEY: options, "params": 1}))
    assert read_config(run) == config_from_options(options)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "best.json is not found; expected a JSON object of edgenn train options"),
        ("{", "best.json is not valid JSON .Expecting property name"),
        ("[1, 2]", "best.json holds a JSON list; expected a JSON object of edgenn train options"),
        ('{"filter": [8]}', "best.json: Unknown train option.s. 'filter'; expected some of: "),
        ('{"epochs": "ten"}', "best.json: Train option 'epochs' received \"ten\"; expected an"),
        (b"\xff\xfe", "best.json is not valid JSON .'utf-8' codec"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "best.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--config", str(path), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("edgenn: error: ")
    assert re.search(message, result.stderr) and not out.exists()


def test_config_that_is_a_directory_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["train", "--config", str(tmp_path), "-o", "run"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"edgenn: error: {tmp_path} is a directory; expected a JSON object of edgenn train "
        "options (a regular file)."
    )


@pytest.mark.tf
def test_config_replays_a_finished_run(tmp_path):
    """edgenn train --config of a finished run's options: the same model, the same accuracy."""
    first = tmp_path / "first"
    args = ["--model", "mlp", "--hidden", "32", "--limit", "1000", "--epochs", "2", "--seed", "3"]
    args += ["--patience", "0", "--lr-schedule", "constant", "--dropout", "0.1", "--quiet"]
    result = CliRunner().invoke(main, ["train", *args, "-o", str(first)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((first / "metrics.json").read_text())
    best = tmp_path / "best.json"
    best.write_text(json.dumps(metrics[OPTIONS_KEY]))
    again = tmp_path / "again"
    result = CliRunner().invoke(main, ["train", "--config", str(best), "--quiet", "-o", str(again)])
    assert result.exit_code == 0, result.output
    replay = json.loads((again / "metrics.json").read_text())
    assert replay[OPTIONS_KEY] == metrics[OPTIONS_KEY]
    assert replay[OPTIONS_KEY]["hidden"] == [32] and replay[OPTIONS_KEY]["dropout"] == 0.1
    before, after = (models.load_keras_model(run) for run in (first, again))
    assert after.get_config() == before.get_config()
    # The same seed on the same slice, on one machine: the same training, example for example.
    assert replay["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert replay["confusion_matrix"] == metrics["confusion_matrix"]
