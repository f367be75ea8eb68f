"""[device] The ``gpu`` target: ops the LiteRT GPU delegate takes, and the ones left to the CPU.

TensorFlow's ``Analyzer(gpu_compatibility=True)`` reports "compatible" even for ops the delegate
lacks, so this check follows the delegate's own rules, op by op:
``tflite/tools/versioning/gpu_compatibility.cc`` in LiteRT (``CheckGpuDelegateCompatibility``:
the builtin switch with each op's conditions on runtime inputs, constants, outputs, options and
shapes; ``CheckCustomOpsGpuDelegateCompatibility``: the four custom ops the stock delegate
implements, MediaPipe's ``Convolution2DTransposeBias``, ``MaxPoolingWithArgmax2D``,
``MaxUnpooling2D`` and ``Resampler``, whose parameters it reads from the op's raw custom
options). The tensor types and the rank limit are the delegate's model builder's. Unlike the Edge
TPU, the GPU delegate may take several partitions: an unsupported op falls back to the CPU alone,
at the cost of copies between GPU and CPU memory around it.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import numpy as np

from edgenn import tflite_model
from edgenn.targets import FALLS_BACK, RUNS, OpRow, TargetReport
from edgenn.tflite_model import OpInfo, TensorInfo, TFLiteFile

UNARY = {
    "ABS", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "LOG", "LOGICAL_NOT", "LOGISTIC", "NEG",
    "ROUND", "RSQRT", "SIGN", "SIN", "SQRT", "SQUARE", "TANH", "STABLEHLO_CBRT",
}  # fmt: skip
BINARY = {
    "ATAN2", "DIV", "EQUAL", "FLOOR_DIV", "FLOOR_MOD", "GREATER", "GREATER_EQUAL", "LOGICAL_AND",
    "LOGICAL_OR", "LESS", "LESS_EQUAL", "MAXIMUM", "MINIMUM", "NOT_EQUAL", "POW", "RIGHT_SHIFT",
    "SQUARED_DIFFERENCE", "SUB", "STABLEHLO_REMAINDER", "STABLEHLO_SHIFT_LEFT",
}  # fmt: skip
#: Reductions that need one runtime input and constant int32 axes (MEAN also checks the constant).
REDUCE = {"REDUCE_ALL", "REDUCE_ANY", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "SUM"}
#: Ops whose only condition is one runtime input and one output.
ONE_IN_ONE_OUT = {
    "HARD_SWISH",
    "QUANTIZE",
    "RESHAPE",
    "RESIZE_NEAREST_NEIGHBOR",
    "TILE",
    "TRANSPOSE",
}
#: Ops the delegate takes without conditions.
UNCONDITIONAL = {"CONCATENATION", "LEAKY_RELU", "PACK", "PRELU", "RELU", "RELU6", "RELU_N1_TO_1",
                 "SPLIT", "SPLIT_V"}  # fmt: skip
#: The custom ops the stock delegate implements (``CheckCustomOpsGpuDelegateCompatibility``).
CUSTOM_OPS = frozenset(
    {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"}
)
#: TfLiteFusedActivation values the delegate implements: NONE, RELU, RELU_N1_TO_1, RELU6, TANH
#: and SIGMOID (6, which only a custom op's raw parameters can hold); SIGN_BIT (5) is not.
SUPPORTED_ACTIVATIONS = frozenset({0, 1, 2, 3, 4, 6})
#: Activation dtypes the delegate computes in (8-bit tensors are dequantized on load).
DTYPES = {"float32", "float16", "int8", "uint8", "int32", "bool"}


@dataclasses.dataclass(frozen=True)
class Operand:
    """An op's input or output as the delegate's check sees it (``OpSignatureTensorSpec``).

    Attributes:
        present: False for an absent optional input (index -1).
        dtype: The tensor's dtype name ('' when absent).
        shape: Its shape.
        const: A constant: weights, or weights the delegate folds (see :func:`folded_constants`).
    """

    present: bool
    dtype: str = ""
    shape: tuple[int, ...] = ()
    const: bool = False


@dataclasses.dataclass(frozen=True)
class Signature:
    """What the delegate's check reads of one op (``OpSignature``).

    Attributes:
        op: The operator.
        inputs: Its inputs, absent ones included.
        outputs: Its outputs.
        custom_data: A custom op's raw custom options (its parameters), None when it has none.
    """

    op: OpInfo
    inputs: tuple[Operand, ...]
    outputs: tuple[Operand, ...]
    custom_data: bytes | None = None

    @property
    def runtime_inputs(self) -> int:
        """Inputs that are neither constant nor absent."""
        return sum(1 for t in self.inputs if t.present and not t.const)

    @property
    def const_inputs(self) -> int:
        """Constant inputs."""
        return sum(1 for t in self.inputs if t.const)


def signature(
    op: OpInfo,
    tensors: list[TensorInfo],
    folded: frozenset[int] = frozenset(),
    custom_data: bytes | None = None,
) -> Signature:
    """The op as the delegate's check sees it.

    Args:
        op: The operator.
        tensors: The subgraph's tensors.
        folded: Tensors the delegate treats as constants (see :func:`folded_constants`).
        custom_data: A custom op's custom options.

    Returns:
        The signature.
    """

    def spec(i: int) -> Operand:
        if not 0 <= i < len(tensors):
            return Operand(False)
        t = tensors[i]
        return Operand(True, t.dtype, tuple(t.shape), t.is_constant or i in folded)

    return Signature(
        op, tuple(spec(i) for i in op.inputs), tuple(spec(i) for i in op.outputs), custom_data
    )


# ---- shared conditions (the helpers at the top of gpu_compatibility.cc)


def _io(sig: Signature, runtime_inputs: int, outputs: int) -> str:
    if sig.runtime_inputs != runtime_inputs:
        return (
            f"{sig.op.name} expects {runtime_inputs} runtime input tensor(s), "
            f"but the node has {sig.runtime_inputs}"
        )
    if len(sig.outputs) != outputs:
        return (
            f"{sig.op.name} expects {outputs} output tensor(s), but the node has {len(sig.outputs)}"
        )
    return ""


def _io_consts(sig: Signature, runtime_inputs: int, const_inputs: int, outputs: int) -> str:
    if sig.const_inputs != const_inputs:
        return (
            f"{sig.op.name} expects {const_inputs} constant input tensor(s), "
            f"but the node has {sig.const_inputs}"
        )
    return _io(sig, runtime_inputs, outputs)


def _has_input(sig: Signature, index: int) -> str:
    if index >= len(sig.inputs):
        return f"{sig.op.name} needs input #{index}; the node has {len(sig.inputs)} input(s)"
    return ""


def _conv_io(sig: Signature) -> str:
    if sig.runtime_inputs > 2:
        return f"{sig.op.name} expects 1 or 2 runtime inputs, but the node has {sig.runtime_inputs}"
    if len(sig.outputs) != 1:
        return f"{sig.op.name} expects 1 output, but the node has {len(sig.outputs)}"
    return _has_input(sig, 1) if sig.runtime_inputs == 1 else ""


def _positive(what: str, height: int, width: int) -> str:
    if height <= 0 or width <= 0:
        return f"incorrect {what} values: height {height}, width {width}"
    return ""


def _activation(value: int) -> str:
    if value not in SUPPORTED_ACTIVATIONS:
        return (
            f"fused activation {value} ({'SIGN_BIT' if value == 5 else 'unknown'}) is not supported"
        )
    return ""


def _axes_int32_const(sig: Signature, index: int) -> str:
    problem = _has_input(sig, index)
    if problem:
        return problem
    axes = sig.inputs[index]
    if not axes.const:
        return f"{sig.op.name} is only supported with constant axes"
    if axes.dtype != "int32":
        return f"{sig.op.name} supports int32 axes, but the node has {axes.dtype}"
    return ""


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Numpy broadcasting, right-aligned; an unknown (negative) dimension matches anything."""
    for x, y in zip(reversed(a), reversed(b)):
        if x != y and 1 not in (x, y) and x >= 0 and y >= 0:
            return False
    return True


