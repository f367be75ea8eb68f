"""[device] Turn an int8 .tflite into TFLite Micro sources: model array, op resolver, config, example.

The guesswork is taken out and checked on the host every time:

- the model bytes are aligned for TFLM first (the aligner that the ``tflite-micro`` package ships)
  and written as ``alignas(16) const unsigned char g_NAME_model_data[]``; the generated ``.cc`` is
  parsed back and must equal the aligned bytes;
- ``NAME_ops.h`` registers exactly the ops the model uses, each an ``Add...()`` method of
  ``tflite::MicroMutableOpResolver`` that the pinned TFLM build has a kernel for;
- the tensor arena is the smallest that works in TFLM's own interpreter (bisection), plus a margin;
- the aligned bytes run in TFLM with that arena on test images and must give bit-exact the
  outputs of LiteRT's reference kernels (no XNNPACK);
- the data and config sources compile with the system C++ compiler (``g++ -std=c++17 -c``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import optional, tflite_model
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_directory
from edgenn.targets.micro import (
    DEFAULT_ARENA_MARGIN,
    _runtime,
    _static_problems,
    smallest_arena,
)

LAYOUTS = ("cmake", "arduino")
METHODS_FILE = Path(__file__).resolve().parent / "tflm_resolver_methods.json"


def resolver_methods() -> dict[str, str]:
    """Op -> ``MicroMutableOpResolver`` method, as TFLM's header declares them.

    Returns:
        The table (header methods, then the few rule-derived ones for newer kernels).
    """
    doc = json.loads(METHODS_FILE.read_text())
    return {**doc["derived"], **doc["methods"]}


def resolver_method(op: str) -> str:
    """The resolver method that registers a builtin op, checked against TFLM's header.

    Args:
        op: TFLite builtin op name.

    Returns:
        The method name.

    Raises:
        EdgennError: TFLM's resolver has no method for the op.
    """
    methods = resolver_methods()
    if op not in methods:
        raise EdgennError(f"TFLite Micro's MicroMutableOpResolver has no method for {op}.")
    return methods[op]


def tflm_kernels() -> set[str]:
    """Builtin ops the installed TFLM build has kernels for, read from its library's symbols."""
    runtime = _runtime()
    library = Path(runtime.__file__).parent / "_runtime.so"
    nm = shutil.which("nm")
    if nm is None or not library.is_file():
        raise EdgennError(
            "Cannot list TFLM's kernels: `nm` (binutils) or the TFLM library is missing."
        )
    out = subprocess.run(
        [nm, "-DC", str(library)], capture_output=True, text=True, check=False
    ).stdout
    return set(re.findall(r"Register_([A-Z0-9_]+)\(", out))


@dataclasses.dataclass
class FirmwareResult:
    """What :func:`export_firmware` wrote and verified (``--json`` prints it)."""

    output: str
    name: str
    layout: str
    files: list[str]
    ops: list[str]
    flash_bytes: int
    arena_min_bytes: int
    arena_bytes: int
    arena_margin_percent: float
    ram_bytes: int
    io_bytes: int
    verified_examples: int
    exact_examples: int
    max_lsb_difference: int
    bit_exact: bool
    compiled: list[str]
    checks: list[str]


def _c_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise UsageError(f"--name {name!r} is not a C identifier (letters, digits, underscores).")
    return name


def _align(data: bytes) -> bytes:
    aligner = optional.require(
        "tflite_micro.tensorflow.lite.micro.tools.tflite_flatbuffer_align_wrapper",
        "edgenn firmware",
    )
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.tflite", Path(tmp) / "out.tflite"
        src.write_bytes(data)
        aligner.align_tflite_model(str(src), str(dst))
        return dst.read_bytes()


def refusals(model: tflite_model.TFLiteFile) -> list[str]:
    """Why a model cannot go to a microcontroller, one line per problem (empty when it can).

    Args:
        model: The parsed model.

    Returns:
        The problems, each with what to do.
    """
    problems = []
    fix = "Convert with: edgenn convert RUN --target micro"
    dtypes = {t.dtype for t in model.input_details + model.output_details}
    if model.subgraphs > 1:
        problems.append(f"{model.subgraphs} subgraphs: control flow is not supported here. {fix}")
    if not dtypes <= {"int8", "uint8", "int16"}:
        problems.append(
            f"inputs/outputs are {', '.join(sorted(dtypes))}; a microcontroller model is int8 "
            f"end to end. {fix}"
        )
    float_weights = {
        t.dtype for t in model.tensors if t.is_constant and t.dtype in ("float32", "float16")
    }
    if float_weights:
        problems.append(
            f"{'/'.join(sorted(float_weights))} weights: the model is not fully int8. {fix}"
        )
    for index, reason in sorted(_static_problems(model).items()):
        problems.append(f"op #{index} {model.ops[index].name}: {reason}. {fix}")
    kernels = tflm_kernels()
    for op in model.ops:
        if not op.custom and op.name not in kernels:
            problems.append(f"op #{op.index} {op.name}: TFLM has no kernel for it. {fix}")
    return list(dict.fromkeys(problems))


