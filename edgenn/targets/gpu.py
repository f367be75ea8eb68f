"""[device] The ``gpu`` target: ops the LiteRT GPU delegate takes, and the ones left to the CPU.

TensorFlow's ``Analyzer(gpu_compatibility=True)`` reports "compatible" even for ops the delegate
lacks, so this check is written from the delegate's own compatibility rules
(``tflite/tools/versioning/gpu_compatibility.cc`` in LiteRT: the op switch and its per-op
conditions). Unlike the Edge TPU, the GPU delegate may take several partitions: an unsupported op
falls back to the CPU alone, at the cost of copies between GPU and CPU memory around it.
"""

from __future__ import annotations

from edgenn.targets import FALLS_BACK, RUNS, OpRow, TargetReport
from edgenn.tflite_model import OpInfo, TensorInfo, TFLiteFile

UNARY = {
    "ABS", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "LOG", "LOGICAL_NOT", "LOGISTIC", "NEG",
    "ROUND", "RSQRT", "SIGN", "SIN", "SQRT", "SQUARE", "TANH",
}  # fmt: skip
BINARY = {
    "ATAN2", "DIV", "EQUAL", "FLOOR_DIV", "FLOOR_MOD", "GREATER", "GREATER_EQUAL", "LOGICAL_AND",
    "LOGICAL_OR", "LESS", "LESS_EQUAL", "MAXIMUM", "MINIMUM", "NOT_EQUAL", "POW", "RIGHT_SHIFT",
    "SQUARED_DIFFERENCE", "SUB",
}  # fmt: skip
REDUCE = {"MEAN", "REDUCE_ALL", "REDUCE_ANY", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "SUM"}
PLAIN = {
    "ADD_N", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CAST", "CONCATENATION", "CONV_2D", "CUMSUM",
    "DENSIFY", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE", "DYNAMIC_UPDATE_SLICE",
    "EMBEDDING_LOOKUP", "FULLY_CONNECTED", "GATHER", "HARD_SWISH", "LSTM", "MAX_POOL_2D", "MUL",
    "ONE_HOT", "PACK", "PAD", "PADV2", "MIRROR_PAD", "PRELU", "QUANTIZE", "RELU", "RELU6",
    "RELU_N1_TO_1", "LEAKY_RELU", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
    "REVERSE_V2", "SELECT", "SELECT_V2", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V",
    "STRIDED_SLICE", "TILE", "TOPK_V2", "TRANSPOSE", "TRANSPOSE_CONV", "ADD",
}  # fmt: skip
SUPPORTED_OPS = frozenset(UNARY | BINARY | REDUCE | PLAIN)
#: Fused activations the delegate implements (TFLite ActivationFunctionType values):
#: NONE, RELU, RELU_N1_TO_1, RELU6, TANH; SIGN_BIT (5) is not.
SUPPORTED_ACTIVATIONS = {0, 1, 2, 3, 4}
#: Activation dtypes the delegate computes in (8-bit tensors are dequantized on load).
DTYPES = {"float32", "float16", "int8", "uint8", "int32", "bool"}


def _rank_problem(op: OpInfo, tensors: list[TensorInfo]) -> str:
    for i in op.inputs + op.outputs:
        if 0 <= i < len(tensors) and len(tensors[i].shape) > 4:
            return f"tensor {tensors[i].name!r} has rank {len(tensors[i].shape)}; the delegate handles up to 4"
    return ""


def op_problem(op: OpInfo, tensors: list[TensorInfo], folded: frozenset[int] = frozenset()) -> str:
    """Why the GPU delegate would leave this op to the CPU ('' when it takes it).

    Args:
        op: The operator.
        tensors: The subgraph's tensors.
        folded: Tensors the delegate treats as constants although the graph computes them
            (fp16 weights behind DEQUANTIZE, see :func:`folded_constants`).

    Returns:
        The reason.
    """
    problem = _operand_problem(op, tensors)
    if problem:
        return problem
    runtime_inputs = [
        i for i in op.inputs if i >= 0 and not tensors[i].is_constant and i not in folded
    ]
    return _layer_problem(op, tensors, runtime_inputs) or _shape_problem(
        op, tensors, runtime_inputs
    )