def _custom_params(sig: Signature, count: int) -> tuple[int, ...] | str:
    """The first ``count`` int32 fields of the C parameter struct a custom op's options hold."""
    data = sig.custom_data
    if not data:
        return f"custom op {sig.op.name} has no custom options (the delegate reads its parameters there)"
    if len(data) < 4 * count:
        return f"custom op {sig.op.name}'s options hold {len(data)} bytes; its parameters need {4 * count}"
    return struct.unpack_from(f"<{count}i", data)


# ---- per-op conditions, in the order of the file's switch


def _broadcast(sig: Signature) -> str:
    a, b = sig.inputs[0].shape, sig.inputs[1].shape
    # Offline compatibility assumes the delegate's enhanced broadcast (numpy rules).
    if len(a) > 1 and len(b) > 1 and len(a) != len(b) and not _broadcastable(a, b):
        return f"{sig.op.name} does not support broadcasting {list(a)} with {list(b)}"
    return ""


def _add(sig: Signature) -> str:
    return _broadcast(sig) if len(sig.inputs) == 2 else "ADD requires two input tensors"


def _mul(sig: Signature) -> str:
    if len(sig.inputs) != 2:
        return "MUL requires two input tensors"
    return _broadcast(sig) or _activation(sig.op.options.get("fusedActivationFunction", 0))