def _array(values: bytes, per_line: int = 12) -> str:
    lines = []
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in values[i : i + per_line]) + ",")
    return "\n".join(lines)


def parse_c_array(source: str, symbol: str) -> bytes:
    """Read a generated ``const unsigned char SYMBOL[] = {...}`` back into bytes.

    Args:
        source: The .cc text.
        symbol: Array name.

    Returns:
        The bytes.

    Raises:
        EdgennError: The array is not there.
    """
    match = re.search(rf"{re.escape(symbol)}\[\]\s*=\s*\{{(.*?)\}};", source, re.S)
    if not match:
        raise EdgennError(f"No array {symbol} in the generated source.")
    return bytes(int(tok, 16) for tok in re.findall(r"0x[0-9a-fA-F]{2}", match[1]))


#: numpy dtype -> (C type, TfLiteType) of an input or output tensor.
_C_TYPES = {
    "int8": ("int8_t", "kTfLiteInt8"),
    "uint8": ("uint8_t", "kTfLiteUInt8"),
    "int16": ("int16_t", "kTfLiteInt16"),
    "int32": ("int32_t", "kTfLiteInt32"),
    "float32": ("float", "kTfLiteFloat32"),
}


def _c_dtype(dtype: str) -> str:
    return _C_TYPES[dtype][0]


def _tflite_type(dtype: str) -> str:
    return _C_TYPES[dtype][1]


def _sample(model: tflite_model.TFLiteFile, count: int, dataset: str | None) -> np.ndarray:
    """Quantized test inputs: the data set's test split when it fits the model, else random."""
    from edgenn.artifact import model_info
    from edgenn.runtime import Runner

    runner = Runner(model, xnnpack=False)
    shape = tuple(model.input_details[0].shape)
    try:
        if dataset is None:
            raise EdgennError("no data set")
        info = model_info(model)
        from edgenn import datasets as data_mod
        from edgenn import preprocess

        spec_data = data_mod.DataSpec(dataset=dataset)
        ds = data_mod.load_dataset(spec_data)
        splits = data_mod.make_splits(spec_data, ds)
        x = data_mod.adapt_images(splits.x_test[:count], splits.spec, info.spec)
        floats = preprocess.pixels_to_input(x, info.spec)
        return np.stack([runner.quantize_input(f[None]) for f in floats])
    except EdgennError:
        rng = np.random.default_rng(0)
        dtype = np.dtype(model.input_details[0].dtype)
        lim = np.iinfo(dtype)
        return rng.integers(lim.min, lim.max + 1, size=(count, *shape)).astype(dtype)


