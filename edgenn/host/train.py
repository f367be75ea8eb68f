"""[host] Training: data -> model -> fit -> a run directory that every later stage reads.

A run directory holds::

    model.keras            the trained model (best validation loss)
    labels.txt             one class name per line (Coral style); the target name for regression
    preprocess.json        how raw inputs become model inputs (edgenn.preprocess.PreprocessSpec)
    data.json              how to rebuild the same train / validation / test splits
    history.csv            loss and metrics per epoch
    curves.png             loss and accuracy per epoch, train vs validation
    confusion_matrix.png   test split (classification); predicted-vs-true plot for regression
    metrics.json           test_accuracy (or test_mse), params, epochs_run, train_seconds, ...

The directory is built under a temporary name and renamed when complete, so a failed or
interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import artifact, classify, optional
from edgenn import datasets as data_mod
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_directory, atomic_write_text, refuse_existing
from edgenn.host import models
from edgenn.host.tfutil import import_keras, import_tensorflow
from edgenn.preprocess import PreprocessSpec, output_to_target

LR_SCHEDULES = ("cosine", "plateau", "constant")
METRICS_FILE = "metrics.json"
#: The phases a run reports progress for: the model (or a transfer model's new head), then the
#: unfrozen base with ``fine_tune_epochs``.
TRAIN_PHASE = "train"
FINE_TUNE_PHASE = "fine-tune"
#: Fine-tuning runs at the learning rate divided by this, so the base's features are adjusted,
#: not overwritten.
FINE_TUNE_LR_DIVISOR = 10


@dataclasses.dataclass
class TrainConfig:
    """Every hyper-parameter of a training run; saved inside metrics.json.

    The field defaults are the defaults of ``edgenn train`` too: the CLI reads them from here.

    Attributes:
        data: Data set and splits.
        model: ``mlp`` or ``cnn`` (ignored with ``base``).
        hidden: MLP hidden layer sizes.
        filters: CNN conv block channels.
        depthwise: CNN depthwise-separable blocks.
        head: CNN head: ``gap`` (global average pooling) or ``flatten``.
        dense: CNN dense layer before the output (0: none).
        activation: Hidden activation.
        dropout: Dropout rate (None: the model's entry of ``models.DEFAULT_DROPOUT``).
        base: Transfer learning: an edgenn run directory, a ``.keras`` file or a Keras
            application name (``mobilenet_v2``, ``mobilenet_v3_small``).
        weights: Weights of an application base: ``imagenet`` or a file path.
        fine_tune_epochs: After training the new head, unfreeze the base and train this many
            more epochs at a tenth of the learning rate.
        loss: Loss name (``auto`` matches the head).
        optimizer: Optimizer name.
        learning_rate: Initial learning rate.
        batch_size: Batch size.
        epochs: Maximum epochs (early stopping may end sooner).
        patience: Early stopping patience in epochs on validation loss (0 disables it).
        lr_schedule: ``cosine`` decay, ``plateau`` (halve on a validation-loss plateau) or
            ``constant``.
        augment: Random horizontal flips and small shifts of training images.
    """

    data: data_mod.DataSpec = dataclasses.field(default_factory=data_mod.DataSpec)
    model: str = models.DEFAULT_MODEL
    hidden: list[int] = dataclasses.field(default_factory=lambda: list(models.DEFAULT_MLP_HIDDEN))
    filters: list[int] = dataclasses.field(default_factory=lambda: list(models.DEFAULT_CNN_FILTERS))
    depthwise: bool = False
    head: str = models.DEFAULT_CNN_HEAD
    dense: int = models.DEFAULT_CNN_DENSE
    activation: str = models.DEFAULT_ACTIVATION
    dropout: float | None = None
    base: str | None = None
    weights: str | None = None
    fine_tune_epochs: int = 0
    loss: str = models.DEFAULT_LOSS
    optimizer: str = models.DEFAULT_OPTIMIZER
    learning_rate: float = 2e-3
    batch_size: int = 64
    epochs: int = 15
    patience: int = 5
    lr_schedule: str = LR_SCHEDULES[0]
    augment: bool = False


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: The finished run directory.
        metrics: The metrics.json document.
        model: The trained Keras model (best weights).
    """

    run_dir: Path
    metrics: dict[str, Any]
    model: Any = dataclasses.field(repr=False, default=None)


@dataclasses.dataclass(frozen=True)
class EpochProgress:
    """Where a run is: :func:`train` reports one after every batch and at the end of every epoch.

    Attributes:
        phase: :data:`TRAIN_PHASE`, or :data:`FINE_TUNE_PHASE` while the unfrozen base trains.
        epoch: The current epoch of the phase, from 1.
        epochs: The phase's epochs (early stopping may end it sooner).
        step: Batches done in this epoch.
        steps: Batches per epoch.
        seconds: Time since the epoch began.
        metrics: Keras' figures so far (``loss``, ``accuracy`` or ``mae``); at the end of an
            epoch also the validation ones (``val_loss``, ``val_accuracy`` or ``val_mae``).
        epoch_end: True for the report at the end of an epoch.
    """

    phase: str
    epoch: int
    epochs: int
    step: int
    steps: int
    seconds: float
    metrics: dict[str, float]
    epoch_end: bool = False


#: Receives each :class:`EpochProgress` (the CLI draws a bar from them).
ProgressCallback = Callable[[EpochProgress], None]


def _progress_callback(keras, progress: ProgressCallback, phase: str, epochs: int, steps: int):
    """A Keras callback that turns Keras' batch and epoch hooks into :class:`EpochProgress`."""
    started = {"epoch": 0, "at": time.perf_counter()}

    def report(step: int, logs: dict | None, end: bool) -> None:
        figures = {k: float(v) for k, v in (logs or {}).items()}
        seconds = time.perf_counter() - started["at"]
        progress(EpochProgress(phase, started["epoch"], epochs, step, steps, seconds, figures, end))

    def begin(epoch: int, logs: dict | None = None) -> None:
        started.update(epoch=epoch + 1, at=time.perf_counter())

    return keras.callbacks.LambdaCallback(
        on_epoch_begin=begin,
        on_train_batch_end=lambda batch, logs=None: report(batch + 1, logs, False),
        on_epoch_end=lambda epoch, logs=None: report(steps, logs, True),
    )


def _resolve_dropout(config: TrainConfig) -> float:
    if config.dropout is not None:
        return config.dropout
    return models.DEFAULT_DROPOUT.get(config.model, 0.0)


def _base_is_application(base: str | None) -> bool:
    return base is not None and base in models.APPLICATIONS


def prepare_data(config: TrainConfig) -> data_mod.Splits:
    """Load the splits, matching a transfer-learning base's input where there is one.

    Args:
        config: The run's configuration.

    Returns:
        The splits.

    Raises:
        EdgennError: The data set or the base cannot be used.
    """
    data = config.data
    if config.base and not _base_is_application(config.base):
        # Reuse the earlier run's input shape and colour mode, so its features apply.
        spec = _base_preprocess(Path(config.base))
        if spec.kind != "image":
            raise UsageError(
                f"--base {config.base} is a tabular model; transfer learning needs images."
            )
        data = dataclasses.replace(
            data, input_size=list(spec.image_size), color_mode=spec.color_mode
        )
    elif _base_is_application(config.base):
        if data.input_size is None:
            data = dataclasses.replace(data, input_size=[96, 96])
        data = dataclasses.replace(data, color_mode="RGB")
    splits = data_mod.make_splits(data)
    if _base_is_application(config.base):
        info = models.APPLICATIONS[config.base]
        splits.spec = dataclasses.replace(splits.spec, scale=info["scale"], offset=info["offset"])
    elif config.base:
        base_spec = _base_preprocess(Path(config.base))
        splits.spec = dataclasses.replace(
            splits.spec, scale=base_spec.scale, offset=base_spec.offset
        )
    return splits


def _base_preprocess(base: Path) -> PreprocessSpec:
    folder = base if base.is_dir() else base.parent
    if not base.exists():
        raise EdgennError(
            f"--base {base} does not exist.",
            "Pass an edgenn run directory, a .keras file, or one of "
            f"{', '.join(models.APPLICATIONS)}.",
        )
    return artifact.read_companions(folder).spec


def build_model(config: TrainConfig, splits: data_mod.Splits):
    """Build (or, for transfer learning, assemble) the model for a run.

    Args:
        config: The run's configuration.
        splits: The data, for input shape and number of classes.

    Returns:
        ``(model, base)``: the uncompiled model and the frozen base (None without transfer).

    Raises:
        UsageError: The configuration does not fit the data.
    """
    units, activation = models.head_for(splits.task, len(splits.labels))
    shape = splits.spec.input_shape
    dropout = _resolve_dropout(config)
    if config.base:
        if _base_is_application(config.base):
            base = models.build_application_base(config.base, shape, config.weights)
        else:
            base = models.feature_extractor(models.load_keras_model(Path(config.base)))
        return models.attach_head(
            base, units, activation, dropout or models.DEFAULT_TRANSFER_DROPOUT
        ), base
    if config.model not in models.MODEL_KINDS:
        raise UsageError(
            f"Unknown --model {config.model!r}; expected one of {', '.join(models.MODEL_KINDS)}."
        )
    if config.model == "mlp":
        model = models.build_mlp(
            shape, units, config.hidden, config.activation, dropout, activation
        )
    else:
        model = models.build_cnn(
            shape,
            units,
            config.filters,
            config.depthwise,
            config.dense,
            dropout,
            config.activation,
            activation,
            head=config.head,
        )
    return model, None


def _dataset(tf, x, y, spec: PreprocessSpec, batch: int, shuffle: bool, seed: int, augment: bool):
    """A tf.data pipeline: uint8 images stay uint8 in memory and are scaled per batch."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(min(len(y), 20000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)
    scale, offset = np.float32(spec.scale), np.float32(spec.offset)

    if spec.kind == "image":
        # The same arithmetic as edgenn.preprocess.pixels_to_input: float32(pixel) * scale + offset.
        def to_input(xb, yb):
            xb = tf.cast(xb, tf.float32) * scale
            if offset:
                xb = xb + offset
            return xb, yb
    else:
        mean = tf.constant(spec.mean, tf.float32)
        std = tf.constant(spec.std, tf.float32)

        def to_input(xb, yb):
            return (tf.cast(xb, tf.float32) - mean) / std, yb

    ds = ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE)
    if augment and spec.kind == "image":
        flip = tf.keras.layers.RandomFlip("horizontal", seed=seed)
        shift = tf.keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed)
        ds = ds.map(lambda xb, yb: (shift(flip(xb, training=True), training=True), yb))
    return ds.prefetch(tf.data.AUTOTUNE)


def _targets(splits: data_mod.Splits, y: np.ndarray, loss: str) -> np.ndarray:
    if splits.task == "regression":
        return ((y - splits.spec.target_mean) / splits.spec.target_std).astype(np.float32)
    if loss == "categorical_crossentropy":
        return np.eye(len(splits.labels), dtype=np.float32)[y]
    if loss == "binary_crossentropy":
        return y.astype(np.float32)[:, None]
    return y


def _schedule(keras, config: TrainConfig, steps_per_epoch: int):
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, steps_per_epoch * config.epochs), alpha=0.01
        )
    return config.learning_rate


def _check_config(config: TrainConfig) -> None:
    """Refuse sizes and names that no data set or model could fix, before loading either."""
    if config.epochs < 1 or config.batch_size < 1 or config.learning_rate <= 0:
        raise UsageError(
            f"--epochs ({config.epochs}) and --batch-size ({config.batch_size}) must be at least 1 "
            f"and --lr ({config.learning_rate}) positive."
        )
    if config.lr_schedule not in LR_SCHEDULES:
        raise UsageError(
            f"Unknown --lr-schedule {config.lr_schedule!r}; "
            f"expected one of {', '.join(LR_SCHEDULES)}."
        )


@dataclasses.dataclass
class _Fitter:
    """What both training phases (the model or new head, then fine-tuning) share."""

    keras: Any
    model: Any
    config: TrainConfig
    splits: data_mod.Splits
    loss: str
    train_ds: Any
    val_ds: Any
    progress: ProgressCallback | None

    def fit(self, phase: str, epochs: int, learning_rate: float) -> dict[str, list[float]]:
        """Compile with a fresh optimizer and fit; returns Keras' history."""
        keras, config = self.keras, self.config
        steps = int(np.ceil(len(self.splits.y_train) / config.batch_size))
        phase_config = dataclasses.replace(config, learning_rate=learning_rate, epochs=epochs)
        self.model.compile(
            optimizer=models.make_optimizer(
                config.optimizer, _schedule(keras, phase_config, steps)
            ),
            loss=self.loss,
            metrics=["accuracy"] if self.splits.task == "classification" else ["mae"],
        )
        callbacks = []
        if config.patience > 0:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=config.patience, restore_best_weights=True
                )
            )
        if config.lr_schedule == "plateau":
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor="val_loss", factor=0.5, patience=max(1, config.patience // 2)
                )
            )
        if self.progress:
            callbacks.append(_progress_callback(keras, self.progress, phase, epochs, steps))
        with warnings.catch_warnings():
            # Keras warns that shuffle=True is ignored for a tf.data input; the pipeline shuffles.
            warnings.filterwarnings("ignore", message=".*shuffle.*")
            history = self.model.fit(
                self.train_ds,
                validation_data=self.val_ds,
                epochs=epochs,
                callbacks=callbacks,
                verbose=0,
            )
        return history.history


