"""Measure the highest version of every builtin op that a TFLite runtime can resolve.

    # 1. write one single-op model per (op, version) with the schema ai-edge-litert ships:
    .venv/bin/python scripts/probe_op_versions.py make /tmp/op-probes
    # 2. in an environment with the runtime to measure (its own venv; tflite-runtime 2.14 needs
    #    numpy<2 and must not share a process with TensorFlow):
    /tmp/tfl214/bin/python scripts/probe_op_versions.py probe /tmp/op-probes tflite_runtime > out.json

The interpreter resolves every op when it is constructed ("Didn't find op for builtin opcode 'X'
version 'N'") and only runs kernels at allocate/invoke time, which the probe never calls, so an
op with dummy tensors is enough. The result feeds edgenn/targets/op_versions.json.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

MAX_VERSION = 16


def make(folder: Path) -> None:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    folder.mkdir(parents=True, exist_ok=True)
    ops = {
        k: v
        for k, v in vars(s.BuiltinOperator).items()
        if not k.startswith("_") and isinstance(v, int)
    }
    for name, code in ops.items():
        if name in ("CUSTOM", "DELEGATE", "PLACEHOLDER_FOR_GREATER_OP_CODES"):
            continue
        for version in range(1, MAX_VERSION + 1):
            model = s.ModelT()
            model.version = 3
            opcode = s.OperatorCodeT()
            opcode.builtinCode = code
            opcode.deprecatedBuiltinCode = min(code, 127)
            opcode.version = version
            model.operatorCodes = [opcode]
            tensors = []
            for i in range(2):
                t = s.TensorT()
                t.shape = [1]
                t.type = s.TensorType.FLOAT32
                t.buffer = 0
                t.name = f"t{i}"
                tensors.append(t)
            op = s.OperatorT()
            op.opcodeIndex = 0
            op.inputs = [0]
            op.outputs = [1]
            sg = s.SubGraphT()
            sg.tensors = tensors
            sg.inputs = [0]
            sg.outputs = [1]
            sg.operators = [op]
            model.subgraphs = [sg]
            model.buffers = [s.BufferT()]
            b = flatbuffers.Builder(1024)
            b.Finish(model.Pack(b), file_identifier=b"TFL3")
            (folder / f"{name}__{version}.tflite").write_bytes(bytes(b.Output()))


def probe(folder: Path, module_name: str) -> None:
    module = importlib.import_module(f"{module_name}.interpreter")
    resolver = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    found: dict[str, int] = {}
    for path in sorted(folder.glob("*.tflite")):
        name, version = path.stem.rsplit("__", 1)
        try:
            module.Interpreter(
                model_content=path.read_bytes(), experimental_op_resolver_type=resolver
            )
            ok = True
        except (RuntimeError, ValueError) as exc:
            ok = "Didn't find op" not in str(exc) and "Op builtin_code out of range" not in str(exc)
        if ok:
            found[name] = max(found.get(name, 0), int(version))
    json.dump(dict(sorted(found.items())), sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "make":
        make(folder)
    else:
        probe(folder, sys.argv[3])