def _operand_problem(op: OpInfo, tensors: list[TensorInfo]) -> str:
    """What rules an op out whatever it is: unknown op, tensor dtype or rank, fused activation."""
    if op.custom:
        return f"custom op {op.name} is not implemented by the GPU delegate"
    if op.name not in SUPPORTED_OPS:
        return f"{op.name} is not implemented by the GPU delegate"
    for i in op.inputs + op.outputs:
        if 0 <= i < len(tensors) and not tensors[i].is_constant and tensors[i].dtype not in DTYPES:
            return f"tensor {tensors[i].name!r} is {tensors[i].dtype}"
    problem = _rank_problem(op, tensors)
    if problem:
        return problem
    if op.options.get("fusedActivationFunction", 0) not in SUPPORTED_ACTIVATIONS:
        return "fused activation SIGN_BIT is not supported"
    return ""


def _layer_problem(op: OpInfo, tensors: list[TensorInfo], runtime_inputs: list[int]) -> str:
    """The conditions on convolutions, FULLY_CONNECTED, SOFTMAX and the additions."""
    opts = op.options
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
        if min(opts.get("strideH", 1), opts.get("strideW", 1)) < 1:
            return f"{op.name} strides must be positive"
        if min(opts.get("dilationHFactor", 1), opts.get("dilationWFactor", 1)) < 1:
            return f"{op.name} dilations must be positive"
    if op.name == "FULLY_CONNECTED":
        if opts.get("weightsFormat", 0) != 0:
            return "FULLY_CONNECTED weights format other than the default"
        if len(runtime_inputs) > 2:
            return "FULLY_CONNECTED with more than 2 runtime inputs"
        if opts.get("keepNumDims") and len(tensors[op.inputs[0]].shape) != len(
            tensors[op.outputs[0]].shape
        ):
            return "FULLY_CONNECTED keep_num_dims with a rank change"
    if op.name == "SOFTMAX" and opts.get("beta", 1.0) != 1.0:
        return "SOFTMAX with beta != 1"
    if op.name in ("ADD", "MUL") and len(op.inputs) != 2:
        return f"{op.name} needs exactly two inputs"
    if op.name == "ADD_N" and len(op.inputs) != 2:
        return "ADD_N supports only 2 inputs"
    return ""


def _shape_problem(op: OpInfo, tensors: list[TensorInfo], runtime_inputs: list[int]) -> str:
    """The conditions on slicing, reductions, padding, resizing, gathers and unary ops."""
    opts = op.options
    if op.name in ("SLICE", "STRIDED_SLICE"):
        rank = len(tensors[op.inputs[0]].shape)
        if rank not in (3, 4):
            return f"{op.name} supports 3- or 4-dimensional tensors only (rank {rank})"
        if op.name == "STRIDED_SLICE":
            for mask in ("ellipsisMask", "newAxisMask", "shrinkAxisMask"):
                if opts.get(mask):
                    return f"STRIDED_SLICE does not support {mask}"
    if op.name in REDUCE:
        axes = tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
        if axes is None or not axes.is_constant or axes.dtype != "int32":
            return f"{op.name} needs constant int32 axes"
    if op.name in ("PAD", "PADV2", "MIRROR_PAD"):
        pads = tensors[op.inputs[1]].shape if len(op.inputs) > 1 else []
        if len(pads) != 2 or pads[0] not in (3, 4) or pads[1] != 2:
            return f"{op.name} paddings must be 3x2 or 4x2 (got {pads})"
        if op.name == "MIRROR_PAD" and opts.get("mode", 0) != 0:
            return "MIRROR_PAD supports REFLECT mode only"
    if op.name == "RESIZE_BILINEAR" and opts.get("alignCorners") and opts.get("halfPixelCenters"):
        return "RESIZE_BILINEAR with both align_corners and half_pixel_centers"
    if op.name in ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH") and opts.get("blockSize", 2) <= 1:
        return f"{op.name} block_size must be > 1"
    if op.name == "GATHER" and len(op.inputs) > 1:
        indices = tensors[op.inputs[1]]
        if len(indices.shape) != 1 or indices.dtype != "int32":
            return "GATHER needs 1-D int32 indices"
    if op.name in UNARY and len(runtime_inputs) != 1:
        return f"{op.name} needs one runtime input"
    return ""


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


def check_gpu(model: TFLiteFile) -> TargetReport:
    """Per-op table of what the GPU delegate takes.

    Args:
        model: The parsed model.

    Returns:
        The report; ``ok`` when every op runs on the GPU.
    """
    rows = []
    folded = folded_constants(model)
    for op in (o for o in model.ops if o.subgraph == 0):
        problem = op_problem(op, model.tensors, folded)
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