def _batch_matmul(sig: Signature) -> str:
    if len(sig.inputs) != 2 or len(sig.outputs) != 1:
        return f"BATCH_MATMUL expects 2 inputs and 1 output, got {len(sig.inputs)} and {len(sig.outputs)}"
    return ""


def _itemsize(dtype: str) -> int | None:
    if dtype == "bfloat16":
        return 2
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return None


def _bitcast(sig: Signature) -> str:
    problem = _io(sig, 1, 1)
    if problem:
        return problem
    src, dst = sig.inputs[0], sig.outputs[0]
    a, b = _itemsize(src.dtype), _itemsize(dst.dtype)
    if a is None or b is None:
        return f"BITCAST between {src.dtype} and {dst.dtype}: unknown element size"
    if a == b and src.shape != dst.shape:
        return "BITCAST between types of one size must keep the shape"
    if a != b:
        big, small = (src, dst) if a > b else (dst, src)
        if len(big.shape) + 1 != len(small.shape) or big.shape != small.shape[:-1]:
            return "BITCAST: shapes must match in all but the last dimension"
        if small.shape[-1] * min(a, b) != max(a, b):
            return "BITCAST: the last dimension must be the ratio of the element sizes"
    return ""


def _cast(sig: Signature) -> str:
    problem = _io(sig, 1, 1)
    if problem:
        return problem
    src, dst = sig.inputs[0].dtype, sig.outputs[0].dtype
    floats = {"float16", "float32"}
    if (src == "bool" and dst in floats) or (src in floats and dst == "bool"):
        return ""
    if src in ("float32", "int32") and dst in ("float32", "int32"):
        return ""
    return f"CAST from {src} to {dst} is not supported"


def _conv(sig: Signature) -> str:
    o = sig.op.options
    return (
        _conv_io(sig)
        or _positive("stride", o.get("strideH", 0), o.get("strideW", 0))
        or _positive("dilation", o.get("dilationHFactor", 0), o.get("dilationWFactor", 0))
        or _activation(o.get("fusedActivationFunction", 0))
    )


def _cumsum(sig: Signature) -> str:
    if len(sig.inputs) != 2:
        return "CUMSUM expects 2 inputs and 1 output"
    data, axis = sig.inputs
    if (
        data.dtype not in ("float16", "float32")
        or sig.outputs[0].dtype != data.dtype
        or axis.dtype != "int32"
        or not axis.const
    ):
        return "CUMSUM needs float input/output and constant int32 axis"
    return ""


