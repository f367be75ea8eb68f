"""[device] The ``edgetpu`` target: the Edge TPU compiler's documented model requirements.

From Coral's "TensorFlow models on the Edge TPU" (models-intro) page:

- tensor parameters quantized to 8 bits (int8 / uint8); the compiler rejects float models;
- tensor sizes constant at compile time (no dynamic shapes);
- tensors with at most 3 dimensions larger than 1 (only the innermost 3 may exceed 1);
- only the ops of the supported-op table, each with its listed limitations;
- the compiler partitions the graph once: the first unsupported op and every op after it run on
  the CPU.

When ``edgetpu_compiler`` is on PATH the real compiler runs as well and its own op table is
parsed; otherwise the report says so and gives the exact command to run on an x86-64 Debian
machine with Coral's repository.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgenn.targets import FAILS, FALLS_BACK, RUNS, OpRow, TargetReport
from edgenn.tflite_model import OpInfo, TensorInfo, TFLiteFile

#: Supported ops (TFLite builtin names) of the Edge TPU compiler.
SUPPORTED_OPS = frozenset(
    {
        "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
        "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
        "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
        "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)  # fmt: skip
#: Ops that may not carry a fused activation function.
NO_FUSED_ACTIVATION = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"})
#: Ops whose constant axis / paddings may not touch the batch dimension (axis 0).
NO_BATCH_AXIS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "PAD", "SPLIT", "PACK"})
SOFTMAX_MAX_ELEMENTS = 16000
INSTALL_COMPILER = (
    "On an x86-64 Debian/Ubuntu machine, add Coral's apt repository "
    "(https://coral.ai/docs/edgetpu/compiler/) and run: sudo apt-get install edgetpu-compiler"
)


def _non_unit(shape: list[int]) -> int:
    return sum(1 for s in shape if abs(s) > 1)


def _operands(op: OpInfo, tensors: list[TensorInfo]) -> list[TensorInfo]:
    return [tensors[i] for i in op.inputs + op.outputs if 0 <= i < len(tensors)]


def op_problem(op: OpInfo, tensors: list[TensorInfo]) -> str:
    """Why the Edge TPU cannot run this op ('' when it can).

    Args:
        op: The operator.
        tensors: The subgraph's tensors.

    Returns:
        The reason, quoting the documented limitation.
    """
    if op.custom:
        return f"custom op {op.name}: not in the Edge TPU's supported-op table"
    if op.name not in SUPPORTED_OPS:
        return f"{op.name} is not in the Edge TPU's supported-op table"
    operands = _operands(op, tensors)
    return (
        _tensor_problem(operands)
        or _limitation(op, tensors)
        or (_batch_axis_problem(op, operands) if op.name in NO_BATCH_AXIS else "")
    )


def _tensor_problem(operands: list[TensorInfo]) -> str:
    """The rules on the data tensors: 8-bit, at most 3 dimensions larger than 1."""
    for t in operands:
        if not t.is_constant and t.dtype not in ("int8", "uint8"):
            return f"tensor {t.name!r} is {t.dtype}; the Edge TPU runs 8-bit quantized tensors only"
        # The rule is about the data flowing through the TPU; weight tensors (4-D conv kernels)
        # are laid out by the compiler and are not limited.
        if not t.is_constant and _non_unit(t.shape) > 3:
            return f"tensor {t.name!r} {t.shape} has more than 3 dimensions larger than 1"
    return ""


def _limitation(op: OpInfo, tensors: list[TensorInfo]) -> str:
    """The per-op limitations of the supported-op table (options and shapes)."""
    opts = op.options
    if op.name in NO_FUSED_ACTIVATION and opts.get("fusedActivationFunction", 0) != 0:
        return f"{op.name} with a fused activation function is not supported"
    if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D") and opts.get("dilationWFactor", 1) != opts.get(
        "dilationHFactor", 1
    ):
        return f"{op.name} must use the same dilation in x and y"
    if op.name == "FULLY_CONNECTED":
        if opts.get("weightsFormat", 0) != 0:
            return "FULLY_CONNECTED supports only the default weights format"
        out = tensors[op.outputs[0]].shape
        if _non_unit(out) > 1:
            return f"FULLY_CONNECTED output {out} is not one-dimensional"
    if op.name == "SOFTMAX":
        shape = tensors[op.inputs[0]].shape
        if _non_unit(shape) > 1:
            return f"SOFTMAX input {shape} is not a 1-D tensor"
        if int(np.prod([abs(s) for s in shape])) > SOFTMAX_MAX_ELEMENTS:
            return f"SOFTMAX input has more than {SOFTMAX_MAX_ELEMENTS} elements"
    if op.name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
        shape = tensors[op.inputs[0]].shape
        if len(shape) == 4 and shape[0] != 1:
            return f"{op.name} input/output must be a 3-dimensional tensor (batch 1)"
    return ""


def _batch_axis_problem(op: OpInfo, operands: list[TensorInfo]) -> str:
    """Reductions, PAD, SPLIT and PACK may not touch the batch dimension (axis 0)."""
    for t in operands:
        values = t.constant() if t.is_constant else None
        if values is None or t.dtype not in ("int32", "int64"):
            continue
        axes = values.reshape(-1) if op.name != "PAD" else values.reshape(-1, 2)[0]
        if op.name == "PAD":
            if np.any(axes != 0):
                return "PAD may not pad the batch dimension"
        elif op.name in ("SPLIT",) and np.any(axes == 0):
            return "SPLIT may not split the batch dimension"
        elif op.name != "SPLIT" and np.any(axes == 0):
            return f"{op.name} may not operate on the batch dimension"
    if op.name == "PACK" and op.options.get("axis", 1) == 0:
        return "PACK may not pack along the batch dimension"
    return ""


def check_edgetpu(
    model: TFLiteFile, output_dir: Path | None = None, compile: bool = True
) -> TargetReport:
    """Check a model against the Edge TPU compiler's requirements (and compile it if possible).

    Args:
        model: The parsed model.
        output_dir: Where the compiler writes ``*_edgetpu.tflite`` and its log (default: beside
            the model, or nowhere for an in-memory model).
        compile: Run ``edgetpu_compiler`` when it is on PATH.

    Returns:
        The report. ``ok`` means every op maps to the Edge TPU.
    """
    hard, notes = _model_problems(model)
    rows, split_at = _map_ops(model)
    if hard:
        for r in rows:
            r.status, r.reason = FAILS, "the compiler refuses the whole model (see verdict)"
        notes.append(
            "NOT compiled: edgetpu_compiler refuses a model without 8-bit inputs and outputs"
        )
        verdict = (
            "FAILS: " + "; ".join(hard) + ". Convert with: edgenn convert RUN --target edgetpu "
            "(full int8, uint8 I/O)"
        )
    elif split_at is not None:
        mapped = sum(r.status == RUNS for r in rows)
        verdict = (
            f"PARTIAL: {mapped} of {len(rows)} ops map to the Edge TPU; op #{split_at} "
            f"({rows[split_at].op if split_at < len(rows) else '?'}) and everything after it run on the CPU."
        )
    else:
        verdict = f"OK: all {len(rows)} ops map to the Edge TPU (as the compiler's rules say)."
    ok = not hard and split_at is None
    details = _run_compiler(model, output_dir, notes) if compile and not hard else {}
    return TargetReport("edgetpu", ok, verdict, rows, notes, details)


def _model_problems(model: TFLiteFile) -> tuple[list[str], list[str]]:
    """What makes the compiler refuse the whole model, and model-level notes."""
    notes: list[str] = []
    hard: list[str] = []
    io = model.input_details + model.output_details
    float_io = [t for t in io if t.dtype not in ("int8", "uint8")]
    if float_io:
        names = ", ".join(f"{t.name} ({t.dtype})" for t in float_io)
        hard.append(f"inputs/outputs must be uint8 or int8; found {names}")
    if not {"int8", "uint8"} & model.dtypes:
        hard.append("the model is not quantized (no 8-bit activations)")
    dynamic = [t for t in model.tensors if any(s < 0 for s in t.shape)]
    if dynamic:
        hard.append(
            f"{len(dynamic)} tensors have dynamic shapes, e.g. {dynamic[0].name} {dynamic[0].shape}"
        )
    if model.subgraphs > 1:
        notes.append(f"{model.subgraphs} subgraphs: only the main one is mapped")
    return hard, notes


def _map_ops(model: TFLiteFile) -> tuple[list[OpRow], int | None]:
    """One row per op of the main graph, and the op where the compiler splits it (if any)."""
    rows: list[OpRow] = []
    split_at = None
    for op in (o for o in model.ops if o.subgraph == 0):
        if split_at is not None:
            rows.append(
                OpRow(op.index, op.name, op.version, FALLS_BACK,
                      f"after op #{split_at}: the compiler splits the graph once")
            )  # fmt: skip
            continue
        problem = op_problem(op, model.tensors)
        if problem:
            split_at = op.index
            rows.append(OpRow(op.index, op.name, op.version, FALLS_BACK, problem))
        else:
            rows.append(OpRow(op.index, op.name, op.version, RUNS))
    return rows, split_at


def _run_compiler(model: TFLiteFile, output_dir: Path | None, notes: list[str]) -> dict[str, Any]:
    compiler = shutil.which("edgetpu_compiler")
    source = model.path
    out_dir = Path(output_dir) if output_dir else (source.parent if source else None)
    if compiler is None:
        command = f"edgetpu_compiler -s -o {out_dir or 'OUTDIR'} {source or 'MODEL.tflite'}"
        notes.append(
            "edgetpu_compiler is not on PATH: the check above follows the compiler's documented "
            f"rules; it was NOT compiled. To compile, run: {command}  ({INSTALL_COMPILER})"
        )
        return {"compiled": False, "command": command}
    with tempfile.TemporaryDirectory() as tmp:
        if source is None:
            source = Path(tmp) / "model.tflite"
            source.write_bytes(model.data)
        out_dir = out_dir or Path(tmp)
        proc = subprocess.run(
            [compiler, "-s", "-o", str(out_dir), str(source)], capture_output=True, text=True
        )
    log = proc.stdout + proc.stderr
    compiled = out_dir / f"{source.stem}_edgetpu.tflite"
    table = parse_compiler_log(log)
    notes.append(
        f"edgetpu_compiler ran (exit {proc.returncode}): "
        + (f"wrote {compiled}" if compiled.is_file() else "no compiled model")
    )
    return {"compiled": compiled.is_file(), "compiled_model": str(compiled), "log": log,
            "compiler_ops": table}  # fmt: skip


_LOG_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(.+?)\s*$")


def parse_compiler_log(log: str) -> list[dict[str, Any]]:
    """The per-op table that ``edgetpu_compiler -s`` prints.

    The table has the columns ``Operator  Count  Status``, e.g.
    ``CONV_2D   3   Mapped to Edge TPU``.

    Args:
        log: The compiler's output.

    Returns:
        ``[{"op", "count", "status"}]``.
    """
    rows = []
    in_table = False
    for line in log.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status", line):
            in_table = True
            continue
        if in_table:
            if not line.strip() or set(line.strip()) <= {"-"}:
                continue
            match = _LOG_ROW.match(line.strip())
            if not match:
                in_table = False
                continue
            rows.append({"op": match[1], "count": int(match[2]), "status": match[3]})
    return rows
