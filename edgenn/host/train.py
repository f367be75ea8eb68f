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

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import platform
import tempfile
import time
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import artifact, classify, optional
from edgenn import datasets as data_mod
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_directory, atomic_write_text, read_regular, refuse_existing
from edgenn.host import models
from edgenn.host.tfutil import import_keras, import_tensorflow
from edgenn.preprocess import COLOR_MODES, PreprocessSpec, output_to_target

LR_SCHEDULES = ("cosine", "plateau", "constant")
#: How a run spreads its training (``--distribute``): one device; tf.distribute's
#: MirroredStrategy over the local GPUs (or logical CPU devices, see :data:`CPU_DEVICES_ENV`);
#: MultiWorkerMirroredStrategy over the processes or machines that ``TF_CONFIG`` describes.
DISTRIBUTE_STRATEGIES = ("none", "mirrored", "multi-worker")
#: Without a GPU, ``--distribute mirrored`` mirrors over this many logical CPU devices (the
#: physical CPU split in N); TensorFlow fixes its devices when it starts, hence a variable read
#: before that rather than an option of one run.
CPU_DEVICES_ENV = "EDGENN_CPU_DEVICES"
#: The cluster description that MultiWorkerMirroredStrategy reads (tf.distribute's own name).
TF_CONFIG_ENV = "TF_CONFIG"
METRICS_FILE = "metrics.json"
#: The metrics.json entry that holds the run's options in the ``--config`` format.
OPTIONS_KEY = "options"
#: A ``--config`` file is a few hundred bytes; refuse anything far larger before parsing it.
CONFIG_MAX_BYTES = 1024 * 1024
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
        distribute: One of :data:`DISTRIBUTE_STRATEGIES`; ``batch_size`` is the global batch,
            split across the replicas.
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
    distribute: str = DISTRIBUTE_STRATEGIES[0]


#: The options that take a name from a list, and the library list each one is checked against.
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "task": data_mod.TASKS,
    "color_mode": COLOR_MODES,
    "model": models.MODEL_KINDS,
    "head": models.CNN_HEADS,
    "activation": models.ACTIVATIONS,
    "loss": models.LOSSES,
    "optimizer": models.OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
    "distribute": DISTRIBUTE_STRATEGIES,
}


def config_options(config: TrainConfig) -> dict[str, Any]:
    """A run's options as one flat JSON-able dict, keyed as ``edgenn train``'s parameters.

    This is the ``edgenn train --config`` format (``metrics.json`` keeps it under
    :data:`OPTIONS_KEY`): the :class:`edgenn.datasets.DataSpec` fields, then the
    :class:`TrainConfig` ones, e.g. ``{"dataset": "fashion-mnist", ..., "filters": [32, 64]}``.

    Args:
        config: The run's configuration.

    Returns:
        A new dict; :func:`config_from_options` turns it back into an equal configuration.
    """
    doc = dataclasses.asdict(config)
    data = doc.pop("data")

    def plain(value: Any) -> Any:
        # Tuples (a builder default passed through) and paths become what JSON writes back.
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return {name: plain(value) for name, value in {**data, **doc}.items()}


def _option_types() -> dict[str, Any]:
    """Each option's type, read from the dataclass annotations (DataSpec's, then TrainConfig's)."""
    hints = typing.get_type_hints(data_mod.DataSpec)
    hints.update(typing.get_type_hints(TrainConfig))
    del hints["data"]
    return hints