def _depthwise(sig: Signature) -> str:
    problem = _conv(sig) or _has_input(sig, 1)
    if problem:
        return problem
    inp, weights, out = sig.inputs[0].shape, sig.inputs[1].shape, sig.outputs[0].shape
    if len(inp) != 4 or len(weights) != 4 or len(out) != 4:
        return "DEPTHWISE_CONV_2D needs 4-dimensional input, filter and output"
    if inp[0] != out[0]:
        return "DEPTHWISE_CONV_2D input batch != output batch"
    if weights[3] != out[3]:
        return "DEPTHWISE_CONV_2D filter channels != output channels"
    if out[3] != inp[3] * sig.op.options.get("depthMultiplier", 0):
        return "DEPTHWISE_CONV_2D output channels != input channels * depth_multiplier"
    # An absent bias counts as one element, as in the delegate's check.
    if len(sig.inputs) > 2 and int(np.prod(sig.inputs[2].shape)) != out[3]:
        return "DEPTHWISE_CONV_2D bias size != output channels"
    return ""


def _block_size(sig: Signature) -> str:
    problem = _io(sig, 1, 1)
    size = sig.op.options.get("blockSize", 0)
    if problem or size > 1:
        return problem
    return (
        f"{sig.op.name} block_size = 1 is a no-op"
        if size == 1
        else f"{sig.op.name} block_size must be > 1"
    )


def _dequantize(sig: Signature) -> str:
    if len(sig.inputs) != 1 or len(sig.outputs) != 1:
        return "DEQUANTIZE expects 1 input and 1 output"
    return "DEQUANTIZE from int16 is not supported" if sig.inputs[0].dtype == "int16" else ""


def _embedding_lookup(sig: Signature) -> str:
    if len(sig.inputs) != 2 or len(sig.outputs) != 1:
        return "EMBEDDING_LOOKUP expects 2 inputs and 1 output"
    ids, values, out = sig.inputs[0], sig.inputs[1], sig.outputs[0]
    if len(ids.shape) != 1 or len(values.shape) < 2:
        return "EMBEDDING_LOOKUP needs 1-D ids and values of rank 2 or more"
    if len(values.shape) != len(out.shape) or values.shape[1:] != out.shape[1:]:
        return "EMBEDDING_LOOKUP output shape does not match the values"
    if values.dtype not in ("int8", "int4", "float32"):
        return f"EMBEDDING_LOOKUP values must be int8, int4 or float32, not {values.dtype}"
    return ""


def _dynamic_update_slice(sig: Signature) -> str:
    if len(sig.inputs) != 3:
        return "DYNAMIC_UPDATE_SLICE requires 3 inputs"
    operand, update, start = sig.inputs
    if operand.dtype != update.dtype:
        return "DYNAMIC_UPDATE_SLICE array and update must have one data type"
    if len(start.shape) != 1 or start.dtype != "int32":
        return "DYNAMIC_UPDATE_SLICE start indices must be 1-D int32"
    if len(update.shape) != len(operand.shape):
        return "DYNAMIC_UPDATE_SLICE array and update must have the same rank"
    return ""


def _fully_connected(sig: Signature) -> str:
    o = sig.op.options
    if o.get("weightsFormat", 0) != 0:
        return f"FULLY_CONNECTED weights format {o['weightsFormat']} is not supported"
    if sig.runtime_inputs > 2:
        return "FULLY_CONNECTED does not support more than 2 runtime inputs"
    if o.get("keepNumDims") and len(sig.inputs[0].shape) != len(sig.outputs[0].shape):
        return "FULLY_CONNECTED keep_num_dims with input and output of different ranks"
    return ""


def _gather(sig: Signature) -> str:
    if _io_consts(sig, 2, 0, 1) and _io_consts(sig, 1, 1, 1):
        return "GATHER can only handle 1 or 2 operand(s)"
    indices = sig.inputs[1]
    if len(indices.shape) != 1:
        return "GATHER supports only 1-D indices"
    return "" if indices.dtype == "int32" else "GATHER accepts only int32 indices"


