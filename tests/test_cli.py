"""The click CLI: help on every command, exit codes and one-line errors, --json output."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgenn.cli import main

from .conftest import SAMPLES


@pytest.fixture
def runner():
    return CliRunner()


def test_help_on_every_command_has_an_example(runner):
    root = runner.invoke(main, ["--help"])
    assert root.exit_code == 0 and "Examples:" in root.output
    for name in main.commands:
        result = runner.invoke(main, [name, "-h"])
        assert result.exit_code == 0, name
        assert "Examples:" in result.output and f"edgenn {name}" in result.output


def test_version(runner):
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("edgenn, version ")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["train", "--dataset", "imagenet", "-o", "x"], 2, "Unknown data set 'imagenet'"),
        (["train", "--hidden", "12,a", "-o", "x"], 2, "expected comma-separated integers"),
        (["train", "--input-size", "big", "-o", "x"], 2, "expected SIZE or HEIGHTxWIDTH"),
        (["train", "--model", "rnn", "-o", "x"], 2, "'rnn' is not one of 'mlp', 'cnn'"),
        (["train", "--epochs", "0", "-o", "x"], 2, "--epochs (0)"),
        (["train", "--dataset", "digits", "--limit", "5", "-o", "x"], 2, "--limit 5 is too small"),
        (["train"], 2, "Missing option '-o' / '--output'"),
    ],
)
def test_usage_errors_exit_2(runner, tmp_path, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, args)
    assert result.exit_code == code, result.output
    assert message in result.output


def _one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("edgenn: error: ")
    return lines[0]


def test_missing_data_dir_is_exit_1(runner, tmp_path):
    result = runner.invoke(main, ["train", "--data-dir", str(tmp_path), "-o", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "lacks Fashion-MNIST files" in _one_line_error(result)


def test_empty_class_folder_is_exit_1(runner, tmp_path):
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(next(SAMPLES.glob("*/*.jpg")).read_bytes())
    (root / "b").mkdir()
    result = runner.invoke(main, ["train", "--dataset", str(root), "-o", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "holds no images" in _one_line_error(result)
    assert not (tmp_path / "r").exists()


def test_csv_errors_are_exit_1(runner, tmp_path, iris_csv):
    result = runner.invoke(
        main,
        [
            "train",
            "--dataset",
            str(iris_csv),
            "--target-column",
            "price",
            "-o",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 1
    assert "has no column 'price'" in _one_line_error(result)


def test_existing_output_needs_overwrite(runner, tmp_path):
    (tmp_path / "r").mkdir()
    result = runner.invoke(main, ["train", "--dataset", "digits", "-o", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "already exists" in _one_line_error(result) and "--overwrite" in result.output


@pytest.mark.tf
def test_train_json_on_stdout(tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(
        main,
        [
            "train",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--hidden",
            "32",
            "--epochs",
            "3",
            "--quiet",
            "--json",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dataset"] == "digits" and doc["params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert doc == json.loads((out / "metrics.json").read_text())


@pytest.mark.tf
def test_train_human_summary(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--epochs",
            "2",
            "-o",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mlp on digits" in result.stdout and "test accuracy" in result.stdout
    assert "epoch 2/2" in result.stderr  # progress goes to stderr


def _library_choices() -> dict[tuple[str, str], object]:
    """Every click.Choice of the CLI -> the library object that owns the list."""
    from edgenn import (
        bundle,
        camera,
        precision,
        preprocess,
        quantization,
        runtime,
        tag,
        targets,
        xmp,
    )
    from edgenn import datasets as ds
    from edgenn.host import convert, models
    from edgenn.host import train as host_train
    from edgenn.host.tuning import objectives
    from firmware_export import render

    train = {
        "task": ds.TASKS,
        "color_mode": preprocess.COLOR_MODES,
        "model": models.MODEL_KINDS,
        "head": models.CNN_HEADS,
        "activation": models.ACTIVATIONS,
        "loss": models.LOSSES,
        "optimizer": models.OPTIMIZERS,
        "lr_schedule": host_train.LR_SCHEDULES,
        "distribute": host_train.DISTRIBUTE_STRATEGIES,
    }
    return {
        ("bench", "runtime"): runtime.RUNTIMES,
        ("predict", "runtime"): runtime.RUNTIMES,
        ("bundle", "target"): bundle.BUNDLE_TARGETS,
        ("bundle", "service"): bundle.SERVICES,
        ("camera", "smooth_mode"): camera.SMOOTH_MODES,
        ("convert", "quantize"): quantization.QUANTIZE_CHOICES,
        ("convert", "io_type"): precision.IO_TYPES,
        ("convert", "target"): targets.TARGETS,
        ("inspect", "target"): targets.TARGETS,
        ("convert", "fmt"): convert.FORMATS,
        ("firmware", "layout"): render.LAYOUTS,
        ("tag", "fmt"): tag.FORMATS,
        ("tag", "sidecar"): xmp.SIDECAR_STYLES,
        # edgenn tune takes train's data and model options, so their lists.
        **{(cmd, name): owner for name, owner in train.items() for cmd in ("train", "tune")},
        ("tune", "target"): targets.TARGETS,
        ("tune", "objectives"): objectives.OBJECTIVE_NAMES,
    }


def test_every_cli_choice_is_the_library_list():
    """A list typed into the CLI instead of taken from the library fails here when they drift,
    and a new Choice that is not in the table fails until its owner is named."""
    import click

    owners = _library_choices()
    seen = set()
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param.type, click.Choice):
                key = (name, param.name)
                assert key in owners, f"edgenn {name} --{param.name}: no library owner listed"
                assert list(param.type.choices) == list(owners[key]), key
                seen.add(key)
    assert seen == set(owners)