def export_firmware(
    model_path: Path,
    output: Path,
    name: str | None = None,
    layout: str = "cmake",
    arena_margin: float = DEFAULT_ARENA_MARGIN,
    overwrite: bool = False,
    dataset: str | None = "fashion-mnist",
    verify_examples: int = 100,
    compile_check: bool = True,
) -> FirmwareResult:
    """Write TFLite Micro sources for an int8 model and verify them on the host.

    Args:
        model_path: The int8 ``.tflite``.
        output: Folder to create.
        name: C identifier prefix (default: the model file's stem).
        layout: ``cmake`` (``main.cc`` + ``CMakeLists.txt``) or ``arduino`` (an installable
            library: ``library.properties``, ``src/``, ``examples/``).
        arena_margin: Percent added to the measured minimum arena.
        overwrite: Replace an existing output folder.
        dataset: Data set whose test images verify TFLM against LiteRT (random inputs when the
            model does not fit it).
        verify_examples: How many inputs to compare.
        compile_check: Compile the data and config sources with ``g++``.

    Returns:
        The result.

    Raises:
        UsageError: Bad name, layout or margin.
        EdgennError: The model cannot run on a microcontroller (one line per problem), or a
            verification failed; nothing is left at ``output``.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"Unknown --layout {layout!r}; expected one of {', '.join(LAYOUTS)}.")
    if arena_margin < 0:
        raise UsageError(f"--arena-margin must be 0 or more; received {arena_margin}.")
    model = tflite_model.load(model_path)
    name = _c_name(name or re.sub(r"\W", "_", Path(model_path).stem))
    problems = refusals(model)
    if problems:
        raise EdgennError(
            f"{model_path} cannot go to a microcontroller:\n  " + "\n  ".join(problems)
        )
    aligned = _align(model.data)
    aligned_model = tflite_model.load(aligned)
    arena = smallest_arena(aligned, arena_margin)
    ops = list(dict.fromkeys(op.name for op in aligned_model.ops))
    methods = [resolver_method(op) for op in ops]
    info = None
    try:
        from edgenn.artifact import model_info

        info = model_info(model)
    except EdgennError:
        pass
    inputs = _sample(model, verify_examples, dataset)
    files = _render(name, layout, aligned, aligned_model, ops, methods, arena, info, inputs[0])

    with atomic_directory(Path(output), overwrite=overwrite) as tmp:
        for rel, text in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        checks, compiled, exact, worst = _verify(
            tmp, name, layout, aligned, aligned_model, arena, inputs, compile_check
        )
        readme = _readme(name, layout, aligned, arena, ops, methods, aligned_model, info, checks)
        (tmp / "README.md").write_text(readme)
    io_bytes = sum(
        int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
        for t in model.input_details + model.output_details
    )
    return FirmwareResult(
        output=str(output),
        name=name,
        layout=layout,
        files=sorted(files),
        ops=ops,
        flash_bytes=len(aligned),
        arena_min_bytes=arena.minimum_bytes,
        arena_bytes=arena.recommended_bytes,
        arena_margin_percent=arena.margin_percent,
        ram_bytes=arena.recommended_bytes,
        io_bytes=io_bytes,
        verified_examples=len(inputs),
        exact_examples=exact,
        max_lsb_difference=worst,
        bit_exact=exact == len(inputs),
        compiled=compiled,
        checks=checks,
    )


def _src_dir(layout: str, name: str) -> str:
    return "src/" if layout == "arduino" else ""


def _render(name, layout, aligned, model, ops, methods, arena, info, example) -> dict[str, str]:
    src = _src_dir(layout, name)
    inp, out = model.input_details[0], model.output_details[0]
    guard = name.upper()
    labels = info.labels if info else []
    expected = _reference_output(aligned, example)
    files: dict[str, str] = {}
    files[
        f"{src}{name}_model_data.h"
    ] = f"""// Generated by edgenn firmware. The model flatbuffer, aligned for TFLite Micro.
#ifndef {guard}_MODEL_DATA_H_
#define {guard}_MODEL_DATA_H_

extern const unsigned char g_{name}_model_data[];
extern const unsigned int g_{name}_model_data_size;

#endif  // {guard}_MODEL_DATA_H_
"""
    files[
        f"{src}{name}_model_data.cc"
    ] = f"""// Generated by edgenn firmware from {model.path.name if model.path else "the model"}: {len(aligned)} bytes.
// TFLite Micro reads tensors in place, so the array must be 16-byte aligned.
#include "{name}_model_data.h"

alignas(16) const unsigned char g_{name}_model_data[] = {{
{_array(aligned)}
}};
const unsigned int g_{name}_model_data_size = {len(aligned)};
"""
    adds = "\n".join(f"    if (resolver.{m}() != kTfLiteOk) return kTfLiteError;" for m in methods)
    files[
        f"{src}{name}_ops.h"
    ] = f"""// Generated by edgenn firmware: exactly the ops this model uses ({len(ops)}).
#ifndef {guard}_OPS_H_
#define {guard}_OPS_H_

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

using {name}_OpResolver = tflite::MicroMutableOpResolver<{len(ops)}>;

// Registers {", ".join(ops)}.
inline TfLiteStatus {name}_RegisterOps({name}_OpResolver& resolver) {{
{adds}
    return kTfLiteOk;
}}

#endif  // {guard}_OPS_H_
"""
    label_lines = ",\n".join(f"    {json.dumps(label)}" for label in labels)
    files[f"{src}{name}_config.h"] = f"""// Generated by edgenn firmware.
#ifndef {guard}_CONFIG_H_
#define {guard}_CONFIG_H_

#include <stdint.h>