def _type_name(kind: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if typing.get_origin(kind) is list:
        return "a list of integers"
    return names.get(kind, str(kind))


def _check_option(name: str, value: Any, hint: Any) -> Any:
    """The option's value if it has the field's type (an int is accepted for a float)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    nullable = typing.get_origin(hint) is not list and type(None) in typing.get_args(hint)
    kind = args[0] if nullable else hint
    if value is None and nullable:
        return None

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if kind is float and (is_int(value) or isinstance(value, float)):
        number = float(value) if abs(value) < 1e300 else math.inf  # no OverflowError on 10**400
        ok = math.isfinite(number)
        value = number if ok else value
    elif typing.get_origin(kind) is list:
        ok = isinstance(value, list) and all(is_int(v) for v in value)
    else:
        ok = is_int(value) if kind is int else isinstance(value, kind)
    if not ok:
        expected = _type_name(kind) + (" or null" if nullable else "")
        shown = json.dumps(value, default=repr)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise EdgennError(f"Train option {name!r} received {shown}; expected {expected}.")
    choices = OPTION_CHOICES.get(name)
    if choices and value not in choices:
        raise EdgennError(
            f"Train option {name!r} received {value!r}; expected one of {', '.join(choices)}."
        )
    return value


def config_from_options(options: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """The inverse of :func:`config_options`: options (all or some) over a base configuration.

    Args:
        options: Option names (``edgenn train``'s parameter names, e.g. ``learning_rate``) and
            JSON values.
        base: The configuration the options change (default: ``edgenn train``'s defaults).

    Returns:
        A new configuration; ``base`` is not modified.

    Raises:
        EdgennError: Not a mapping, an unknown option (the message lists the valid ones), a value
            of the wrong type or outside its list, or a size no run could use.
    """
    if not isinstance(options, Mapping):
        raise EdgennError(
            f"Received train options as {type(options).__name__}; expected a JSON object such "
            'as {"model": "cnn", "epochs": 15}.'
        )
    hints = _option_types()
    unknown = sorted(str(name) for name in options if name not in hints)
    if unknown:
        raise EdgennError(
            f"Unknown train option(s) {', '.join(map(repr, unknown))}; "
            f"expected some of: {', '.join(hints)}."
        )
    values = {name: _check_option(name, value, hints[name]) for name, value in options.items()}
    base = base or TrainConfig()
    data_names = {f.name for f in dataclasses.fields(data_mod.DataSpec)}
    config = dataclasses.replace(
        base,
        data=dataclasses.replace(base.data, **{k: v for k, v in values.items() if k in data_names}),
        **{k: v for k, v in values.items() if k not in data_names},
    )
    _check_config(config)
    return config


def read_config(path: Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read an ``edgenn train --config`` file: a JSON object of options, or a run's metrics.json.

    Args:
        path: The file.
        base: The configuration its options change (default: ``edgenn train``'s defaults).

    Returns:
        The configuration.

    Raises:
        EdgennError: Unreadable, not JSON, not an object, or a bad option; the message names the
            file.
    """
    path = Path(path)
    what = "a JSON object of edgenn train options"
    raw = read_regular(path, what, CONFIG_MAX_BYTES)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EdgennError(f"{path} is not valid JSON ({exc}); expected {what}.") from None
    if isinstance(doc, dict) and isinstance(doc.get(OPTIONS_KEY), dict):
        doc = doc[OPTIONS_KEY]  # a finished run's metrics.json: replay its options
    if not isinstance(doc, dict):
        raise EdgennError(
            f"{path} holds a JSON {type(doc).__name__}; expected {what}, "
            'such as {"model": "cnn", "epochs": 15}.'
        )
    try:
        return config_from_options(doc, base)
    except EdgennError as exc:
        raise EdgennError(f"{path}: {exc.message}", exc.hint) from None


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This process's place in a multi-worker cluster, as ``TF_CONFIG`` describes it.

    Attributes:
        task_type: ``chief`` or ``worker``.
        index: The task's index among its type.
        workers: Processes in the cluster (chief included).
        is_chief: The task that writes the run: the chief, else worker 0 (tf.distribute's rule).
    """

    task_type: str
    index: int
    workers: int
    is_chief: bool


#: The task types edgenn's multi-worker training runs as (no parameter servers, no evaluator).
CLUSTER_ROLES = ("chief", "worker")
#: What a TF_CONFIG looks like, for the messages about a missing or bad one.
TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def _valid_cluster(cluster: Any) -> bool:
    """A ``cluster`` of ``chief`` (at most one) and ``worker`` lists of ``host:port`` strings."""
    if not isinstance(cluster, dict) or not cluster or not set(cluster) <= set(CLUSTER_ROLES):
        return False
    if len(cluster.get("chief", [])) > 1:
        return False
    return all(
        isinstance(addresses, list)
        and addresses
        and all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)
        for addresses in cluster.values()
    )


def cluster_task(tf_config: str | None) -> ClusterTask:
    """Check a ``TF_CONFIG`` value for MultiWorkerMirroredStrategy and find this process in it.

    Args:
        tf_config: The variable's value (None: not set).

    Returns:
        This process's task.

    Raises:
        EdgennError: Not set, not JSON, or not a cluster of ``chief``/``worker`` addresses with
            this task in it; the message says which and the hint shows a valid value.
    """
    hint = f"Set {TF_CONFIG_ENV} in each process, e.g. {TF_CONFIG_ENV}='{TF_CONFIG_EXAMPLE}'."
    if not tf_config:
        raise EdgennError(
            f"--distribute multi-worker needs {TF_CONFIG_ENV} (the cluster and this "
            "process's task); it is not set.",
            hint,
        )
    try:
        doc = json.loads(tf_config)
    except ValueError as exc:
        raise EdgennError(f"{TF_CONFIG_ENV} is not valid JSON ({exc}).", hint) from None
    cluster = doc.get("cluster") if isinstance(doc, dict) else None
    if not _valid_cluster(cluster):
        raise EdgennError(
            f"{TF_CONFIG_ENV} has cluster {json.dumps(cluster)}; expected an object with a "
            '"worker" list (and at most one "chief") of "host:port" addresses.',
            hint,
        )
    task = doc.get("task")
    kind = task.get("type") if isinstance(task, dict) else None
    index = task.get("index", 0) if isinstance(task, dict) else None
    if kind not in cluster or type(index) is not int or not 0 <= index < len(cluster[kind]):
        raise EdgennError(
            f"{TF_CONFIG_ENV} has task {json.dumps(task)}; expected "
            f'{{"type": one of {", ".join(map(json.dumps, cluster))}, "index": N}} with N '
            "indexing that list from 0.",
            hint,
        )
    chief = kind == "chief" or ("chief" not in cluster and index == 0)
    return ClusterTask(kind, index, sum(map(len, cluster.values())), chief)


def cpu_devices() -> int | None:
    """The logical CPU device count :data:`CPU_DEVICES_ENV` asks for (None: not set).

    Raises:
        EdgennError: The value is not a positive integer.
    """
    value = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise EdgennError(
            f"{CPU_DEVICES_ENV}={value!r}; expected a positive number of logical CPU devices "
            f"such as {CPU_DEVICES_ENV}=2."
        )
    return int(value)


def check_distribution(distribute: str) -> ClusterTask | None:
    """Check the environment ``--distribute`` needs, before data and TensorFlow load.

    Args:
        distribute: One of :data:`DISTRIBUTE_STRATEGIES`.

    Returns:
        This process's task for ``multi-worker``; None otherwise.

    Raises:
        EdgennError: A bad :data:`CPU_DEVICES_ENV`, or a missing or bad ``TF_CONFIG``.
    """
    if distribute == "mirrored":
        cpu_devices()
    if distribute == "multi-worker":
        return cluster_task(os.environ.get(TF_CONFIG_ENV))
    return None


def _split_cpu(tf, count: int) -> None:
    """Split the CPU into ``count`` logical devices (only possible before TensorFlow starts)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        raise EdgennError(
            f"{CPU_DEVICES_ENV}={count} came after TensorFlow started its devices in this "
            f"process (with {len(current or [None])} CPU device(s)).",
            f"Set {CPU_DEVICES_ENV} before the process starts, e.g. in the shell.",
        ) from None


def _fit_multi_worker(tf, keras, model, strategy, workers: int) -> None:
    """Adapt a Keras 3 model's fit() to MultiWorkerMirroredStrategy.

    Keras 3 (3.0 to 3.15 at least) does not run fit() under MultiWorkerMirroredStrategy
    (keras-team/keras#20585): before fitting, it averages the first batch across the workers only
    to learn its shapes, and after every step it averages each scalar figure "along axis 0";
    both fail. The first batch's shapes are this worker's part of it; each figure is reported as
    a one-element vector, so the average across the workers is what Keras meant. The rest of
    fit() (gradients all-reduced by the strategy, callbacks) is Keras' own.
    """

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(batches)
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def vectors(step):
        def run(data):
            return {k: tf.reshape(v, [1]) for k, v in step(data).items()}

        return run

    model._maybe_symbolic_build = build
    if workers > 1:  # a cluster of one process reduces nothing across workers
        model.train_step = vectors(model.train_step)
        model.test_step = vectors(model.test_step)


def _predict_test(keras, model, splits: data_mod.Splits, distribute: str) -> np.ndarray:
    """The model's raw outputs on the whole test split, in order, on every worker."""
    if distribute == "multi-worker":
        # Every worker holds the same weights. A plain copy predicts all of the test split here,
        # rather than a shard per worker gathered back (uneven shards, order across workers).
        plain = keras.models.clone_model(model)
        plain.set_weights(model.get_weights())
        model = plain
    return model.predict(splits.model_inputs(splits.x_test), batch_size=256, verbose=0)


#: The process's MirroredStrategy. A second one in the same process (edgenn tune's next trial)
#: restarts the collective-op instance keys and its all-reduce meets the first one's
#: ("Shape mismatch in the collective instance"), so the first is kept and reused.
_STRATEGIES: dict[str, Any] = {}


def start_devices(tf, distribute: str) -> None:
    """Set up the devices ``distribute`` mirrors over, before TensorFlow first uses them.

    With ``mirrored`` and no GPU, the CPU is split into :data:`CPU_DEVICES_ENV` logical devices;
    a caller that runs TensorFlow before :func:`train` (``edgenn tune``) calls this first.
    """
    count = cpu_devices() if distribute == "mirrored" else None
    # GPUs are what MirroredStrategy mirrors over when there are any; the CPU split is for
    # machines without one.
    if count and not tf.config.list_physical_devices("GPU"):
        _split_cpu(tf, count)


def _make_strategy(tf, distribute: str):
    """The tf.distribute strategy for ``distribute`` (None for ``none``)."""
    if distribute == "mirrored":
        if "mirrored" not in _STRATEGIES:
            start_devices(tf, distribute)
            _STRATEGIES["mirrored"] = tf.distribute.MirroredStrategy()
        return _STRATEGIES["mirrored"]
    if distribute == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: The finished run directory.
        metrics: The metrics.json document.
        model: The trained Keras model (best weights).
        written: False for a multi-worker run's non-chief worker: the chief writes ``run_dir``.
    """

    run_dir: Path
    metrics: dict[str, Any]
    model: Any = dataclasses.field(repr=False, default=None)
    written: bool = True


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
    options = config_options(config)
    for name, choices in OPTION_CHOICES.items():
        value = options[name]
        if value is not None and value not in choices:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"Unknown {flag} {value!r}; expected one of {', '.join(choices)}.")


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
    task = check_distribution(config.distribute)
    # Data first: a bad data set is reported without waiting for (or needing) TensorFlow.
    splits = prepare_data(config)
    tf = import_tensorflow("edgenn train", verbose)
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs its first op.
    strategy = _make_strategy(tf, config.distribute)
    keras = import_keras("edgenn train", verbose)
    keras.utils.set_random_seed(config.data.seed)
    _, head_activation = models.head_for(splits.task, len(splits.labels))
    loss = models.resolve_loss(config.loss, splits.task, head_activation)
    started = time.perf_counter()
    # Variables (model, optimizer, metrics) are created inside the scope, so they are mirrored.
    with strategy.scope() if strategy else contextlib.nullcontext():
        model, base = build_model(config, splits)
        if task is not None:
            _fit_multi_worker(tf, keras, model, strategy, task.workers)
        history = _fit_phases(_fitter(tf, keras, model, config, splits, loss, progress), base)
    train_seconds = time.perf_counter() - started
    raw = _predict_test(keras, model, splits, config.distribute)
    metrics = _evaluate(splits, raw, loss)
    metrics.update(_run_summary(config, splits, model, history, loss, train_seconds))
    metrics.update(_provenance(tf, keras, config, strategy))
    chief = task is None or task.is_chief
    if chief:
        _write_run(output, overwrite, model, splits, history, raw, metrics)
    else:
        # tf.distribute's pattern for the other workers: save like the chief, but to a temporary
        # folder that is removed, so every worker takes part in saving and only the chief's stays.
        with tempfile.TemporaryDirectory(prefix="edgenn-worker-") as scratch:
            _write_run(Path(scratch) / output.name, False, model, splits, history, raw, metrics)
    return TrainResult(run_dir=output, metrics=metrics, model=model, written=chief)


def _provenance(tf, keras, config: TrainConfig, strategy) -> dict[str, Any]:
    """The metrics.json entries that say how the run was made and how to replay it."""
    return {
        "replicas": strategy.num_replicas_in_sync if strategy else 1,
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
        "machine": f"{platform.machine()} {platform.system()}",
        "config": dataclasses.asdict(config),
        OPTIONS_KEY: config_options(config),
    }


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
