"""``edgenn train``: a data set in, a run directory out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgenn.cli.base import int_list, main, parse_size, print_json
from edgenn.datasets import TASKS
from edgenn.host import models
from edgenn.host.train import LR_SCHEDULES


@main.command(
    epilog="""\b
Examples:
  edgenn train --dataset fashion-mnist --model cnn --epochs 15 -o runs/fmnist-cnn
  edgenn train --dataset fashion-mnist --model mlp --hidden 128 -o runs/fmnist-mlp
  edgenn train --dataset digits --base runs/fmnist-cnn --fine-tune-epochs 3 -o runs/digits
  edgenn train --dataset houses.csv --target-column price --model mlp --hidden 64,32 -o runs/price
  edgenn train --dataset photos/ --input-size 64 --model cnn -o runs/photos
"""
)
@click.option(
    "--dataset",
    default="fashion-mnist",
    show_default=True,
    help="fashion-mnist, digits, a folder with one sub-folder per class, or a .csv file.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder with the Fashion-MNIST IDX files (default: datasets/, Debian's package, cache).",
)
@click.option("--target-column", help="CSV: the column to predict.")
@click.option(
    "--task",
    type=click.Choice(TASKS),
    default="auto",
    show_default=True,
    help="CSV: what the target is; auto takes text or few integers as classes.",
)
@click.option("--input-size", callback=parse_size, help="Resize images to SIZE or HxW pixels.")
@click.option("--color-mode", type=click.Choice(["L", "RGB"]), help="Convert images to this mode.")
@click.option("--limit", type=int, help="Train on a stratified subset of N examples.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option(
    "--test-fraction",
    type=float,
    default=0.2,
    show_default=True,
    help="Held-out test share (data sets without their own test split).",
)
@click.option(
    "--model", "model_kind", type=click.Choice(models.MODEL_KINDS), default="cnn", show_default=True
)
@click.option(
    "--hidden", callback=int_list, default="128", show_default=True, help="MLP hidden layer sizes."
)
@click.option(
    "--filters",
    callback=int_list,
    default="32,64,64",
    show_default=True,
    help="CNN block channels.",
)
@click.option(
    "--depthwise", is_flag=True, help="CNN: depthwise-separable blocks (MobileNet style)."
)
@click.option(
    "--head",
    type=click.Choice(models.CNN_HEADS),
    default=models.DEFAULT_CNN_HEAD,
    show_default=True,
    help="CNN: global average pooling or flatten before the dense layers.",
)
@click.option(
    "--dense",
    type=int,
    default=models.DEFAULT_CNN_DENSE,
    show_default=True,
    help="CNN: units of a dense layer before the output.",
)
@click.option(
    "--activation",
    type=click.Choice(models.ACTIVATIONS),
    default="relu",
    show_default=True,
)
@click.option("--dropout", type=float, help="Dropout rate [default: 0.3 for cnn, 0 for mlp].")
@click.option(
    "--base",
    help="Transfer learning from an edgenn run directory, a .keras file, mobilenet_v2 or "
    "mobilenet_v3_small.",
)
@click.option("--weights", help="Weights of a mobilenet base: imagenet (needs internet) or a file.")
@click.option(
    "--fine-tune-epochs",
    type=int,
    default=0,
    show_default=True,
    help="Unfreeze the base and train N more epochs.",
)
@click.option(
    "--loss",
    type=click.Choice(models.LOSSES),
    default="auto",
    show_default=True,
)
@click.option(
    "--optimizer",
    type=click.Choice(models.OPTIMIZERS),
    default="adam",
    show_default=True,
)
@click.option(
    "--lr", "learning_rate", type=float, default=2e-3, show_default=True, help="Learning rate."
)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--epochs", type=int, default=15, show_default=True)
@click.option(
    "--patience",
    type=int,
    default=5,
    show_default=True,
    help="Early stopping on validation loss (0: off).",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(LR_SCHEDULES),
    default="cosine",
    show_default=True,
)
@click.option(
    "--augment", is_flag=True, help="Random horizontal flips and shifts of training images."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Run directory to create.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json on stdout.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(**opts: Any) -> None:
    """Train a model and write a run directory (model.keras, labels, metrics, plots)."""
    from edgenn.datasets import DataSpec
    from edgenn.host.train import TrainConfig
    from edgenn.host.train import train as run_training

    data = DataSpec(
        dataset=opts["dataset"],
        data_dir=str(opts["data_dir"]) if opts["data_dir"] else None,
        target_column=opts["target_column"],
        task=opts["task"],
        input_size=opts["input_size"],
        color_mode=opts["color_mode"],
        seed=opts["seed"],
        val_fraction=opts["val_fraction"],
        test_fraction=opts["test_fraction"],
        limit=opts["limit"],
    )
    config = TrainConfig(
        data=data,
        model=opts["model_kind"],
        hidden=opts["hidden"],
        filters=opts["filters"],
        depthwise=opts["depthwise"],
        head=opts["head"],
        dense=opts["dense"],
        activation=opts["activation"],
        dropout=opts["dropout"],
        base=opts["base"],
        weights=opts["weights"],
        fine_tune_epochs=opts["fine_tune_epochs"],
        loss=opts["loss"],
        optimizer=opts["optimizer"],
        learning_rate=opts["learning_rate"],
        batch_size=opts["batch_size"],
        epochs=opts["epochs"],
        patience=opts["patience"],
        lr_schedule=opts["lr_schedule"],
        augment=opts["augment"],
    )
    result = run_training(
        config,
        opts["output"],
        overwrite=opts["overwrite"],
        progress=not opts["quiet"],
        verbose=opts["verbose"],
    )
    m = result.metrics
    if opts["as_json"]:
        print_json(m)
        return
    if "test_accuracy" in m:
        score = f"test accuracy {m['test_accuracy']:.2%} ({m['n_test']} examples)"
    else:
        score = f"test MSE {m['test_mse']:.4g}, MAE {m['test_mae']:.4g}, R2 {m['test_r2']:.3f}"
    click.echo(
        f"{result.run_dir}: {m['model']} on {m['dataset']}, {m['params']:,} parameters, "
        f"{m['epochs_run']} epochs (best {m['best_epoch']}) in {m['train_seconds']:.1f}s; {score}"
    )