// Tensor arena: the smallest that TFLite Micro's reference interpreter needed on the host
// ({arena.minimum_bytes} bytes, found by bisection) plus {arena.margin_percent:g}%, because kernels
// optimized for some MCUs (CMSIS-NN, ESP-NN, Xtensa) allocate scratch buffers the reference
// kernels do not. The input and output tensors live inside the arena.
constexpr int k{name}_ArenaMinimumBytes = {arena.minimum_bytes};
constexpr int k{name}_ArenaBytes = {arena.recommended_bytes};

constexpr int k{name}_InputDims = {len(inp.shape)};
constexpr int k{name}_InputShape[] = {{{", ".join(str(s) for s in inp.shape)}}};
constexpr int k{name}_InputSize = {int(np.prod(inp.shape))};
typedef {_c_dtype(inp.dtype)} {name}_input_t;  // {inp.dtype}
constexpr float k{name}_InputScale = {inp.scale[0] if inp.scale else 0.0!r}f;
constexpr int k{name}_InputZeroPoint = {inp.zero_point[0] if inp.zero_point else 0};

constexpr int k{name}_OutputDims = {len(out.shape)};
constexpr int k{name}_OutputShape[] = {{{", ".join(str(s) for s in out.shape)}}};
constexpr int k{name}_OutputSize = {int(np.prod(out.shape))};
typedef {_c_dtype(out.dtype)} {name}_output_t;  // {out.dtype}
constexpr float k{name}_OutputScale = {out.scale[0] if out.scale else 0.0!r}f;
constexpr int k{name}_OutputZeroPoint = {out.zero_point[0] if out.zero_point else 0};

constexpr int k{name}_LabelCount = {len(labels)};
constexpr const char* k{name}_Labels[] = {{
{label_lines if labels else '    ""'}
}};

#endif  // {guard}_CONFIG_H_
"""
    files[
        f"{src}{name}_example_data.h"
    ] = f"""// Generated by edgenn firmware: one test input and the output edgenn computed for it on the host
// with LiteRT's reference kernels (TFLite Micro must reproduce it exactly).
#ifndef {guard}_EXAMPLE_DATA_H_
#define {guard}_EXAMPLE_DATA_H_

#include "{name}_config.h"

const {name}_input_t k{name}_ExampleInput[k{name}_InputSize] = {{
    {", ".join(str(int(v)) for v in example.reshape(-1))}
}};
const {name}_output_t k{name}_ExpectedOutput[k{name}_OutputSize] = {{
    {", ".join(str(int(v)) for v in expected.reshape(-1))}
}};

#endif  // {guard}_EXAMPLE_DATA_H_
"""
    program = _program(name, _tflite_type(inp.dtype))
    if layout == "cmake":
        files["main.cc"] = program
        files[
            "CMakeLists.txt"
        ] = f"""# Generated by edgenn firmware. Point TFLM_DIR at a TFLite Micro source tree (or add these
# files to your MCU project and link against your port's TFLM library).
cmake_minimum_required(VERSION 3.16)
project({name} CXX)
set(CMAKE_CXX_STANDARD 17)
set(TFLM_DIR "" CACHE PATH "tflite-micro checkout with its third_party downloads")
add_executable({name} main.cc {name}_model_data.cc)
target_include_directories({name} PRIVATE ${{TFLM_DIR}}
  ${{TFLM_DIR}}/tensorflow/lite/micro/tools/make/downloads/flatbuffers/include
  ${{TFLM_DIR}}/tensorflow/lite/micro/tools/make/downloads/gemmlowp)
target_link_libraries({name} PRIVATE ${{TFLM_DIR}}/gen/linux_x86_64_default/lib/libtensorflow-microlite.a)
"""
    else:
        files["library.properties"] = f"""name={name}
version=0.1.0
author=edgenn
maintainer=edgenn
sentence=The {name} model for TensorFlow Lite Micro, generated by edgenn.
paragraph=Model data, op resolver, arena size and an example that checks one inference.
category=Data Processing
url=https://pypi.org/project/edgenn/
architectures=*
depends=Arduino_TensorFlowLite
"""
        files[f"examples/{name}/{name}.ino"] = _sketch(name, _tflite_type(inp.dtype))
    files["README.md"] = ""  # written once the verification figures are known
    return files


def _reference_output(aligned: bytes, example: np.ndarray) -> np.ndarray:
    from edgenn.runtime import Runner

    ref = Runner(aligned, xnnpack=False)
    ref.set_input(example)
    ref.invoke()
    return ref.interpreter.get_tensor(ref.output_details[0]["index"])


def _program(name: str, input_type: str) -> str:
    return f"""// Generated by edgenn firmware: run the embedded example input and compare with the output