def _fitter(tf, keras, model, config: TrainConfig, splits: data_mod.Splits, loss: str, progress):
    """The tf.data pipelines of the training and validation splits, ready for both phases."""
    seed, batch, spec = config.data.seed, config.batch_size, splits.spec
    x_train, y_train = splits.x_train, _targets(splits, splits.y_train, loss)
    x_val, y_val = splits.x_val, _targets(splits, splits.y_val, loss)
    train_ds = _dataset(tf, x_train, y_train, spec, batch, True, seed, config.augment)
    val_ds = _dataset(tf, x_val, y_val, spec, batch, False, seed, False)
    return _Fitter(keras, model, config, splits, loss, train_ds, val_ds, progress)


def _fit_phases(fitter: _Fitter, base) -> dict[str, list[float]]:
    """Train; with a transfer base and fine-tune epochs, unfreeze it and train on.

    Returns:
        Keras' history of both phases, one list per figure.
    """
    config = fitter.config
    history = fitter.fit(TRAIN_PHASE, config.epochs, config.learning_rate)
    if base is not None and config.fine_tune_epochs > 0:
        base.trainable = True
        # BatchNormalization stays frozen: its statistics came from far more data than ours.
        for layer in base.layers:
            if isinstance(layer, fitter.keras.layers.BatchNormalization):
                layer.trainable = False
        learning_rate = config.learning_rate / FINE_TUNE_LR_DIVISOR
        more = fitter.fit(FINE_TUNE_PHASE, config.fine_tune_epochs, learning_rate)
        for key, values in more.items():
            history.setdefault(key, []).extend(values)
    return history