def _lstm(sig: Signature) -> str:
    o = sig.op.options
    activation = o.get("fusedActivationFunction", 0)
    if o.get("kernelType", 0) == 0:  # FULL
        if len(sig.inputs) not in (20, 24) or len(sig.outputs) != 1:
            return "LSTM (full kernel) expects 20 or 24 inputs and 1 output"
        return "" if activation in (4, 6) else "LSTM supports only sigmoid or tanh activation"
    problem = _io_consts(sig, 3, 2, 4)
    if problem or activation != 4:
        return problem or "LSTM (basic kernel) supports only TANH activation"
    if o.get("cellClip", 0.0) != 0.0 or o.get("projClip", 0.0) != 0.0:
        return "LSTM (basic kernel) does not support cell_clip or proj_clip"
    return ""


def _pool(sig: Signature) -> str:
    """Builtin pooling, and MaxPoolingWithArgmax2D with its indices as a second output."""
    if sig.op.custom:
        params = _custom_params(sig, 6)
        if isinstance(params, str):
            return params
        _, stride_w, stride_h, filter_w, filter_h, activation = params
        problem = _io(sig, 1, 2)
    else:
        o = sig.op.options
        stride_w, stride_h = o.get("strideW", 0), o.get("strideH", 0)
        filter_w, filter_h = o.get("filterWidth", 0), o.get("filterHeight", 0)
        activation = o.get("fusedActivationFunction", 0)
        problem = _io(sig, 1, 1)
    return (
        problem
        or _positive("kernel", filter_h, filter_w)
        or _positive("stride", stride_h, stride_w)
        or _activation(activation)
    )


def _mean(sig: Signature) -> str:
    return _io_consts(sig, 1, 1, 1) or _axes_int32_const(sig, 1)


def _one_hot(sig: Signature) -> str:
    if len(sig.inputs) != 4:
        return "ONE_HOT expects 4 inputs and 1 output"
    error = "ONE_HOT needs int32 indices, constant scalar float on/off values, axis -1 or last"
    indices = sig.inputs[0]
    rank = len(indices.shape)
    if indices.dtype != "int32" or rank == 0:
        return error
    axis = sig.op.options.get("axis", 0)
    if axis != -1 and axis != indices.shape[-1]:
        return error
    for i, dim in enumerate(indices.shape[:-1]):
        if not (rank > 3 and i == 0) and dim != 1:
            return f"ONE_HOT does not support a non-singleton dimension at {i}"
    for value in sig.inputs[2:4]:
        if value.dtype != "float32" or not value.const or len(value.shape) > 1:
            return error
        if value.shape and value.shape[0] > 1:
            return error
    return ""


def _select_v2(sig: Signature) -> str:
    if len(sig.inputs) != 3 or len(sig.outputs) != 1:
        return f"{sig.op.name} expects 3 inputs and 1 output"
    error = f"{sig.op.name}: the condition must be bool or float; if/else must match the output or be scalars"
    if sig.inputs[0].dtype not in ("bool", "float16", "float32"):
        return error
    out = sig.outputs[0].shape
    for branch, name in ((sig.inputs[1], "if"), (sig.inputs[2], "else")):
        if branch.shape and branch.shape != out and (len(branch.shape) > 1 or branch.shape[0] > 1):
            return error
        if branch.const and len(branch.shape) == 2:
            return f"{sig.op.name}: a 2-D {name} tensor is only supported if constant"
    return ""


def _slice(sig: Signature) -> str:
    if len(sig.inputs) < 3:
        return f"SLICE requires 3 inputs, but the node has {len(sig.inputs)}"
    rank = len(sig.inputs[0].shape)
    return (
        "" if rank in (3, 4) else f"SLICE supports 3- or 4-dimensional tensors only (rank {rank})"
    )