// edgenn computed on the host. Exit code 0 when every output value matches.
#include <cstdio>
#include <cstring>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "{name}_config.h"
#include "{name}_example_data.h"
#include "{name}_model_data.h"
#include "{name}_ops.h"

namespace {{
alignas(16) uint8_t tensor_arena[k{name}_ArenaBytes];
}}

int main() {{
  const tflite::Model* model = tflite::GetModel(g_{name}_model_data);
  {name}_OpResolver resolver;
  if ({name}_RegisterOps(resolver) != kTfLiteOk) return 1;
  tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, k{name}_ArenaBytes);
  if (interpreter.AllocateTensors() != kTfLiteOk) {{
    std::printf("AllocateTensors failed: raise k{name}_ArenaBytes\\n");
    return 1;
  }}
  TfLiteTensor* input = interpreter.input(0);
  if (input->type != {input_type}) return 1;
  std::memcpy(input->data.raw, k{name}_ExampleInput, sizeof(k{name}_ExampleInput));
  if (interpreter.Invoke() != kTfLiteOk) return 1;
  const TfLiteTensor* output = interpreter.output(0);
  int mismatches = 0;
  for (int i = 0; i < k{name}_OutputSize; ++i) {{
    {name}_output_t got = reinterpret_cast<const {name}_output_t*>(output->data.raw)[i];
    if (got != k{name}_ExpectedOutput[i]) ++mismatches;
  }}
  std::printf("{name}: %d of %d outputs differ; arena used %u of %d bytes\\n", mismatches,
              k{name}_OutputSize, static_cast<unsigned>(interpreter.arena_used_bytes()),
              k{name}_ArenaBytes);
  return mismatches == 0 ? 0 : 1;
}}
"""


def _sketch(name: str, input_type: str) -> str:
    return f"""// Generated by edgenn firmware: run the embedded example and print whether TFLite Micro on this
// board gives the output edgenn computed on the host.
#include <TensorFlowLite.h>
#include <string.h>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include <{name}_config.h>
#include <{name}_example_data.h>
#include <{name}_model_data.h>
#include <{name}_ops.h>

alignas(16) static uint8_t tensor_arena[k{name}_ArenaBytes];

void setup() {{
  Serial.begin(115200);
  while (!Serial) {{}}
  const tflite::Model* model = tflite::GetModel(g_{name}_model_data);
  static {name}_OpResolver resolver;
  if ({name}_RegisterOps(resolver) != kTfLiteOk) {{ Serial.println("op registration failed"); return; }}
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, k{name}_ArenaBytes);
  if (interpreter.AllocateTensors() != kTfLiteOk) {{ Serial.println("arena too small"); return; }}
  TfLiteTensor* input = interpreter.input(0);
  if (input->type != {input_type}) {{ Serial.println("unexpected input type"); return; }}
  memcpy(input->data.raw, k{name}_ExampleInput, sizeof(k{name}_ExampleInput));
  unsigned long start = micros();
  if (interpreter.Invoke() != kTfLiteOk) {{ Serial.println("invoke failed"); return; }}
  unsigned long elapsed = micros() - start;
  const TfLiteTensor* output = interpreter.output(0);
  int mismatches = 0;
  for (int i = 0; i < k{name}_OutputSize; ++i) {{
    if (reinterpret_cast<const {name}_output_t*>(output->data.raw)[i] != k{name}_ExpectedOutput[i]) ++mismatches;
  }}
  Serial.print("{name}: outputs differing from the host: ");
  Serial.print(mismatches);
  Serial.print("; inference us: ");
  Serial.println(elapsed);
}}

void loop() {{}}
"""


def _readme(name, layout, aligned, arena, ops, methods, model, info, checks) -> str:
    inp, out = model.input_details[0], model.output_details[0]
    labels = info.labels if info else []
    files = "src/" if layout == "arduino" else ""
    how = (
        f"Copy this folder into your Arduino `libraries/` folder (or zip it and use Sketch > Include "
        f"Library > Add .ZIP Library). It depends on the Arduino_TensorFlowLite library. Open "
        f"File > Examples > {name} > {name}, upload, and watch the serial monitor."
        if layout == "arduino"
        else f"Add `{name}_model_data.cc` and the headers to your MCU project (or build `main.cc` on a "
        "host against a TFLite Micro tree: `cmake -DTFLM_DIR=... . && make`)."
    )
    verified = "\n".join(f"- {c}" for c in checks)
    return f"""# {name}: TFLite Micro sources generated by edgenn