def train(
    config: TrainConfig,
    output: Path,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    verbose: bool = False,
) -> TrainResult:
    """Train a model and write its run directory.

    Args:
        config: Data and hyper-parameters.
        output: The run directory to create.
        overwrite: Replace an existing run directory (only once the new one is complete).
        progress: Called with an :class:`EpochProgress` after every batch and epoch; None for
            a silent run.
        verbose: Keep TensorFlow's log output.

    Returns:
        The run directory, metrics and trained model.

    Raises:
        EdgennError: Bad data or configuration; nothing is left at ``output``.
        MissingDependencyError: TensorFlow is not installed.
    """
    output = Path(output)
    refuse_existing(output, overwrite)  # fail before loading data and TensorFlow
    _check_config(config)
    # Data first: a bad data set is reported without waiting for (or needing) TensorFlow.
    splits = prepare_data(config)
    tf = import_tensorflow("edgenn train", verbose)
    keras = import_keras("edgenn train", verbose)
    keras.utils.set_random_seed(config.data.seed)
    model, base = build_model(config, splits)
    _, head_activation = models.head_for(splits.task, len(splits.labels))
    loss = models.resolve_loss(config.loss, splits.task, head_activation)
    started = time.perf_counter()
    history = _fit_phases(_fitter(tf, keras, model, config, splits, loss, progress), base)
    train_seconds = time.perf_counter() - started
    raw = model.predict(splits.model_inputs(splits.x_test), batch_size=256, verbose=0)
    metrics = _evaluate(splits, raw, loss)
    metrics.update(_run_summary(config, splits, model, history, loss, train_seconds))
    metrics["versions"] = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }
    metrics["machine"] = f"{platform.machine()} {platform.system()}"
    metrics["config"] = dataclasses.asdict(config)
    _write_run(output, overwrite, model, splits, history, raw, metrics)
    return TrainResult(run_dir=output, metrics=metrics, model=model)


