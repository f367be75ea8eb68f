"""``edgenn train``: a data set in, a run directory out.

Every default shown here is read from the library (:class:`edgenn.host.train.TrainConfig` and
:class:`edgenn.datasets.DataSpec` field defaults, the lists in :mod:`edgenn.host.models`). Those
modules import TensorFlow inside functions only, so ``edgenn train --help`` works without it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import click

from edgenn.cli.base import int_list, main, parse_size, print_json
from edgenn.datasets import BUILTIN_DATASETS, TASKS, DataSpec
from edgenn.host import models
from edgenn.host.train import (
    CPU_DEVICES_ENV,
    DISTRIBUTE_STRATEGIES,
    LR_SCHEDULES,
    TRAIN_PHASE,
    EpochProgress,
    TrainConfig,
    config_from_options,
    config_options,
    read_config,
)
from edgenn.preprocess import COLOR_MODES

#: The defaults of a run: what ``edgenn train`` does when an option is not given.
_RUN = TrainConfig()
_DATA: DataSpec = _RUN.data
#: The figures an epoch's line shows, in Keras' order.
SHOWN_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "mae", "val_mae", "learning_rate")
#: Seconds between redraws of the bar on a terminal.
_REDRAW = 0.1


def _csv(values: Sequence[int]) -> str:
    """``[32, 64]`` -> ``"32,64"``: a list default written as the option takes it."""
    return ",".join(str(v) for v in values)


class EpochBar:
    """Draws :class:`EpochProgress` reports: a bar per epoch on a terminal, else a line per epoch."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._drawn = 0.0

    def __call__(self, p: EpochProgress) -> None:
        """Redraw the bar after a batch, or write the epoch's line at its end."""
        prefix = "" if p.phase == TRAIN_PHASE else f"{p.phase} "
        if p.epoch_end:
            parts = " ".join(f"{k} {v:.4f}" for k, v in p.metrics.items() if k in SHOWN_METRICS)
            line = f"{prefix}epoch {p.epoch}/{p.epochs} {p.seconds:.1f}s {parts}"
            self.stream.write(("\r\x1b[K" if self.tty else "") + line + "\n")
            self.stream.flush()
            return
        now = time.perf_counter()
        if not self.tty or now - self._drawn < _REDRAW:
            return
        self._drawn = now
        bar = "#" * int(p.step / p.steps * 30)
        loss = p.metrics.get("loss", float("nan"))
        self.stream.write(
            f"\r{prefix}epoch {p.epoch}/{p.epochs} [{bar:<30}] {p.step}/{p.steps} loss {loss:.4f}"
        )
        self.stream.flush()


_DATASETS_HELP = (
    f"{', '.join(BUILTIN_DATASETS)}, a folder with one sub-folder per class, or a .csv file."
)
_DROPOUT_HELP = "Dropout rate [default: {}].".format(
    ", ".join(f"{rate:g} for {kind}" for kind, rate in models.DEFAULT_DROPOUT.items())
)
_DISTRIBUTE_HELP = (
    "Train with tf.distribute: mirrored over the local GPUs (or the logical CPU devices "
    f"{CPU_DEVICES_ENV}=N makes), multi-worker over the machines TF_CONFIG lists."
)
_BASE_HELP = "Transfer learning from an edgenn run directory, a .keras file, {}.".format(
    " or ".join(models.APPLICATIONS)
)


