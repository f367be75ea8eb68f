"""[device] Read a .tflite flatbuffer without TensorFlow: ops, versions, tensors, metadata, MACs.

The schema module that ``ai-edge-litert`` ships (``ai_edge_litert.schema_py_generated``) decodes the
file. Every file is checked before any runtime sees it (:func:`load`): the identifier, that the
whole flatbuffer decodes, and that every index and buffer it holds points inside the file. A
damaged model is then an :class:`~edgenn.errors.EdgennError`, never a crash of the process.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import optional
from edgenn.errors import EdgennError
from edgenn.fileio import MAX_READ_BYTES, read_regular

#: TFLite's own metadata entry with the oldest runtime that runs the model (e.g. "1.14.0").
MIN_RUNTIME_METADATA = "min_runtime_version"

# Sane limits on what a file declares, checked before anything is decoded or allocated: a file
# beyond them is damaged or crafted (a 33 KB model declaring a [1, 9000000, 28, 1] input made a
# runtime take 23 GB). Real models sit far inside: MediaPipe's face detector has 250 tensors,
# 164 ops and a largest tensor of 1.2 MB; a 4K RGB frame is 24.9 million values.
#: Largest .tflite file read (a Pi's models are a few MB).
MAX_MODEL_BYTES = MAX_READ_BYTES
#: Most subgraphs in a model.
MAX_SUBGRAPHS = 1_000
#: Most tensors in a model (all subgraphs); also the bound on buffers, opcodes and metadata.
MAX_TENSORS = 100_000
#: Most operators in a model (all subgraphs).
MAX_OPERATORS = 100_000
#: Most dimensions of a tensor (TFLite's kernels take at most 6).
MAX_RANK = 16
#: Largest size any tensor may declare.
MAX_TENSOR_BYTES = 2**30
#: Most values in one input or output of the main subgraph (4096 x 4096 x 2).
MAX_IO_VALUES = 2**25
#: Inputs above this many values must not exceed MAX_INPUT_RATIO times the largest tensor the
#: model computes (the runtime sizes every activation from the inputs; see check_input_sizes).
LARGE_INPUT_VALUES = 2**20
MAX_INPUT_RATIO = 64

_DTYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    5: "string",
    6: "bool",
    7: "int16",
    8: "complex64",
    9: "int8",
    10: "float64",
    11: "complex128",
    12: "uint64",
    13: "resource",
    14: "variant",
    15: "uint32",
    16: "uint16",
    17: "int4",
    18: "bfloat16",
}
_ITEMSIZE = {
    "float32": 4,
    "float16": 2,
    "int32": 4,
    "uint8": 1,
    "int64": 8,
    "bool": 1,
    "int16": 2,
    "int8": 1,
    "float64": 8,
    "uint64": 8,
    "uint32": 4,
    "uint16": 2,
    "bfloat16": 2,
    "complex64": 8,
    "complex128": 16,
}


#: Integer dtypes that carry quantization, with their value ranges.
_INT_RANGES = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
    "int4": (-8, 7),
}
#: Smallest and largest normal float32.
_FLT_MIN, _FLT_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)


def is_numeric(dtype: str) -> bool:
    """Whether a tensor of ``dtype`` (a name of this module's dtypes) holds real numbers.

    Not strings, resources or variants (LiteRT gives no numpy view of them), nor complex
    numbers (scores are ranked) or bfloat16 (numpy has no such type).
    """
    return dtype in _ITEMSIZE and dtype not in ("complex64", "complex128", "bfloat16")


def _schema():
    schema = optional.try_import("ai_edge_litert.schema_py_generated")
    if schema is None:
        try:
            # tflite-runtime set-ups: the copy an edgenn bundle installs (see edgenn.bundle).
            import edgenn_tflite_schema as schema
        except ImportError:
            raise optional.missing("ai_edge_litert", "Reading a .tflite file") from None
    return schema


@dataclasses.dataclass
class TensorInfo:
    """One tensor of the model.

    Attributes:
        index: Index in the subgraph.
        name: Tensor name.
        shape: Static shape (``-1`` where ``shape_signature`` marks a dynamic axis).
        dtype: numpy-style dtype name (``int8``, ``float32``, ...).
        scale: Quantization scale(s); empty when not quantized.
        zero_point: Quantization zero point(s).
        is_constant: Whether it holds constant data (weights).
        nbytes: Bytes of constant data.
        data: The constant data (None for activations).
        is_variable: Whether it is a variable (state the runtime keeps between invokes).
    """

    index: int
    name: str
    shape: list[int]
    dtype: str
    scale: list[float]
    zero_point: list[int]
    is_constant: bool
    nbytes: int
    data: bytes | None = dataclasses.field(default=None, repr=False)
    is_variable: bool = False

    def constant(self) -> np.ndarray | None:
        """The constant data as a numpy array of the tensor's shape (None for activations)."""
        if self.data is None or self.dtype not in _ITEMSIZE:
            return None
        arr = np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<"))
        return arr.reshape(self.shape) if arr.size == count_values(self.shape) else arr


@dataclasses.dataclass
class OpInfo:
    """One operator in execution order.

    Attributes:
        index: Position in the subgraph.
        subgraph: Subgraph index.
        name: Builtin op name (``CONV_2D``) or the custom op's name.
        version: Op version.
        custom: Whether it is a custom op.
        inputs: Input tensor indices (-1: optional input absent).
        outputs: Output tensor indices.
        options: The op's builtin options as a dict (strides, padding, activation...).
        macs: Multiply-accumulates of one inference (0 where not counted).
    """

    index: int
    subgraph: int
    name: str
    version: int
    custom: bool
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any]
    macs: int = 0