{how}

| figure | bytes |
|---|---|
| flash: model | {len(aligned):,} |
| RAM: tensor arena (measured minimum {arena.minimum_bytes:,} + {arena.margin_percent:g}%) | {arena.recommended_bytes:,} |

Input: {inp.dtype} {inp.shape}, scale {inp.scale[0] if inp.scale else 0:.6g}, zero point {inp.zero_point[0] if inp.zero_point else 0}.
Output: {out.dtype} {out.shape}, scale {out.scale[0] if out.scale else 0:.6g}, zero point {out.zero_point[0] if out.zero_point else 0}.
Labels: {", ".join(labels) if labels else "(none embedded)"}.

Files in `{files or "./"}`: `{name}_model_data.cc/.h` (the aligned model), `{name}_ops.h`
(a `MicroMutableOpResolver<{len(ops)}>` with {", ".join(f"`{m}()`" for m in methods)}),
`{name}_config.h` (arena, shapes, quantization, labels), `{name}_example_data.h` (one test input
and its expected output).

Verified on the host when these files were written:

{verified}

Not verified here: a build against a TFLite Micro tree and a run on a board. Optimized kernels for
your MCU may need more arena than the host reference; if `AllocateTensors()` fails, raise
`k{name}_ArenaBytes`.
"""


def _verify(folder, name, layout, aligned, model, arena, inputs, compile_check):
    src = folder / _src_dir(layout, name)
    checks = []
    decoded = parse_c_array((src / f"{name}_model_data.cc").read_text(), f"g_{name}_model_data")
    if decoded != aligned:
        raise EdgennError(
            "The generated model array does not decode to the aligned model; nothing was written."
        )
    checks.append(f"model array decodes to the {len(aligned)} aligned bytes")
    runtime = _runtime()
    from edgenn.runtime import Runner

    micro = runtime.Interpreter.from_bytes(decoded, arena_size=arena.recommended_bytes)
    ref = Runner(decoded, xnnpack=False)
    exact, worst = 0, 0
    for x in inputs:
        ref.set_input(x)
        ref.invoke()
        expected = ref.interpreter.get_tensor(ref.output_details[0]["index"])
        micro.set_input(x, 0)
        micro.invoke()
        diff = int(np.abs(micro.get_output(0).astype(np.int32) - expected.astype(np.int32)).max())
        exact += diff == 0
        worst = max(worst, diff)
    # TFLM's and TFLite's int8 kernels round a few boundary cases differently (seen: 1 LSB in
    # FULLY_CONNECTED and SOFTMAX on an MLP); more than that is a real disagreement.
    if worst > 1:
        raise EdgennError(
            f"TFLite Micro and LiteRT's reference kernels disagree by up to {worst} LSB on "
            f"{len(inputs) - exact} of {len(inputs)} inputs; nothing was written."
        )
    checks.append(
        f"TFLM with a {arena.recommended_bytes}-byte arena matches LiteRT's reference kernels "
        f"bit-exactly on {exact} of {len(inputs)} inputs"
        + (f" (the others within {worst} LSB)" if exact < len(inputs) else "")
    )
    compiled = []
    if compile_check:
        compiler = shutil.which("g++")
        if compiler is None:
            checks.append("NOT compiled: no g++ on PATH")
        else:
            for unit in (f"{name}_model_data.cc",):
                _compile(compiler, src / unit, src)
                compiled.append(unit)
            # The config and example headers on their own (they need only <stdint.h>).
            probe = src / f".{name}_config_check.cc"
            probe.write_text(f'#include "{name}_config.h"\n#include "{name}_example_data.h"\n')
            try:
                _compile(compiler, probe, src)
            finally:
                probe.unlink()
            compiled.extend([f"{name}_config.h", f"{name}_example_data.h"])
            checks.append("g++ -std=c++17 -c compiled " + ", ".join(compiled))
    return checks, compiled, exact, worst


def _compile(compiler: str, source: Path, include: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                compiler,
                "-std=c++17",
                "-Wall",
                "-Werror",
                "-c",
                str(source),
                "-I",
                str(include),
                "-o",
                f"{tmp}/x.o",
            ],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise EdgennError(
            f"g++ could not compile {source.name}: {proc.stderr.strip()[:500]}; nothing was written."
        )


def summary(result: FirmwareResult) -> dict[str, Any]:
    """The ``--json`` document."""
    return dataclasses.asdict(result)