def _run_summary(
    config: TrainConfig,
    splits: data_mod.Splits,
    model,
    history: dict[str, list[float]],
    loss: str,
    train_seconds: float,
) -> dict[str, Any]:
    """The metrics.json entries that describe the run rather than score it."""
    epochs_run = len(history.get("loss", []))
    best_epoch = int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else epochs_run
    return {
        "dataset": config.data.dataset,
        "task": splits.task,
        "model": config.base and f"transfer:{config.base}" or config.model,
        "params": int(model.count_params()),
        "trainable_params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "train_seconds": round(train_seconds, 2),
        "seed": config.data.seed,
        "loss_function": loss,
        "num_classes": len(splits.labels),
        **splits.summary(),
    }


def _write_run(
    output: Path,
    overwrite: bool,
    model,
    splits: data_mod.Splits,
    history: dict[str, list[float]],
    raw: np.ndarray,
    metrics: dict[str, Any],
) -> None:
    """Write the run directory under a temporary name and rename it when complete."""
    with atomic_directory(output, overwrite=overwrite) as tmp:
        model.save(tmp / "model.keras")
        regression_label = [splits.spec.target_name or "value"]
        labels = splits.labels if splits.task == "classification" else regression_label
        artifact.write_companions(tmp, labels, splits.spec)
        data_mod.save_data_spec(splits.data, tmp)
        _write_history(tmp / "history.csv", history)
        _plot_curves(tmp / "curves.png", history, splits.task)
        if splits.task == "classification":
            _plot_confusion(
                tmp / "confusion_matrix.png", metrics["confusion_matrix"], splits.labels
            )
        else:
            _plot_regression(tmp / "predictions.png", splits, raw)
        atomic_write_text(tmp / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")


def _evaluate(splits: data_mod.Splits, raw: np.ndarray, loss: str) -> dict[str, Any]:
    if splits.task == "regression":
        pred = output_to_target(raw[:, 0], splits.spec)
        err = pred - splits.y_test
        return {
            "test_mse": float(np.mean(err**2)),
            "test_mae": float(np.mean(np.abs(err))),
            "test_r2": float(
                1 - np.sum(err**2) / max(np.sum((splits.y_test - splits.y_test.mean()) ** 2), 1e-12)
            ),
        }
    scores = classify.scores(raw)
    pred = classify.predictions(raw)
    n = len(splits.labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (splits.y_test, pred), 1)
    eps = 1e-7
    picked = np.clip(scores[np.arange(len(pred)), splits.y_test], eps, 1.0)
    per_class = {
        label: float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None
        for i, label in enumerate(splits.labels)
    }
    return {
        "test_accuracy": float(np.mean(pred == splits.y_test)),
        "test_loss": float(-np.mean(np.log(picked))),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    keys = list(history)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1, *(f"{float(history[k][i]):.6g}" for k in keys)])
    atomic_write_text(path, buf.getvalue())