@dataclasses.dataclass
class TFLiteFile:
    """A parsed and checked .tflite model.

    Attributes:
        path: Where it was read from (None for bytes).
        data: The file's bytes.
        subgraphs: Number of subgraphs.
        tensors: Tensors of the main subgraph (index 0).
        ops: Operators of every subgraph.
        inputs: Input tensor indices of the main subgraph.
        outputs: Output tensor indices of the main subgraph.
        metadata: Metadata entries by name (raw bytes).
        description: The model's description string.
    """

    path: Path | None
    data: bytes
    subgraphs: int
    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[int]
    outputs: list[int]
    metadata: dict[str, bytes]
    description: str

    @property
    def size_bytes(self) -> int:
        """File size."""
        return len(self.data)

    @property
    def input_details(self) -> list[TensorInfo]:
        """The main subgraph's inputs."""
        return [self.tensors[i] for i in self.inputs]

    @property
    def output_details(self) -> list[TensorInfo]:
        """The main subgraph's outputs."""
        return [self.tensors[i] for i in self.outputs]

    @property
    def min_runtime_version(self) -> str | None:
        """The converter's ``min_runtime_version`` metadata, when present."""
        raw = self.metadata.get(MIN_RUNTIME_METADATA)
        return raw.split(b"\0")[0].decode("ascii", "replace") if raw else None

    @property
    def op_counts(self) -> list[tuple[str, int, int]]:
        """``(op, version, count)`` sorted by first appearance."""
        counts = Counter((op.name, op.version) for op in self.ops)
        seen = []
        for op in self.ops:
            key = (op.name, op.version)
            if key not in seen:
                seen.append(key)
        return [(name, version, counts[(name, version)]) for name, version in seen]

    @property
    def parameters(self) -> int:
        """Elements of constant tensors (weights, biases) in the main subgraph."""
        return sum(count_values(t.shape) for t in self.tensors if t.is_constant)

    @property
    def weight_bytes(self) -> int:
        """Bytes of constant tensor data."""
        return sum(t.nbytes for t in self.tensors if t.is_constant)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of one inference over counted ops."""
        return sum(op.macs for op in self.ops)

    @property
    def dtypes(self) -> set[str]:
        """Dtypes of all non-constant tensors (the activations)."""
        return {t.dtype for t in self.tensors if not t.is_constant}


def load(source: Path | bytes) -> TFLiteFile:
    """Read and check a .tflite file.

    Only a regular file of at most :data:`MAX_MODEL_BYTES` is read (a FIFO, a device or a
    directory is refused without blocking); its counts and declared sizes are checked against
    the limits above before the flatbuffer is decoded into objects.

    Args:
        source: A path, or the file's bytes.

    Returns:
        The parsed model.

    Raises:
        EdgennError: Missing, not a regular file, too large, not a TFLite model, truncated,
            internally inconsistent, or declaring sizes beyond the limits.
    """
    path = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = "the model bytes"
    else:
        path = Path(source)
        label = str(path)
        if not os.path.lexists(path):
            raise EdgennError(f"Model not found: {path}.")
        data = read_regular(path, "a .tflite model", MAX_MODEL_BYTES)
    if len(data) < 8 or data[4:8] != b"TFL3":
        found = data[4:8] if len(data) >= 8 else data[:8]
        raise EdgennError(
            f"{label} is not a TFLite model (file identifier {found!r}, expected b'TFL3').",
            "Pass a .tflite file, e.g. one written by edgenn convert.",
        )
    schema = _schema()
    try:
        _check_counts(schema, data, label)
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        parsed = _parse(schema, model, data, path)
    except EdgennError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a damaged file
        raise EdgennError(
            f"{label} is a damaged TFLite model: its flatbuffer does not decode "
            f"({exc.__class__.__name__}: {exc}); the file may be truncated.",
            "Convert or download the model again.",
        ) from None
    return parsed


def _check_counts(schema, data: bytes, label: str) -> None:
    """Check the lengths of the model's tables before the object tree is built.

    The decoder trusts them: a flipped length byte would make it walk millions of entries of
    garbage, and a crafted file can point one entry many times at the same table.
    """
    root = schema.Model.GetRootAs(data, 0)
    counts = {
        "subgraphs": root.SubgraphsLength(),
        "buffers": root.BuffersLength(),
        "operator codes": root.OperatorCodesLength(),
        "metadata entries": root.MetadataLength(),
        "signatures": root.SignatureDefsLength(),
    }
    _check_count(label, "subgraphs", counts["subgraphs"], MAX_SUBGRAPHS, len(data))
    tensors = operators = 0
    for i in range(counts["subgraphs"]):
        sg = root.Subgraphs(i)
        for what, n in (("inputs", sg.InputsLength()), ("outputs", sg.OutputsLength())):
            _check_count(label, f"subgraph {i} {what}", n, MAX_TENSORS, len(data))
        tensors += sg.TensorsLength()
        operators += sg.OperatorsLength()
        _check_count(label, "tensors", tensors, MAX_TENSORS, len(data))
        _check_count(label, "operators", operators, MAX_OPERATORS, len(data))
    for what, n in counts.items():
        _check_count(label, what, n, MAX_TENSORS, len(data))


def _check_count(label: str, what: str, n: int, limit: int, size: int) -> None:
    if n * 4 > size:
        # Every entry of a table takes at least 4 bytes: the length itself is damaged.
        raise EdgennError(
            f"{label} is a damaged TFLite model: it claims {n:,} {what} in {size:,} bytes.",
            "Convert or download the model again.",
        )
    if n > limit:
        raise EdgennError(
            f"{label} has {n:,} {what}; edgenn reads at most {limit:,}.",
            "Pass a model made for a small device (edgenn convert writes one).",
        )


def count_values(shape: list[int]) -> int:
    """Values in a tensor of ``shape``, exact for any size (a dynamic ``-1`` axis counts as 1).

    Args:
        shape: The shape.

    Returns:
        The product of the dimensions.
    """
    return math.prod(max(int(d), 1) for d in shape)


def check_input_sizes(model: TFLiteFile) -> None:
    """Refuse inputs whose declared shapes the rest of the model contradicts, before allocating.

    The runtime sizes every activation from the inputs (the other declared shapes are only
    hints), so an input made large in the file makes every layer large: 25 million values in
    the tiny CNN's input took 2.5 GB while allocating. A converted model's declared shapes agree
    with each other; a large input far larger than anything the model computes from it does not.

    Args:
        model: The parsed model.

    Raises:
        EdgennError: A large input is more than :data:`MAX_INPUT_RATIO` times the largest tensor
            the main subgraph computes.
    """
    computed = {i for op in model.ops if op.subgraph == 0 for i in op.outputs}
    largest = max((count_values(model.tensors[i].shape) for i in computed if i >= 0), default=0)
    for n, t in enumerate(model.input_details):
        values = count_values(t.shape)
        if largest and values > LARGE_INPUT_VALUES and values > MAX_INPUT_RATIO * largest:
            raise EdgennError(
                f"{model.path or 'The model'}'s input {n} declares {t.shape} ({values:,} values, "
                f"{values // largest:,} times the largest tensor the model computes, "
                f"{largest:,} values): its shapes contradict each other, so the file is "
                "damaged or crafted; nothing was allocated.",
                "Convert or download the model again.",
            )


def _builtin_names(schema) -> dict[int, str]:
    return {
        v: k
        for k, v in vars(schema.BuiltinOperator).items()
        if not k.startswith("_") and isinstance(v, int)
    }


def _options_dict(options) -> dict[str, Any]:
    if options is None:
        return {}
    out = {}
    for key, value in vars(options).items():
        if isinstance(value, (int, float, bool, str)):
            out[key] = value
    return out


def _buffer_bytes(model, index: int, data: bytes) -> bytes | None:
    if index <= 0 or index >= len(model.buffers or []):
        return None
    buf = model.buffers[index]
    if buf.data is not None and len(buf.data):
        return np.asarray(buf.data, dtype=np.uint8).tobytes()
    if getattr(buf, "offset", 0) and getattr(buf, "size", 0):
        # Large models keep buffers after the flatbuffer; offset and size must stay in the file.
        if buf.offset + buf.size > len(data):
            raise EdgennError(
                f"Buffer {index} points past the end of the file "
                f"({buf.offset}+{buf.size} > {len(data)} bytes); the model is truncated."
            )
        return data[buf.offset : buf.offset + buf.size]
    return None


def _parse(schema, model, data: bytes, path: Path | None) -> TFLiteFile:
    """The checked facts of a decoded flatbuffer (every index it holds points inside the file)."""
    label = str(path) if path else "the model"
    if not model.subgraphs:
        raise EdgennError(f"{label} has no subgraph; it is not a runnable TFLite model.")
    names = _builtin_names(schema)
    nbuffers = len(model.buffers or [])
    ops: list[OpInfo] = []
    main_tensors: list[TensorInfo] = []
    for sg_index, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []
        infos = [_tensor_info(model, t, t_index, data, label) for t_index, t in enumerate(tensors)]
        graph_io = []
        for io in (sg.inputs, sg.outputs):
            graph_io.append([int(i) for i in (io if io is not None else [])])
            for i in graph_io[-1]:
                if not 0 <= i < len(tensors):
                    raise EdgennError(
                        f"{label}: subgraph {sg_index} names tensor {i} of {len(tensors)}."
                    )
        if sg_index == 0:
            main_tensors = infos
            for kind, indices in zip(("input", "output"), graph_io):
                for n, i in enumerate(indices):
                    _check_io(infos[i], kind, n, label)
        sg_ops = [
            _op_info(schema, model, names, op, op_index, sg_index, infos, label)
            for op_index, op in enumerate(sg.operators or [])
        ]
        _check_dataflow(sg_ops, infos, graph_io[0], graph_io[0] + graph_io[1], label)
        for op in sg_ops:
            _check_op_inputs(op, label)
            _check_op_shapes(op, infos, label)
        ops.extend(sg_ops)
    main = model.subgraphs[0]
    description = model.description
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    return TFLiteFile(
        path=path,
        data=data,
        subgraphs=len(model.subgraphs),
        tensors=main_tensors,
        ops=ops,
        inputs=[int(i) for i in (main.inputs if main.inputs is not None else [])],
        outputs=[int(i) for i in (main.outputs if main.outputs is not None else [])],
        metadata=_metadata(model, nbuffers),
        description=description or "",
    )


#: The inputs a builtin op may leave out (-1), by op: a bias. Converters leave out nothing else,
#: and LiteRT's kernels read any other input without checking (a crash, now and then).
_OPTIONAL_INPUTS = {
    "CONV_2D": {2},
    "DEPTHWISE_CONV_2D": {2},
    "FULLY_CONNECTED": {2},
    "TRANSPOSE_CONV": {3},
    "CONV_3D": {2},
    "CONV_3D_TRANSPOSE": {3},
}
#: Op families whose kernels take many optional inputs (all but the first may be left out).
_OPTIONAL_FAMILIES = ("LSTM", "RNN", "SVDF", "STABLEHLO_")
#: Builtin ops whose first output holds as many values as their first input. A runtime that
#: trusts declared shapes (TFLite Micro plans its arena from them) overruns a buffer when a file
#: declares otherwise, so such a file is refused.
_SAME_SIZE_OPS = frozenset(
    "QUANTIZE DEQUANTIZE CAST RESHAPE RELU RELU6 RELU_N1_TO_1 RELU_0_TO_1 LEAKY_RELU LOGISTIC "
    "TANH HARD_SWISH ELU GELU SOFTMAX LOG_SOFTMAX ABS NEG EXP LOG SQRT RSQRT SQUARE FLOOR CEIL "
    "ROUND SIN COS SIGN LOGICAL_NOT ZEROS_LIKE ONES_LIKE L2_NORMALIZATION "
    "LOCAL_RESPONSE_NORMALIZATION".split()
)


#: Layers whose output shape follows from their input and weights (what TFLite Micro trusts).
_LAYER_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED"}
)
#: TFLite's Padding enum: SAME, VALID.
_SAME, _VALID = 0, 1


def _spatial(size: int, window: int, stride: int, dilation: int, padding: int) -> int:
    """Output length of a sliding window, as TFLite computes it."""
    effective = (window - 1) * dilation + 1
    if padding == _SAME:
        return (size + stride - 1) // stride
    return max((size - effective + stride) // stride, 0)


def _damaged(label: str, op: OpInfo, what: str) -> EdgennError:
    return EdgennError(
        f"{label}: operator {op.index} ({op.name}) {what}, so the file is damaged.",
        "Convert or download the model again.",
    )


def _layer_output_shape(op: OpInfo, tensors: list[TensorInfo], label: str) -> list[int] | None:
    """The output shape a layer computes from its input and weights (None: not checkable).

    Raises:
        EdgennError: A stride, dilation or window is not positive (a division by zero), the
            input or weights have a rank the op does not take, or their channels or features
            disagree (TFLite Micro reads past a buffer on each).
    """
    x = tensors[op.inputs[0]].shape
    w = tensors[op.inputs[1]].shape if len(op.inputs) > 1 else []
    o = op.options
    if any(d < 0 for d in [*x, *w]):
        return None  # dynamic axes: only the runtime knows
    if op.name == "FULLY_CONNECTED":
        if len(w) != 2 or not w[1] or math.prod(x) % w[1]:
            raise _damaged(label, op, f"reads {x} with weights {w}, which do not fit")
        return None if o.get("keepNumDims") else [math.prod(x) // w[1], w[0]]
    steps = [o.get(k, 1) for k in ("strideH", "strideW", "dilationHFactor", "dilationWFactor")]
    windows = [o.get("filterHeight", 1), o.get("filterWidth", 1)]
    if min(steps + windows) < 1:
        raise _damaged(label, op, f"has a stride, dilation or window below 1 ({o})")
    conv = op.name.endswith("CONV_2D")
    if len(x) != 4 or (conv and len(w) != 4):
        raise _damaged(
            label, op, f"reads {x}{f' with weights {w}' if conv else ''}; it takes 4-D tensors"
        )
    # Weights: CONV_2D [out, kh, kw, in]; DEPTHWISE_CONV_2D [1, kh, kw, in * multiplier].
    channels = x[3]
    if op.name == "CONV_2D":
        windows, channels = w[1:3], w[0]
        fits = x[3] == w[3]
    elif op.name == "DEPTHWISE_CONV_2D":
        windows, channels = w[1:3], w[3]
        fits = x[3] > 0 and w[3] % x[3] == 0  # the kernel derives the multiplier from these
    else:
        fits = True
    if not fits or not channels:
        raise _damaged(label, op, f"reads {x} with weights {w}, whose channels do not fit")
    padding = o.get("padding", _SAME)
    h = _spatial(x[1], windows[0], steps[0], steps[2], padding)
    return [x[0], h, _spatial(x[2], windows[1], steps[1], steps[3], padding), channels]


def _check_op_inputs(op: OpInfo, label: str) -> None:
    """Refuse a builtin operator that lacks an input its kernel reads, or a sane ``beta``.

    See :data:`_OPTIONAL_INPUTS`: LiteRT's kernels read the others without checking.
    """
    if op.custom:
        return
    if op.name in _LAYER_OPS and not op.name.endswith("POOL_2D"):
        needs = 2  # input and weights
    else:
        needs = 1 if op.name in _LAYER_OPS | _SAME_SIZE_OPS else 0
    if len(op.inputs) < needs:
        raise EdgennError(
            f"{label}: operator {op.index} ({op.name}) has {len(op.inputs)} inputs; it reads "
            f"at least {needs}, so the file is damaged.",
            "Convert or download the model again.",
        )
    family = any(f in op.name for f in _OPTIONAL_FAMILIES)
    optional = _OPTIONAL_INPUTS.get(op.name, set())
    for n, t in enumerate(op.inputs):
        if t < 0 and (n == 0 or not (family or n in optional)):
            raise EdgennError(
                f"{label}: operator {op.index} ({op.name}) leaves out input {n}, which it "
                "needs; the file is damaged.",
                "Convert or download the model again.",
            )
    beta = op.options.get("beta", 1.0) if op.name == "SOFTMAX" else 1.0
    if not 0 < beta < math.inf:
        # TFLite Micro's int8 kernel crashes on it; converters write 1.0.
        raise EdgennError(
            f"{label}: operator {op.index} (SOFTMAX) has beta {beta}; expected a positive "
            "number, so the file is damaged.",
            "Convert or download the model again.",
        )


def _check_op_shapes(op: OpInfo, tensors: list[TensorInfo], label: str) -> None:
    """Refuse a builtin operator whose declared sizes contradict each other.

    See :data:`_LAYER_OPS` and :data:`_SAME_SIZE_OPS`.
    """
    if op.custom:
        return
    if op.name in _LAYER_OPS and op.outputs:
        expected = _layer_output_shape(op, tensors, label)
        declared = tensors[op.outputs[0]].shape
        if expected is not None and all(d >= 0 for d in declared) and expected != declared:
            raise EdgennError(
                f"{label}: operator {op.index} ({op.name}) computes {expected} from its "
                f"inputs but declares {declared}; its shapes contradict each other, so the "
                "file is damaged or crafted.",
                "Convert or download the model again.",
            )
    if op.name in _SAME_SIZE_OPS and op.inputs and op.outputs:
        shapes = [tensors[op.inputs[0]].shape, tensors[op.outputs[0]].shape]
        if all(d >= 0 for shape in shapes for d in shape):
            values = [math.prod(shape) for shape in shapes]
            if values[0] != values[1]:
                raise EdgennError(
                    f"{label}: operator {op.index} ({op.name}) reads {shapes[0]} "
                    f"({values[0]:,} values) but writes {shapes[1]} ({values[1]:,}); its "
                    "shapes contradict each other, so the file is damaged or crafted.",
                    "Convert or download the model again.",
                )


def _check_dataflow(
    ops: list[OpInfo], tensors: list[TensorInfo], inputs: list[int], io: list[int], label: str
) -> None:
    """Check what the runtime trusts without checking: who writes and who reads each tensor.

    Every tensor an operator writes is written by that operator alone and is neither constant
    nor a graph input; every tensor a builtin operator or the graph reads is written by an
    operator, a graph input, a constant, a variable, or empty. LiteRT writes into read-only
    weights (a segfault), or loops, when a file breaks these.

    Args:
        ops: The subgraph's operators.
        tensors: Its tensors.
        inputs: Its input tensor indices.
        io: Its input and output tensor indices.
        label: The model, for the messages.

    Raises:
        EdgennError: The dataflow is broken (one line naming the operator and the tensor).
    """
    written: dict[int, int] = {}
    for op in ops:
        for t in op.outputs:
            why = (
                "it is not a tensor"
                if t < 0
                else f"operator {written[t]} writes it too"
                if t in written
                else "it holds constant data"
                if tensors[t].is_constant
                else "it is a graph input"
                if t in inputs
                else None
            )
            if why:
                raise EdgennError(
                    f"{label}: operator {op.index} ({op.name}) writes tensor {t}, but {why}; "
                    "the file is damaged.",
                    "Convert or download the model again.",
                )
            written[t] = op.index
    sources = set(written) | set(inputs)
    # A custom op may read scratch tensors that only its own runtime fills (Ethos-U's do).
    builtin = [(op.index, op.inputs) for op in ops if not op.custom]
    for op_index, reads in [*builtin, (None, io)]:
        for t in reads:
            t_info = tensors[t] if t >= 0 else None
            if t_info is None or t in sources or t_info.is_constant or t_info.is_variable:
                continue
            if 0 in t_info.shape:
                continue  # empty: there is nothing to read
            reader = f"operator {op_index}" if op_index is not None else "the graph"
            raise EdgennError(
                f"{label}: {reader} reads tensor {t}, which nothing writes and which holds no "
                "data; the file is damaged.",
                "Convert or download the model again.",
            )


def _check_io(t: TensorInfo, kind: str, n: int, label: str) -> None:
    """Refuse an input or output beyond :data:`MAX_IO_VALUES` (before any runtime allocates it)."""
    values = count_values(t.shape)
    if values > MAX_IO_VALUES:
        raise EdgennError(
            f"{label}'s {kind} {n} declares {t.shape} ({values:,} values); edgenn accepts at "
            f"most {MAX_IO_VALUES:,} values per input or output, so the file is damaged or "
            "not made for a small device; nothing was allocated.",
            "Convert or download the model again.",
        )


def _tensor_info(model, t, t_index: int, data: bytes, label: str) -> TensorInfo:
    """One tensor, its shape and size checked, its buffer checked to lie inside the file."""
    nbuffers = len(model.buffers or [])
    if t.buffer < 0 or t.buffer >= max(nbuffers, 1):
        raise EdgennError(f"{label}: tensor {t_index} names buffer {t.buffer} of {nbuffers}.")
    dtype = _DTYPES.get(t.type, f"type{t.type}")
    shape = _checked_shape(t, t_index, dtype, label)
    q = t.quantization
    scale = [float(s) for s in (q.scale if q is not None and q.scale is not None else [])]
    zp = [int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])]
    _check_quantization(t_index, dtype, scale, zp, label)
    const = _buffer_bytes(model, t.buffer, data)
    if const is not None and t.sparsity is None and dtype in _ITEMSIZE:
        # What the runtime checks too, here so that inspect's parameter counts are true.
        declared = count_values(shape) * _ITEMSIZE[dtype]
        if declared != len(const):
            raise EdgennError(
                f"{label}: tensor {t_index} declares {shape} {dtype} ({declared:,} bytes) but "
                f"its buffer holds {len(const):,} bytes; the file is damaged.",
                "Convert or download the model again.",
            )
    try:
        # Runtimes decode names strictly; a damaged name must fail here, not there.
        name = t.name.decode("utf-8") if isinstance(t.name, bytes) else str(t.name or "")
    except UnicodeDecodeError:
        raise EdgennError(f"{label}: tensor {t_index} has a damaged name (not UTF-8).") from None
    return TensorInfo(
        index=t_index,
        name=name,
        shape=shape,
        dtype=dtype,
        scale=scale,
        zero_point=zp,
        is_constant=const is not None,
        nbytes=len(const) if const is not None else 0,
        data=const,
        is_variable=bool(t.isVariable),
    )


def _check_quantization(
    t_index: int, dtype: str, scale: list[float], zero_point: list[int], label: str
) -> None:
    """Refuse quantization parameters no converter writes.

    LiteRT's XNNPACK delegate crashes the process (a segfault while allocating) on a scale that
    is not a positive normal number, or on a zero point outside the tensor's integer range,
    instead of reporting them.
    """
    if dtype not in _INT_RANGES:
        return
    bad = next((s for s in scale if not _FLT_MIN <= s <= _FLT_MAX), None)
    if bad is not None:
        raise EdgennError(
            f"{label}: tensor {t_index} has quantization scale {bad}; scales are positive "
            "normal numbers, so the file is damaged.",
            "Convert or download the model again.",
        )
    low, high = _INT_RANGES[dtype]
    bad = next((z for z in zero_point if not low <= z <= high), None)
    if bad is not None:
        raise EdgennError(
            f"{label}: tensor {t_index} has zero point {bad}, outside {dtype}'s range "
            f"[{low}, {high}]; the file is damaged.",
            "Convert or download the model again.",
        )


def _checked_shape(t, t_index: int, dtype: str, label: str) -> list[int]:
    """The tensor's shape (``-1`` on dynamic axes), checked.

    Refused: more than :data:`MAX_RANK` dimensions, a negative one, more than
    :data:`MAX_TENSOR_BYTES`.
    """
    static = t.shape if t.shape is not None else []
    signature = t.shapeSignature if t.shapeSignature is not None else []
    if max(len(static), len(signature)) > MAX_RANK:
        raise EdgennError(
            f"{label}: tensor {t_index} has rank {max(len(static), len(signature))}; "
            f"TFLite tensors have at most {MAX_RANK} dimensions, so the file is damaged."
        )
    shape = [int(s) for s in static]
    if len(signature) == len(shape):
        shape = [int(sig) if sig < 0 else s for s, sig in zip(shape, signature)]
    for d in [*shape, *(int(s) for s in signature)]:
        if d < -1:
            raise EdgennError(
                f"{label}: tensor {t_index} declares dimension {d} in {list(map(int, static))}; "
                "dimensions are counts, so the file is damaged."
            )
    size = count_values(shape) * _ITEMSIZE.get(dtype, 1)
    if size > MAX_TENSOR_BYTES:
        raise EdgennError(
            f"{label}: tensor {t_index} declares {shape} {dtype}, {size:,} bytes; edgenn "
            f"accepts at most {MAX_TENSOR_BYTES:,} bytes per tensor (the file is damaged or "
            "not made for a small device)."
        )
    return shape


def _op_info(
    schema,
    model,
    names: dict[int, str],
    op,
    op_index: int,
    sg_index: int,
    tensors: list[TensorInfo],
    label: str,
) -> OpInfo:
    """One operator, its opcode and tensor indices checked; MACs counted."""
    codes = model.operatorCodes or []
    if not 0 <= op.opcodeIndex < len(codes):
        raise EdgennError(
            f"{label}: operator {op_index} uses opcode {op.opcodeIndex} of {len(codes)}."
        )
    code = codes[op.opcodeIndex]
    # Codes above 127 live only in builtinCode (the int8 deprecated field then holds 127); files
    # older than builtinCode fill only the deprecated field.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    custom = builtin == schema.BuiltinOperator.CUSTOM
    if custom:
        raw = code.customCode
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    else:
        name = names.get(builtin, f"BUILTIN_{builtin}")
    inputs = [int(i) for i in (op.inputs if op.inputs is not None else [])]
    outputs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
    for i in inputs + outputs:
        # -1 marks an optional input that is absent.
        if i >= len(tensors) or i < -1:
            raise EdgennError(f"{label}: operator {op_index} names tensor {i} of {len(tensors)}.")
    info = OpInfo(
        index=op_index,
        subgraph=sg_index,
        name=name,
        version=int(code.version),
        custom=custom,
        inputs=inputs,
        outputs=outputs,
        options=_options_dict(op.builtinOptions),
    )
    info.macs = _macs(info, tensors)
    return info


def _metadata(model, nbuffers: int) -> dict[str, bytes]:
    """The metadata entries whose buffer holds data, by name."""
    metadata = {}
    for entry in model.metadata or []:
        name = (
            entry.name.decode("utf-8", "replace")
            if isinstance(entry.name, bytes)
            else str(entry.name)
        )
        if 0 <= entry.buffer < nbuffers and model.buffers[entry.buffer].data is not None:
            metadata[name] = bytes(bytearray(model.buffers[entry.buffer].data))
    return metadata


def _macs(op: OpInfo, tensors: list[TensorInfo]) -> int:
    """Multiply-accumulates of the compute-heavy ops (the ones that dominate latency)."""
    if op.subgraph != 0 or not op.outputs or not op.inputs or len(op.inputs) < 2:
        return 0

    def shape(i: int) -> list[int]:
        return tensors[i].shape if 0 <= i < len(tensors) else []

    out = [abs(s) for s in shape(op.outputs[0])]
    weights = [abs(s) for s in shape(op.inputs[1])]
    if not out or not weights:
        return 0
    if op.name == "CONV_2D" and len(weights) == 4:
        # weights: [out_channels, kh, kw, in_channels]
        return count_values(out) * weights[1] * weights[2] * weights[3]
    if op.name == "DEPTHWISE_CONV_2D" and len(weights) == 4:
        # weights: [1, kh, kw, channels * multiplier]
        return count_values(out) * weights[1] * weights[2]
    if op.name == "FULLY_CONNECTED" and len(weights) == 2:
        return count_values(out) * weights[1]
    return 0


def embed_metadata(data: bytes, name: str, payload: bytes) -> bytes:
    """Return the model with a metadata entry ``name`` set to ``payload`` (replacing an old one).

    Args:
        data: The .tflite bytes.
        name: Metadata entry name.
        payload: Its content.

    Returns:
        The new .tflite bytes.

    Raises:
        EdgennError: The model cannot be decoded.
    """
    import flatbuffers

    load(data)  # checks the file before it is rewritten
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8).copy()
    model.buffers = list(model.buffers or [])
    entries = [m for m in (model.metadata or []) if _entry_name(m) != name]
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]
    builder = flatbuffers.Builder(len(data) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _entry_name(entry) -> str:
    return entry.name.decode("utf-8") if isinstance(entry.name, bytes) else str(entry.name)


def describe(model: TFLiteFile) -> dict[str, Any]:
    """The flatbuffer's facts: I/O, ops, parameters, sizes, MACs, metadata entries.

    :func:`edgenn.artifact.describe` adds the embedded labels and recipe (``edgenn inspect``).

    Args:
        model: A parsed model.

    Returns:
        A JSON-serializable dict.
    """

    def tensor(t: TensorInfo) -> dict[str, Any]:
        return {
            "name": t.name,
            "shape": t.shape,
            "dtype": t.dtype,
            "scale": t.scale[0] if len(t.scale) == 1 else (t.scale or None),
            "zero_point": t.zero_point[0] if len(t.zero_point) == 1 else (t.zero_point or None),
        }

    return {
        "model": str(model.path) if model.path else None,
        "size_bytes": model.size_bytes,
        "weight_bytes": model.weight_bytes,
        "other_bytes": model.size_bytes - model.weight_bytes,
        "parameters": model.parameters,
        "subgraphs": model.subgraphs,
        "inputs": [tensor(t) for t in model.input_details],
        "outputs": [tensor(t) for t in model.output_details],
        "ops": [{"op": n, "version": v, "count": c} for n, v, c in model.op_counts],
        "macs": model.total_macs,
        "macs_per_op": [
            {"index": op.index, "op": op.name, "macs": op.macs} for op in model.ops if op.macs
        ],
        "min_runtime_version": model.min_runtime_version,
        "metadata_entries": sorted(model.metadata),
    }