def _softmax(sig: Signature) -> str:
    return "" if sig.op.options.get("beta", 0.0) == 1 else "SOFTMAX with beta != 1 is not supported"


def _strided_slice(sig: Signature) -> str:
    o = sig.op.options
    for mask in ("ellipsisMask", "newAxisMask", "shrinkAxisMask"):
        if o.get(mask):
            return f"STRIDED_SLICE does not support {mask}"
    if len(sig.inputs) < 4:
        return "STRIDED_SLICE requires 4 inputs"
    rank = len(sig.inputs[0].shape)
    return (
        ""
        if rank in (3, 4)
        else f"STRIDED_SLICE supports 3- or 4-dimensional tensors only (rank {rank})"
    )


def _transpose_conv(sig: Signature) -> str:
    o = sig.op.options
    return _conv_io(sig) or _positive("stride", o.get("strideH", 0), o.get("strideW", 0))


def _resize_bilinear(sig: Signature) -> str:
    o = sig.op.options
    problem = _io(sig, 1, 1)
    if not problem and o.get("alignCorners") and o.get("halfPixelCenters"):
        return "RESIZE_BILINEAR: if half_pixel_centers is set, align_corners must not be"
    return problem


def _reduce(sig: Signature) -> str:
    return _io(sig, 1, 1) or _axes_int32_const(sig, 1)


def _pad(sig: Signature) -> str:
    if sig.op.name == "MIRROR_PAD" and sig.op.options.get("mode", 0) != 0:
        return "MIRROR_PAD supports REFLECT mode only"
    problem = _io(sig, 1, 1) or _has_input(sig, 1)
    if problem:
        return problem
    pads = sig.inputs[1].shape
    if len(pads) != 2:
        return f"{sig.op.name} paddings must be 2-dimensional, got {len(pads)} dimension(s)"
    if pads[0] not in (3, 4) or pads[1] != 2:
        return f"{sig.op.name} paddings must be 4x2 or 3x2, got {pads[0]}x{pads[1]}"
    return ""


def _reverse(sig: Signature) -> str:
    return _io_consts(sig, 1, 1, 1) or _axes_int32_const(sig, 1)


def _unary(sig: Signature) -> str:
    if sig.op.name == "STABLEHLO_CBRT":
        src, dst = sig.inputs[0].dtype, sig.outputs[0].dtype
        if src not in ("float16", "float32", "bfloat16") or src != dst:
            return "STABLEHLO_CBRT needs float input and output of one type"
    return _io_consts(sig, 1, 0, 1)


def _binary(sig: Signature) -> str:
    if _io_consts(sig, 2, 0, 1) and _io_consts(sig, 1, 1, 1):
        return f"{sig.op.name} can only handle 1 or 2 operand(s)"
    if sig.op.name in ("DIV", "SUB"):
        return _activation(sig.op.options.get("fusedActivationFunction", 0))
    return ""


def _broadcast_in_dim(sig: Signature) -> str:
    if _io_consts(sig, 1, 1, 1):
        return "STABLEHLO_BROADCAST_IN_DIM needs one runtime input, one constant input, one output"
    indices = sig.inputs[1]
    if len(indices.shape) != 1 or indices.dtype != "int32":
        return "STABLEHLO_BROADCAST_IN_DIM needs 1-D int32 indices"
    if len(sig.inputs[0].shape) != indices.shape[0]:
        return "STABLEHLO_BROADCAST_IN_DIM needs size(indices) = rank(operand)"
    return ""


def _clamp(sig: Signature) -> str:
    if len(sig.inputs) != 3:
        return "STABLEHLO_CLAMP expects 3 inputs"
    low, x, high = sig.inputs
    if low.dtype != x.dtype or x.dtype != high.dtype:
        return "STABLEHLO_CLAMP tensors must all be of one type"
    scalar = int(np.prod(low.shape)) == 1
    if (low.shape != x.shape and not scalar) or (high.shape != x.shape and not scalar):
        return "STABLEHLO_CLAMP bounds must have the input's shape, or be scalars"
    return _io_consts(sig, 3, 0, 1)


