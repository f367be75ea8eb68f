"""[device] Check generated firmware sources on the host before they are kept.

Three checks, each a line in the README and in ``edgenn firmware``'s result:

- the model array in ``NAME_model_data.cc`` parses back to exactly the aligned model bytes;
- those bytes run in TFLite Micro's reference interpreter with the generated arena and give the
  outputs of LiteRT's reference kernels (no XNNPACK) on the test inputs;
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

#: TFLM's and TFLite's int8 kernels round a few boundary cases differently (seen: 1 LSB in
#: FULLY_CONNECTED and SOFTMAX on an MLP); more than this is a real disagreement.
MAX_LSB_DIFFERENCE = 1
#: How the sources are compiled: warnings are errors, so a sloppy template fails here.
COMPILE_FLAGS = ("-std=c++17", "-Wall", "-Werror", "-c")


@dataclasses.dataclass
class Verification:
    """What the host checks found.

    Attributes:
        checks: One line per check that passed (or was skipped, and why).
        compiled: Sources and headers ``g++`` compiled.
        exact: Inputs on which TFLM and LiteRT agree bit-exactly.
        worst: Largest difference on any output value, in LSB.
    """

    checks: list[str]
    compiled: list[str]
    exact: int
    worst: int


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


def compare(data: bytes, arena_bytes: int, inputs: np.ndarray) -> tuple[int, int]:
    """Run each input in TFLM (with the given arena) and in LiteRT's reference kernels.

    Args:
        data: The aligned model bytes.
        arena_bytes: The tensor arena the firmware gets.
        inputs: Raw inputs, one per row.

    Returns:
        (inputs with bit-exact outputs, largest difference in LSB).
    """
    micro = tflm.Interpreter(data, arena_bytes)
    ref = Runner(data, xnnpack=False)
    exact, worst = 0, 0
    for x in inputs:
        expected = reference_output(ref, x)
        got = micro.run(x)
        diff = int(np.abs(got.astype(np.int32) - expected.astype(np.int32)).max())
        exact += diff == 0
        worst = max(worst, diff)
    return exact, worst


def check_agreement(data: bytes, arena_bytes: int, inputs: np.ndarray) -> tuple[str, int, int]:
    """TFLM must agree with LiteRT's reference kernels within :data:`MAX_LSB_DIFFERENCE`.

    Returns:
        The check's line, the bit-exact count and the largest difference.

    Raises:
        EdgennError: They disagree by more.
    """
    exact, worst = compare(data, arena_bytes, inputs)
    if worst > MAX_LSB_DIFFERENCE:
        raise EdgennError(
            f"TFLite Micro and LiteRT's reference kernels disagree by up to {worst} LSB on "
            f"{len(inputs) - exact} of {len(inputs)} inputs; nothing was written."
        )
    line = (
        f"TFLM with a {arena_bytes}-byte arena matches LiteRT's reference kernels "
        f"bit-exactly on {exact} of {len(inputs)} inputs"
    )
    if exact < len(inputs):
        line += f" (the others within {worst} LSB)"
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
    folder: Path, project: render.Project, inputs: np.ndarray, compile_check: bool = True
) -> Verification:
    """Run every host check on the sources written into ``folder``.

    Args:
        folder: The output folder (still the temporary one).
        project: What was generated.
        inputs: Raw test inputs.
        compile_check: Compile the data and config sources with ``g++``.

    Returns:
        What was found.

    Raises:
        EdgennError: A check failed.
    """
    source_dir = folder / project.source_dir
    checks = [check_array(source_dir, project.name, project.data)]
    line, exact, worst = check_agreement(project.data, project.arena.recommended_bytes, inputs)
    checks.append(line)
    compiled: list[str] = []
    if compile_check:
        line, compiled = compile_sources(source_dir, project.name)
        checks.append(line)
    return Verification(checks, compiled, exact, worst)