def _options(*decorators: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """One decorator that applies ``decorators`` so they show in --help in the order given."""

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


#: ``edgenn train``'s data options: which data set and how it is split (DataSpec's fields).
data_options = _options(
    click.option("--dataset", default=_DATA.dataset, show_default=True, help=_DATASETS_HELP),
    click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Folder with the Fashion-MNIST IDX files (default: datasets/, Debian's package, cache).",
    ),
    click.option("--target-column", help="CSV: the column to predict."),
    click.option(
        "--task",
        type=click.Choice(TASKS),
        default=_DATA.task,
        show_default=True,
        help="CSV: what the target is; auto takes text or few integers as classes.",
    ),
    click.option("--input-size", callback=parse_size, help="Resize images to SIZE or HxW pixels."),
    click.option(
        "--color-mode", type=click.Choice(COLOR_MODES), help="Convert images to this mode."
    ),
    click.option("--limit", type=int, help="Train on a stratified subset of N examples."),
    click.option("--val-fraction", type=float, default=_DATA.val_fraction, show_default=True),
    click.option(
        "--test-fraction",
        type=float,
        default=_DATA.test_fraction,
        show_default=True,
        help="Held-out test share (data sets without their own test split).",
    ),
    click.option("--seed", type=int, default=_DATA.seed, show_default=True),
)

#: ``edgenn train``'s model and training options (TrainConfig's fields).
model_options = _options(
    click.option(
        "--model",
        type=click.Choice(models.MODEL_KINDS),
        default=_RUN.model,
        show_default=True,
    ),
    click.option(
        "--hidden",
        callback=int_list,
        default=_csv(_RUN.hidden),
        show_default=True,
        help="MLP hidden layer sizes.",
    ),
    click.option(
        "--filters",
        callback=int_list,
        default=_csv(_RUN.filters),
        show_default=True,
        help="CNN block channels.",
    ),
    click.option(
        "--depthwise/--no-depthwise",
        default=_RUN.depthwise,
        help="CNN: depthwise-separable blocks (MobileNet style).",
    ),
    click.option(
        "--head",
        type=click.Choice(models.CNN_HEADS),
        default=_RUN.head,
        show_default=True,
        help="CNN: global average pooling or flatten before the dense layers.",
    ),
    click.option(
        "--dense",
        type=int,
        default=_RUN.dense,
        show_default=True,
        help="CNN: units of a dense layer before the output.",
    ),
    click.option(
        "--activation",
        type=click.Choice(models.ACTIVATIONS),
        default=_RUN.activation,
        show_default=True,
    ),
    click.option("--dropout", type=float, help=_DROPOUT_HELP),
    click.option("--base", help=_BASE_HELP),
    click.option(
        "--weights", help="Weights of a mobilenet base: imagenet (needs internet) or a file."
    ),
    click.option(
        "--fine-tune-epochs",
        type=int,
        default=_RUN.fine_tune_epochs,
        show_default=True,
        help="Unfreeze the base and train N more epochs.",
    ),
    click.option("--loss", type=click.Choice(models.LOSSES), default=_RUN.loss, show_default=True),
    click.option(
        "--optimizer",
        type=click.Choice(models.OPTIMIZERS),
        default=_RUN.optimizer,
        show_default=True,
    ),
    click.option(
        "--lr",
        "learning_rate",
        type=float,
        default=_RUN.learning_rate,
        show_default=True,
        help="Learning rate.",
    ),
    click.option(
        "--batch-size",
        type=int,
        default=_RUN.batch_size,
        show_default=True,
        help="Global batch size (split across the replicas with --distribute).",
    ),
    click.option("--epochs", type=int, default=_RUN.epochs, show_default=True),
    click.option(
        "--patience",
        type=int,
        default=_RUN.patience,
        show_default=True,
        help="Early stopping on validation loss (0: off).",
    ),
    click.option(
        "--lr-schedule",
        type=click.Choice(LR_SCHEDULES),
        default=_RUN.lr_schedule,
        show_default=True,
    ),
    click.option(
        "--augment/--no-augment",
        default=_RUN.augment,
        help="Random horizontal flips and shifts of training images.",
    ),
    click.option(
        "--distribute",
        type=click.Choice(DISTRIBUTE_STRATEGIES),
        default=_RUN.distribute,
        show_default=True,
        help=_DISTRIBUTE_HELP,
    ),
)


def config_from_cli(opts: dict[str, Any], ctx: click.Context) -> TrainConfig:
    """The run's configuration: the ``--config`` file (if any), then the options the user gave.

    An option left at its default does not override the file: only options whose
    ``ctx.get_parameter_source`` is not ``DEFAULT`` (the command line, an environment variable,
    a default map) do.

    Args:
        opts: The parsed parameters (``ctx.params``); ``config`` is the file, when the command
            has that option.
        ctx: The command's context.

    Returns:
        The configuration.

    Raises:
        EdgennError: The file cannot be read or holds a bad option; a bad option value.
    """
    names = set(config_options(_RUN))
    config_file = opts.get("config")
    base = read_config(config_file) if config_file else TrainConfig()
    given = {}
    for name, value in opts.items():
        source = ctx.get_parameter_source(name)
        if name in names and source not in (None, click.core.ParameterSource.DEFAULT):
            given[name] = str(value) if isinstance(value, Path) else value
    return config_from_options(given, base)


@main.command(
    epilog="""\b
Examples:
  edgenn train --dataset fashion-mnist --model cnn --epochs 15 -o runs/fmnist-cnn
  edgenn train --dataset fashion-mnist --model mlp --hidden 128 -o runs/fmnist-mlp
  edgenn train --dataset digits --base runs/fmnist-cnn --fine-tune-epochs 3 -o runs/digits
  edgenn train --dataset houses.csv --target-column price --model mlp --hidden 64,32 -o runs/price
  edgenn train --dataset photos/ --input-size 64 --model cnn -o runs/photos
  edgenn train --config runs/fmnist-cnn/metrics.json --epochs 30 -o runs/fmnist-cnn-30
  EDGENN_CPU_DEVICES=2 edgenn train --distribute mirrored -o runs/fmnist-cnn-2cpu
"""
)
@data_options
@model_options
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="JSON object of these options (e.g. best.json, or a run's metrics.json to replay it); "
    "options given on the command line override it.",
)
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
@click.pass_context
def train(ctx: click.Context, **opts: Any) -> None:
    """Train a model and write a run directory (model.keras, labels, metrics, plots)."""
    from edgenn.host.train import train as run_training

    result = run_training(
        config_from_cli(opts, ctx),
        opts["output"],
        overwrite=opts["overwrite"],
        progress=None if opts["quiet"] else EpochBar(),
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
    replicas = f" on {m['replicas']} replicas" if m.get("replicas", 1) > 1 else ""
    where = result.run_dir if result.written else f"{result.run_dir} (written by the chief)"
    click.echo(
        f"{where}: {m['model']} on {m['dataset']}, {m['params']:,} parameters, "
        f"{m['epochs_run']} epochs (best {m['best_epoch']}){replicas} in "
        f"{m['train_seconds']:.1f}s; {score}"
    )