def _custom(sig: Signature) -> str:
    """``CheckCustomOpsGpuDelegateCompatibility``: parameters come from the raw custom options."""
    name = sig.op.name
    if name == "Convolution2DTransposeBias":
        # TfLiteTransposeConvParams: padding, stride_width, stride_height.
        params = _has_input(sig, 1) or _custom_params(sig, 3)
        return params if isinstance(params, str) else _positive("stride", params[2], params[1])
    if name == "MaxPoolingWithArgmax2D":
        return _pool(sig)
    if name == "MaxUnpooling2D":
        # TfLitePoolParams: padding, stride_width, stride_height, filter_width, filter_height.
        params = _io(sig, 2, 1) or _custom_params(sig, 5)
        if isinstance(params, str):
            return params
        _, stride_w, stride_h, filter_w, filter_h = params
        return _positive("kernel", filter_h, filter_w) or _positive("stride", stride_h, stride_w)
    if name == "Resampler":
        return _io(sig, 2, 1)
    return f"custom op {name} is not supported by the GPU delegate"


Rule = Callable[[Signature], str]
#: The builtin ops of the delegate's switch and their conditions.
RULES: dict[str, Rule] = {
    "ADD": _add,
    "ADD_N": lambda s: "" if len(s.inputs) == 2 else "ADD_N only supports 2 inputs",
    "AVERAGE_POOL_2D": _pool,
    "BATCH_MATMUL": _batch_matmul,
    "BITCAST": _bitcast,
    "CAST": _cast,
    "CONV_2D": _conv,
    "CUMSUM": _cumsum,
    "DENSIFY": lambda s: _io(s, 0, 1),
    "DEPTHWISE_CONV_2D": _depthwise,
    "DEPTH_TO_SPACE": _block_size,
    "DEQUANTIZE": _dequantize,
    "EMBEDDING_LOOKUP": _embedding_lookup,
    "DYNAMIC_UPDATE_SLICE": _dynamic_update_slice,
    "FULLY_CONNECTED": _fully_connected,
    "GATHER": _gather,
    "LSTM": _lstm,
    "MAX_POOL_2D": _pool,
    "MEAN": _mean,
    "MUL": _mul,
    "ONE_HOT": _one_hot,
    "SELECT": _select_v2,
    "SELECT_V2": _select_v2,
    "SLICE": _slice,
    "SOFTMAX": _softmax,
    "SPACE_TO_DEPTH": _block_size,
    "STRIDED_SLICE": _strided_slice,
    "TOPK_V2": lambda s: _io(s, 1, 2),
    "TRANSPOSE_CONV": _transpose_conv,
    "RESIZE_BILINEAR": _resize_bilinear,
    "PAD": _pad,
    "PADV2": _pad,
    "MIRROR_PAD": _pad,
    "REVERSE_V2": _reverse,
    "STABLEHLO_BROADCAST_IN_DIM": _broadcast_in_dim,
    "STABLEHLO_CLAMP": _clamp,
    **{name: _reduce for name in REDUCE},
    **{name: (lambda s: _io(s, 1, 1)) for name in ONE_IN_ONE_OUT},
    **{name: (lambda s: "") for name in UNCONDITIONAL},
    **{name: _unary for name in UNARY},
    **{name: _binary for name in BINARY},
}
#: Builtin ops the delegate implements (custom ones: :data:`CUSTOM_OPS`).
SUPPORTED_OPS = frozenset(RULES)


