"""[host] Model builders: MLP, a compact CNN for edge targets, and transfer-learning heads.

Every layer used here converts to full int8 TFLite and runs on TFLite Micro and the Edge TPU:
Conv2D / DepthwiseConv2D with BatchNormalization (folded into the convolution at conversion),
ReLU, MaxPooling2D, GlobalAveragePooling2D, Dense, Dropout (removed at conversion). Shapes are
static apart from the batch axis, which ``edgenn convert`` pins to 1.

TensorFlow is imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgenn.errors import EdgennError, UsageError
from edgenn.host.tfutil import import_keras

#: The lists below are the single source of truth for the CLI choices and the validation.
MODEL_KINDS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")
OPTIMIZERS = ("sgd", "nesterov", "adagrad", "rmsprop", "adam")
LOSSES = (
    "auto",
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "mse",
)
#: Keras applications usable as a transfer-learning base, with the input range they expect
#: (scale, offset applied to uint8 pixels) and the smallest input side they accept.
APPLICATIONS: dict[str, dict[str, Any]] = {
    "mobilenet_v2": {"cls": "MobileNetV2", "scale": 2.0 / 255.0, "offset": -1.0, "min_side": 32},
    # MobileNetV3 carries its own Rescaling layer and expects raw 0-255 pixels.
    "mobilenet_v3_small": {"cls": "MobileNetV3Small", "scale": 1.0, "offset": 0.0, "min_side": 32},
}
DEFAULT_CNN_FILTERS = (32, 64, 64)
CNN_HEADS = ("gap", "flatten")
#: The default CNN (3 blocks, flatten, dense 48): 84,410 parameters on Fashion-MNIST, 92.7% test
#: accuracy in 15 epochs and a 96 KB int8 file (benchmarks/). With global average pooling instead
#: of flatten it reached 91.4%; with a 64-unit dense layer the int8 file passed 100 KB.
DEFAULT_CNN_HEAD = "flatten"
DEFAULT_CNN_DENSE = 48
DEFAULT_MLP_HIDDEN = (128,)
DEFAULT_MODEL = "cnn"
DEFAULT_ACTIVATION = "relu"
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LOSS = "auto"
#: Dropout rate of each model kind when none is given.
DEFAULT_DROPOUT = {"cnn": 0.3, "mlp": 0.0}
#: Dropout before a transfer-learning model's new head when the resolved rate is 0 (``edgenn
#: train`` otherwise uses the rate of --dropout or of the --model kind).
DEFAULT_TRANSFER_DROPOUT = 0.2
#: Keras' default 0.99 needs hundreds of steps before the moving statistics are usable; 0.9
#: settles within a short run and costs nothing on long ones.
BN_MOMENTUM = 0.9


def head_for(task: str, num_classes: int) -> tuple[int, str]:
    """Output units and activation for a task.

    Args:
        task: ``classification`` or ``regression``.
        num_classes: Number of classes (ignored for regression).

    Returns:
        ``(units, activation)``: softmax over classes, one sigmoid unit for two classes, one
        linear unit for regression.
    """
    if task == "regression":
        return 1, "linear"
    if num_classes == 2:
        return 1, "sigmoid"
    return num_classes, "softmax"


def _activation_layer(keras, name: str, layer_name: str | None = None):
    if name not in ACTIVATIONS:
        raise UsageError(f"Unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}.")
    if name == "relu":
        return keras.layers.ReLU(name=layer_name)
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.1, name=layer_name)
    return keras.layers.Activation(name, name=layer_name)


def build_mlp(
    input_shape: Sequence[int],
    num_outputs: int,
    hidden: Sequence[int] = DEFAULT_MLP_HIDDEN,
    activation: str = DEFAULT_ACTIVATION,
    dropout: float = DEFAULT_DROPOUT["mlp"],
    output_activation: str = "softmax",
):
    """A multi-layer perceptron: input -> hidden Dense layers -> output.

    Input shape:
        ``(batch, *input_shape)``; images are flattened first (28x28x1 -> 784).

    Output shape:
        ``(batch, num_outputs)``.

    Args:
        input_shape: Shape of one example, e.g. ``(28, 28, 1)`` or ``(13,)``.
        num_outputs: Output units (classes, 1 for binary or regression).
        hidden: Units of each hidden layer, e.g. ``(128,)`` for the classic 784-128-10.
        activation: Hidden activation: relu, leaky_relu, tanh or sigmoid.
        dropout: Dropout rate after each hidden layer (0 disables it).
        output_activation: softmax, sigmoid or linear.

    Returns:
        An uncompiled ``keras.Model``.

    Raises:
        UsageError: A size or rate is out of range.
    """
    keras = import_keras("Building a model")
    if any(h <= 0 for h in hidden):
        raise UsageError(f"--hidden sizes must be positive integers; received {list(hidden)}.")
    _check_dropout(dropout)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(hidden):
        x = keras.layers.Dense(units, name=f"dense_{i}")(x)
        x = _activation_layer(keras, activation, f"act_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    x = keras.layers.Identity(name="features")(x)
    outputs = keras.layers.Dense(num_outputs, activation=output_activation, name="head")(x)
    return keras.Model(inputs, outputs, name="mlp")


def build_cnn(
    input_shape: Sequence[int],
    num_outputs: int,
    filters: Sequence[int] = DEFAULT_CNN_FILTERS,
    depthwise: bool = False,
    dense: int = DEFAULT_CNN_DENSE,
    dropout: float = DEFAULT_DROPOUT["cnn"],
    activation: str = DEFAULT_ACTIVATION,
    output_activation: str = "softmax",
    head: str = DEFAULT_CNN_HEAD,
):
    """A compact CNN for edge targets.

    One Conv-BN-activation block per entry of ``filters``, each followed by 2x2 max pooling while
    the feature map is larger than 4x4 (with ``head="gap"`` not after the last block), then the
    head: global average pooling (``gap``, fewest parameters, any input size) or flattening the
    last feature map (``flatten``, keeps where features are; on Fashion-MNIST it is worth about a
    point of accuracy), optional dropout and dense layer, and the output layer. With
    ``depthwise``, every block after the first is depthwise-separable (a 3x3 DepthwiseConv2D then
    a 1x1 Conv2D, as in MobileNet), which cuts parameters and MACs several-fold.

    Input shape:
        ``(batch, height, width, channels)``.

    Output shape:
        ``(batch, num_outputs)``.

    Args:
        input_shape: ``(height, width, channels)``.
        num_outputs: Output units.
        filters: Channels of each conv block.
        depthwise: Use depthwise-separable blocks after the first.
        dense: Units of a Dense layer before the output (0: none).
        dropout: Dropout rate before the head.
        activation: Block activation (relu is what int8 kernels fuse best).
        output_activation: softmax, sigmoid or linear.
        head: ``gap`` or ``flatten``.

    Returns:
        An uncompiled ``keras.Model``.

    Raises:
        UsageError: The input is not an image shape or a size is out of range.
    """
    keras = import_keras("Building a model")
    _check_cnn_args(input_shape, filters, dropout, head)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    side = min(input_shape[0], input_shape[1])
    for i, channels in enumerate(filters):
        x = _conv_block(keras, x, i, channels, depthwise and i > 0, activation)
        if side > 4 and (head == "flatten" or i < len(filters) - 1):
            x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
            side //= 2
    x = _cnn_head(keras, x, head, dense, dropout, activation)
    outputs = keras.layers.Dense(num_outputs, activation=output_activation, name="head")(x)
    return keras.Model(inputs, outputs, name="cnn")


def _check_cnn_args(
    input_shape: Sequence[int], filters: Sequence[int], dropout: float, head: str
) -> None:
    """Refuse a CNN configuration before any layer is built."""
    if len(input_shape) != 3:
        raise UsageError(
            f"--model cnn needs image input (height, width, channels); received shape "
            f"{tuple(input_shape)}. Use --model mlp for tabular data."
        )
    if not filters or any(f <= 0 for f in filters):
        raise UsageError(f"--filters must be positive integers; received {list(filters)}.")
    _check_dropout(dropout)
    if head not in CNN_HEADS:
        raise UsageError(f"Unknown CNN head {head!r}; expected one of {', '.join(CNN_HEADS)}.")


def _conv_block(keras, x, i: int, channels: int, separable: bool, activation: str):
    """Block ``i``: a 3x3 convolution (or depthwise 3x3 + pointwise 1x1), BN, activation."""
    layers = keras.layers
    if separable:
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"block{i}_dw")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_dw_bn")(x)
        x = _activation_layer(keras, activation, f"block{i}_dw_act")(x)
        x = layers.Conv2D(channels, 1, use_bias=False, name=f"block{i}_pw")(x)
    else:
        x = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_bn")(x)
    return _activation_layer(keras, activation, f"block{i}_act")(x)


def _cnn_head(keras, x, head: str, dense: int, dropout: float, activation: str):
    """Pool or flatten, then the optional dense layer and dropout, up to the ``features`` layer."""
    layers = keras.layers
    x = (
        layers.GlobalAveragePooling2D(name="gap")(x)
        if head == "gap"
        else layers.Flatten(name="flatten")(x)
    )
    if dense:
        if dropout:
            x = layers.Dropout(dropout, name="dense_dropout")(x)
        x = layers.Dense(dense, name="dense")(x)
        x = _activation_layer(keras, activation, "dense_act")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Identity(name="features")(x)


def _check_dropout(rate: float) -> None:
    if not 0 <= rate < 1:
        raise UsageError(f"--dropout must be in [0, 1); received {rate}.")


def load_keras_model(path: Path):
    """Load a ``.keras`` file in Keras' safe mode (no code from the file is run).

    Args:
        path: The ``.keras`` file, or a run directory holding ``model.keras``.

    Returns:
        The model.

    Raises:
        EdgennError: The file is missing or not a Keras model.
    """
    keras = import_keras("Loading a Keras model")
    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise EdgennError(
            f"No Keras model at {path}.",
            "Pass a run directory made by edgenn train or a .keras file.",
        )
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise EdgennError(
            f"{path} could not be loaded as a Keras model ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})."
        ) from None


def feature_extractor(model):
    """The part of a model before its output layer, for reuse as a transfer-learning base.

    Uses the layer named ``features`` that edgenn's builders add; for other models, the input of
    the last layer.

    Args:
        model: A Keras functional model.

    Returns:
        A ``keras.Model`` from the model's input to its feature vector.
    """
    keras = import_keras("Transfer learning")
    try:
        features = model.get_layer("features").output
    except ValueError:
        features = model.layers[-1].input
    return keras.Model(model.inputs, features, name="base")


def build_application_base(name: str, input_shape: Sequence[int], weights: str | None):
    """A Keras application (MobileNet) without its top, as a transfer-learning base.

    Args:
        name: A key of :data:`APPLICATIONS`.
        input_shape: ``(height, width, 3)``.
        weights: ``"imagenet"`` (downloads; needs internet), a path to a weights file, or None
            for random initialization.

    Returns:
        A ``keras.Model`` producing a pooled feature vector.

    Raises:
        UsageError: Unknown application or unsuitable input shape.
        EdgennError: The weights cannot be loaded.
    """
    keras = import_keras("Transfer learning")
    if name not in APPLICATIONS:
        raise UsageError(
            f"Unknown base {name!r}; expected an edgenn run directory, a .keras file, or one of "
            f"{', '.join(APPLICATIONS)}."
        )
    info = APPLICATIONS[name]
    if len(input_shape) != 3 or input_shape[2] != 3 or min(input_shape[:2]) < info["min_side"]:
        raise UsageError(
            f"--base {name} needs RGB input of at least {info['min_side']}x{info['min_side']}; "
            f"received {tuple(input_shape)}. Pass --input-size 96 --color-mode RGB."
        )
    builder = getattr(keras.applications, info["cls"])
    kwargs = {"include_top": False, "pooling": "avg", "input_shape": tuple(input_shape)}
    file_weights = weights not in (None, "imagenet")
    try:
        base = builder(weights=None if file_weights else weights, **kwargs)
        if file_weights:
            base.load_weights(weights)
    except Exception as exc:  # noqa: BLE001 - download and HDF5 errors come in many types
        raise EdgennError(
            f"Could not load {name} weights {weights!r} ({exc.__class__.__name__}: {exc}).",
            "Pass --weights PATH to a weights file for this input size, or omit --weights.",
        ) from None
    return base


def attach_head(
    base, num_outputs: int, output_activation: str, dropout: float = DEFAULT_TRANSFER_DROPOUT
):
    """Put a new output layer on a frozen base.

    Args:
        base: Feature extractor (frozen by this function).
        num_outputs: Output units.
        output_activation: softmax, sigmoid or linear.
        dropout: Dropout before the new head.

    Returns:
        The new ``keras.Model``.
    """
    keras = import_keras("Transfer learning")
    base.trainable = False
    inputs = keras.Input(shape=base.input_shape[1:], name="input")
    # training=False keeps BatchNormalization in inference mode even when the base is unfrozen for
    # fine-tuning, as Keras' transfer-learning guide recommends.
    x = base(inputs, training=False)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Identity(name="features")(x)
    outputs = keras.layers.Dense(num_outputs, activation=output_activation, name="head")(x)
    return keras.Model(inputs, outputs, name="transfer")


def make_optimizer(name: str, learning_rate: Any):
    """A Keras optimizer by name.

    Args:
        name: sgd, nesterov (SGD with Nesterov momentum 0.9), adagrad, rmsprop or adam.
        learning_rate: A float or a Keras learning-rate schedule.

    Returns:
        The optimizer.

    Raises:
        UsageError: Unknown name.
    """
    keras = import_keras("Training")
    opt = keras.optimizers
    table = {
        "sgd": lambda: opt.SGD(learning_rate),
        "nesterov": lambda: opt.SGD(learning_rate, momentum=0.9, nesterov=True),
        "adagrad": lambda: opt.Adagrad(learning_rate),
        "rmsprop": lambda: opt.RMSprop(learning_rate),
        "adam": lambda: opt.Adam(learning_rate),
    }
    if name not in table:
        raise UsageError(f"Unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}.")
    return table[name]()


def resolve_loss(loss: str, task: str, output_activation: str) -> str:
    """The loss to train with; ``auto`` picks the one that matches the head.

    Args:
        loss: A name from :data:`LOSSES`.
        task: ``classification`` or ``regression``.
        output_activation: The head's activation.

    Returns:
        A Keras loss name.

    Raises:
        UsageError: The loss does not fit the task or head.
    """
    if loss not in LOSSES:
        raise UsageError(f"Unknown loss {loss!r}; expected one of {', '.join(LOSSES)}.")
    if loss == "auto":
        if task == "regression":
            return "mse"
        return (
            "binary_crossentropy"
            if output_activation == "sigmoid"
            else "sparse_categorical_crossentropy"
        )
    if task == "regression" and loss != "mse":
        raise UsageError(f"--loss {loss} does not fit a regression target; use --loss mse.")
    if task == "classification" and loss == "mse":
        raise UsageError("--loss mse is for regression; use a cross-entropy loss for classes.")
    if (loss == "binary_crossentropy") != (output_activation == "sigmoid"):
        raise UsageError(
            f"--loss {loss} does not fit a {output_activation} output; binary_crossentropy is for "
            "two classes, the categorical losses for three or more."
        )
    return loss
