"""[device] Check generated firmware sources on the host before they are kept.

Three checks, each a line in the README and in ``edgenn firmware``'s result:

- the model array in ``NAME_model_data.cc`` parses back to exactly the aligned model bytes;
- those bytes run in TFLite Micro's Python interpreter on the test inputs, and its outputs are
  compared with LiteRT's reference kernels (no XNNPACK): bit-exact count, largest difference in
  LSB and top-class agreement are reported (TFLM's int8 kernels round a few boundary cases
  differently, so a difference is not a failure); both sets of outputs are kept for the compiled
  program's check (:mod:`firmware_export.build`), which must match TFLM's bit for bit;
- the data and config sources compile with the system C++ compiler (``g++ -std=c++17 -c``).

A failed check raises :class:`~edgenn.errors.EdgennError`; the caller writes into a temporary
folder, so nothing is left behind.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgenn import tflm
from edgenn.errors import EdgennError
from edgenn.runtime import Runner
from firmware_export import render

#: How the sources are compiled: warnings are errors, so a sloppy template fails here.
COMPILE_FLAGS = ("-std=c++17", "-Wall", "-Werror", "-c")


@dataclasses.dataclass
class Reference:
    """The outputs the firmware is checked against, one row per test input.

    Attributes:
        tflm: TFLite Micro's Python interpreter (the same kernels the firmware links: a compiled
            program must match it bit for bit).
        litert: LiteRT's reference kernels (no XNNPACK); TFLM's int8 kernels round a few boundary
            cases differently, so these are compared and reported, not required to match.
    """

    tflm: np.ndarray
    litert: np.ndarray


@dataclasses.dataclass
class Verification:
    """What the host checks found.

    Attributes:
        checks: One line per check that passed (or was skipped, and why).
        compiled: Sources and headers ``g++`` compiled.
        exact: Inputs on which TFLM (Python) and LiteRT agree bit-exactly.
        worst: Largest difference on any output value, in LSB.
        reference: The outputs of both, for the compiled program's check.
    """

    checks: list[str]
    compiled: list[str]
    exact: int
    worst: int
    reference: Reference


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


def reference_output(runner: Runner, x: np.ndarray) -> np.ndarray:
    """LiteRT's raw first output for one raw input.

    Args:
        runner: A runner built with ``xnnpack=False`` (the reference kernels, the ones TFLM's
            must match).
        x: The raw (quantized) input.

    Returns:
        The raw output.
    """
    runner.set_input(x)
    runner.invoke()
    return runner.interpreter.get_tensor(runner.output_details[0]["index"])


def check_array(source_dir: Path, name: str, data: bytes) -> str:
    """The generated model array must decode to the aligned model.

    Returns:
        The check's line.

    Raises:
        EdgennError: It does not.
    """
    path = source_dir / render.source_file("model_data.cc.tpl", name)
    if parse_c_array(path.read_text(), render.model_array(name)) != data:
        raise EdgennError(
            "The generated model array does not decode to the aligned model; nothing was written."
        )
    return f"model array decodes to the {len(data)} aligned bytes"


def reference_outputs(data: bytes, arena_bytes: int, inputs: np.ndarray) -> Reference:
    """Run each input in TFLM's Python interpreter (with the given arena) and in LiteRT.

    Args:
        data: The aligned model bytes.
        arena_bytes: The interpreter's tensor arena.
        inputs: Raw inputs, one per row.

    Returns:
        Both runtimes' raw outputs, stacked.
    """
    micro = tflm.Interpreter(data, arena_bytes)
    ref = Runner(data, xnnpack=False)
    tflm_out = [micro.run(x) for x in inputs]
    litert_out = [reference_output(ref, x).copy() for x in inputs]
    return Reference(np.stack(tflm_out), np.stack(litert_out))


def difference(got: np.ndarray, expected: np.ndarray) -> tuple[int, int, int]:
    """How far two stacks of raw outputs are apart.

    Args:
        got: Outputs, one row per input.
        expected: The outputs to compare with, same shape.

    Returns:
        (rows equal bit for bit, largest difference in LSB, rows with the same argmax).
    """
    n = len(got)
    a = got.reshape(n, -1).astype(np.int64)
    b = expected.reshape(n, -1).astype(np.int64)
    diff = np.abs(a - b).max(axis=1) if a.size else np.zeros(n, np.int64)
    same_top = int((a.argmax(axis=1) == b.argmax(axis=1)).sum()) if a.size else n
    return int((diff == 0).sum()), int(diff.max(initial=0)), same_top


def agreement_line(reference: Reference, arena_bytes: int) -> tuple[str, int, int]:
    """TFLM's Python interpreter against LiteRT's reference kernels, reported (never a failure).

    Returns:
        The check's line, the bit-exact count and the largest difference in LSB.
    """
    n = len(reference.tflm)
    exact, worst, same_top = difference(reference.tflm, reference.litert)
    line = (
        f"TFLM (Python interpreter, {arena_bytes}-byte arena) matches LiteRT's reference kernels "
        f"bit-exactly on {exact} of {n} inputs"
    )
    if exact < n:
        line += f" (the others within {worst} LSB; same top class on {same_top} of {n})"
    return line, exact, worst


def compile_sources(source_dir: Path, name: str) -> tuple[str, list[str]]:
    """Compile the model data source, and the config and example headers, with ``g++ -c``.

    Args:
        source_dir: Folder of the generated sources.
        name: The C prefix.

    Returns:
        The check's line and what was compiled (nothing when there is no ``g++``).

    Raises:
        EdgennError: A file does not compile.
    """
    compiler = shutil.which("g++")
    if compiler is None:
        return "NOT compiled: no g++ on PATH", []
    unit = render.source_file("model_data.cc.tpl", name)
    _compile(compiler, source_dir / unit, source_dir)
    # The config and example headers on their own (they need only <stdint.h>), through a probe
    # that includes both; it is removed before the folder is kept.
    probe = source_dir / f".{name}_config_check.cc"
    probe.write_text(render.fill("config_check.cc.tpl", {"name": name}))
    try:
        _compile(compiler, probe, source_dir)
    finally:
        probe.unlink()
    headers = [render.source_file(t, name) for t in ("config.h.tpl", "example_data.h.tpl")]
    compiled = [unit, *headers]
    return "g++ -std=c++17 -c compiled " + ", ".join(compiled), compiled


def _compile(compiler: str, source: Path, include: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [compiler, *COMPILE_FLAGS, str(source), "-I", str(include), "-o", f"{tmp}/x.o"],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise EdgennError(
            f"g++ could not compile {source.name}: {proc.stderr.strip()[:500]}; nothing was written."
        )


def verify(
    folder: Path,
    project: render.Project,
    inputs: np.ndarray,
    compile_check: bool = True,
    interpreter_arena: int | None = None,
) -> Verification:
    """Run every host check on the sources written into ``folder``.

    Args:
        folder: The output folder (still the temporary one).
        project: What was generated.
        inputs: Raw test inputs.
        compile_check: Compile the data and config sources with ``g++``.
        interpreter_arena: The Python interpreter's arena (default: the generated one; a compiled
            program can need less than the interpreter, and then the generated arena is too small
            for the interpreter).

    Returns:
        What was found.

    Raises:
        EdgennError: A check failed.
    """
    source_dir = folder / project.source_dir
    checks = [check_array(source_dir, project.name, project.data)]
    arena = interpreter_arena or project.arena.recommended_bytes
    reference = reference_outputs(project.data, arena, inputs)
    line, exact, worst = agreement_line(reference, arena)
    checks.append(line)
    compiled: list[str] = []
    if compile_check:
        line, compiled = compile_sources(source_dir, project.name)
        checks.append(line)
    return Verification(checks, compiled, exact, worst, reference)