def op_problem(
    op: OpInfo,
    tensors: list[TensorInfo],
    folded: frozenset[int] = frozenset(),
    custom_data: bytes | None = None,
) -> str:
    """Why the GPU delegate would leave this op to the CPU ('' when it takes it).

    Args:
        op: The operator.
        tensors: The subgraph's tensors.
        folded: Tensors the delegate treats as constants although the graph computes them
            (fp16 weights behind DEQUANTIZE, see :func:`folded_constants`).
        custom_data: A custom op's custom options (see :func:`custom_options`).

    Returns:
        The reason.
    """
    rule = _custom if op.custom else RULES.get(op.name)
    if rule is None:
        return f"{op.name} is not implemented by the GPU delegate"
    for i in op.inputs + op.outputs:
        if 0 <= i < len(tensors) and not tensors[i].is_constant:
            if tensors[i].dtype not in DTYPES:
                return f"tensor {tensors[i].name!r} is {tensors[i].dtype}"
            if len(tensors[i].shape) > 4:
                return f"tensor {tensors[i].name!r} has rank {len(tensors[i].shape)}; the delegate handles up to 4"
    return rule(signature(op, tensors, folded, custom_data))


def folded_constants(model: TFLiteFile) -> frozenset[int]:
    """Outputs of DEQUANTIZE ops that read a constant (fp16 or int8 weights).

    The delegate folds these nodes when it builds its graph (fp16 models store weights as float16
    constants behind DEQUANTIZE), so their consumers see constant weights, not runtime inputs.
    """
    return frozenset(
        op.outputs[0]
        for op in model.ops
        if op.subgraph == 0
        and op.name == "DEQUANTIZE"
        and op.inputs
        and model.tensors[op.inputs[0]].is_constant
    )


def custom_options(model: TFLiteFile) -> dict[tuple[int, int], bytes]:
    """The raw custom options of every custom op that has some.

    Args:
        model: The parsed (and checked) model.

    Returns:
        ``{(subgraph, op index): bytes}``.
    """
    wanted = sorted((op.subgraph, op.index) for op in model.ops if op.custom)
    if not wanted:
        return {}
    root = tflite_model._schema().Model.GetRootAs(model.data, 0)
    found = {}
    for subgraph, index in wanted:
        op = root.Subgraphs(subgraph).Operators(index)
        if op.CustomOptionsLength():
            found[(subgraph, index)] = op.CustomOptionsAsNumpy().tobytes()
            continue
        # Models over 2 GB keep large custom options after the flatbuffer.
        offset, size = op.LargeCustomOptionsOffset(), op.LargeCustomOptionsSize()
        if size and offset + size <= len(model.data):
            found[(subgraph, index)] = model.data[offset : offset + size]
    return found


def check_gpu(model: TFLiteFile) -> TargetReport:
    """Per-op table of what the GPU delegate takes.

    Args:
        model: The parsed model.

    Returns:
        The report; ``ok`` when every op runs on the GPU.
    """
    rows = []
    folded = folded_constants(model)
    options = custom_options(model)
    for op in (o for o in model.ops if o.subgraph == 0):
        problem = op_problem(op, model.tensors, folded, options.get((0, op.index)))
        rows.append(OpRow(op.index, op.name, op.version, FALLS_BACK if problem else RUNS, problem))
    on_gpu = sum(r.status == RUNS for r in rows)
    notes = []
    if "int8" in model.dtypes or "uint8" in model.dtypes:
        notes.append(
            "8-bit quantized: the GPU delegate dequantizes weights and computes in float16/32; "
            "--quantize fp16 is the format phone GPUs prefer"
        )
    partitions = _partitions(rows)
    if on_gpu == len(rows):
        verdict = f"OK: all {len(rows)} ops run on the GPU delegate (one partition)."
    else:
        names = sorted({r.op for r in rows if r.status != RUNS})
        verdict = (
            f"PARTIAL: {on_gpu} of {len(rows)} ops on the GPU in {partitions} partition(s); "
            f"{', '.join(names)} fall back to the CPU."
        )
    return TargetReport(
        "gpu", on_gpu == len(rows), verdict, rows, notes, {"gpu_partitions": partitions}
    )


def _partitions(rows: list[OpRow]) -> int:
    count, inside = 0, False
    for r in rows:
        if r.status == RUNS and not inside:
            count += 1
        inside = r.status == RUNS
    return count