def _pyplot():
    return optional.pyplot("Plotting")


def _save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    from edgenn.fileio import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


def _plot_curves(path: Path, history: dict[str, list[float]], task: str) -> None:
    plt = _pyplot()
    metric = "accuracy" if task == "classification" else "mae"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", metric)):
        epochs = np.arange(1, len(history.get(key, [])) + 1)
        ax.plot(epochs, history.get(key, []), marker="o", label="train")
        ax.plot(epochs, history.get(f"val_{key}", []), marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    _save_figure(fig, path)
    plt.close(fig)


def _plot_confusion(path: Path, confusion: Sequence[Sequence[int]], labels: list[str]) -> None:
    plt = _pyplot()
    cm = np.asarray(confusion)
    n = len(labels)
    size = max(5.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"test split: {cm.sum()} examples, accuracy {accuracy:.2%}")
    if n <= 20:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if cm[i, j] > threshold else "black",
                )
    _save_figure(fig, path)
    plt.close(fig)


def _plot_regression(path: Path, splits: data_mod.Splits, raw: np.ndarray) -> None:
    plt = _pyplot()
    pred = output_to_target(raw[:, 0], splits.spec)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(splits.y_test, pred, s=8, alpha=0.6)
    lo, hi = (
        float(min(splits.y_test.min(), pred.min())),
        float(max(splits.y_test.max(), pred.max())),
    )
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
    ax.set_xlabel(f"true {splits.spec.target_name}")
    ax.set_ylabel("predicted")
    ax.set_title("test split")
    _save_figure(fig, path)
    plt.close(fig)
