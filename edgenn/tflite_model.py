"""[device] Read a .tflite flatbuffer without TensorFlow: ops, versions, tensors, metadata, MACs.

The schema module that ``ai-edge-litert`` ships (``ai_edge_litert.schema_py_generated``) decodes the
file. Every file is checked before any runtime sees it (:func:`load`): the identifier, that the
whole flatbuffer decodes, and that every index and buffer it holds points inside the file. A
damaged model is then an :class:`~edgenn.errors.EdgennError`, never a crash of the process.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import optional
from edgenn.errors import EdgennError

#: TFLite's own metadata entry with the oldest runtime that runs the model (e.g. "1.14.0").
MIN_RUNTIME_METADATA = "min_runtime_version"

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
}


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

    def constant(self) -> np.ndarray | None:
        """The constant data as a numpy array of the tensor's shape (None for activations)."""
        if self.data is None or self.dtype not in _ITEMSIZE:
            return None
        arr = np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<"))
        return arr.reshape(self.shape) if arr.size == int(np.prod(self.shape)) else arr


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
        return sum(int(np.prod(t.shape)) if t.shape else 1 for t in self.tensors if t.is_constant)

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

    Args:
        source: A path, or the file's bytes.

    Returns:
        The parsed model.

    Raises:
        EdgennError: Missing, not a TFLite model, truncated or internally inconsistent.
    """
    path = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = "the model bytes"
    else:
        path = Path(source)
        label = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise EdgennError(f"Model not found: {path}.") from None
        except IsADirectoryError:
            raise EdgennError(f"{path} is a folder; expected a .tflite file.") from None
        except OSError as exc:
            raise EdgennError(f"Cannot read {path}: {exc}.") from None
    if len(data) < 8 or data[4:8] != b"TFL3":
        found = data[4:8] if len(data) >= 8 else data[:8]
        raise EdgennError(
            f"{label} is not a TFLite model (file identifier {found!r}, expected b'TFL3').",
            "Pass a .tflite file, e.g. one written by edgenn convert.",
        )
    schema = _schema()
    try:
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
        for io in (sg.inputs, sg.outputs):
            for i in io if io is not None else []:
                if not 0 <= i < len(tensors):
                    raise EdgennError(
                        f"{label}: subgraph {sg_index} names tensor {i} of {len(tensors)}."
                    )
        for op_index, op in enumerate(sg.operators or []):
            ops.append(_op_info(schema, model, names, op, op_index, sg_index, infos, label))
        if sg_index == 0:
            main_tensors = infos
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


def _tensor_info(model, t, t_index: int, data: bytes, label: str) -> TensorInfo:
    """One tensor, its buffer checked to lie inside the file."""
    nbuffers = len(model.buffers or [])
    if t.buffer < 0 or t.buffer >= max(nbuffers, 1):
        raise EdgennError(f"{label}: tensor {t_index} names buffer {t.buffer} of {nbuffers}.")
    shape = [int(s) for s in (t.shape if t.shape is not None else [])]
    signature = t.shapeSignature
    if signature is not None and len(signature) == len(shape):
        shape = [int(sig) if sig < 0 else s for s, sig in zip(shape, signature)]
    q = t.quantization
    scale = [float(s) for s in (q.scale if q is not None and q.scale is not None else [])]
    zp = [int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else [])]
    const = _buffer_bytes(model, t.buffer, data)
    try:
        # Runtimes decode names strictly; a damaged name must fail here, not there.
        name = t.name.decode("utf-8") if isinstance(t.name, bytes) else str(t.name or "")
    except UnicodeDecodeError:
        raise EdgennError(f"{label}: tensor {t_index} has a damaged name (not UTF-8).") from None
    return TensorInfo(
        index=t_index,
        name=name,
        shape=shape,
        dtype=_DTYPES.get(t.type, f"type{t.type}"),
        scale=scale,
        zero_point=zp,
        is_constant=const is not None,
        nbytes=len(const) if const is not None else 0,
        data=const,
    )


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
        return int(np.prod(out)) * weights[1] * weights[2] * weights[3]
    if op.name == "DEPTHWISE_CONV_2D" and len(weights) == 4:
        # weights: [1, kh, kw, channels * multiplier]
        return int(np.prod(out)) * weights[1] * weights[2]
    if op.name == "FULLY_CONNECTED" and len(weights) == 2:
        return int(np.prod(out)) * weights[1]
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
