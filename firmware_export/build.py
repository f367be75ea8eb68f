"""[device] Build the generated project against TFLite Micro and run its check program.

``edgenn firmware --verify-build`` (with ``--tflm DIR`` or ``EDGENN_TFLM``) proves the sources
where they run:

1. configure the generated project with its own ``CMakeLists.txt`` against ``DIR`` (a folder made
   by TFLM's ``build.sh``, or a TFLite Micro tree where ``make microlite`` has run) in a scratch
   folder; the CMakeLists stops at configure time with one message when the library or
   ``-DTF_LITE_STATIC_MEMORY`` is missing, and that message becomes the error here;
2. build the check program (``check.cc``) and bisect the smallest tensor arena with it
   (:func:`measured_arena`), so the generated constant is the compiled program's minimum plus the
   margin (the Python interpreter's figure is a few hundred bytes higher);
3. rebuild with that constant and run every test input through the check program
   (:func:`compiled_check`): it must match TFLM's Python interpreter bit for bit (the first
   differing input fails the export), and is compared with LiteRT's reference kernels.

The output folder is still the temporary one of :func:`edgenn.fileio.atomic_directory` and the
build folder is a scratch one, so a failure leaves nothing behind. An Arduino library has no
CMakeLists: its ``src/`` files are built beside the host project files of the cmake layout.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgenn import tflm
from edgenn.errors import EdgennError, UsageError
from edgenn.tflm import ArenaResult
from firmware_export import render, verify

#: Environment variable naming the TFLite Micro build when ``--tflm`` is not given.
TFLM_ENV = "EDGENN_TFLM"
#: What ``--tflm`` accepts, for messages.
TFLM_WHAT = (
    "a folder made by TFLM's build.sh (with flags.txt), or a TFLite Micro tree where "
    "`make -f tensorflow/lite/micro/tools/make/Makefile microlite` has run"
)
#: Programs the build needs -> the Debian package that provides each.
TOOLS = {"cmake": "cmake", "make": "make"}
#: C++ compilers CMake finds on its own (``$CXX`` wins when set).
COMPILERS = ("c++", "g++")
#: The check program's exit code when AllocateTensors fails (see ``check.cc.tpl``).
ARENA_TOO_SMALL = 3

#: A progress callback: one message per stage.
Progress = Callable[[str], None]


@dataclasses.dataclass
class CompiledCheck:
    """The compiled check program on the test inputs (``--json``: ``compiled_check``).

    Attributes:
        images: Inputs run.
        bit_exact: Inputs whose outputs equal the TFLM Python interpreter's (always all of them:
            a difference fails the export).
        litert_exact: Inputs whose outputs equal LiteRT's reference kernels'.
        litert_max_lsb: Largest difference from LiteRT on any output value, in LSB.
        argmax_agree: Inputs whose top class is LiteRT's.
        arena_min_bytes: Smallest working arena, bisected on the compiled program.
    """

    images: int
    bit_exact: int
    litert_exact: int
    litert_max_lsb: int
    argmax_agree: int
    arena_min_bytes: int


def resolve_tflm(tflm_dir: Path | None, verify_build: bool) -> Path | None:
    """The TFLite Micro folder to build against, or None when no build is asked for.

    The programs the build needs are checked too (:func:`require_tools`), before any work.

    Args:
        tflm_dir: ``--tflm`` (giving it asks for the build).
        verify_build: ``--verify-build`` (without ``--tflm``, ``EDGENN_TFLM`` names the folder).

    Returns:
        The absolute folder, or None.

    Raises:
        UsageError: The build is asked for and no folder is named, or it is not a folder.
        EdgennError: A program the build needs is missing.
    """
    if tflm_dir is None and not verify_build:
        return None
    if tflm_dir is None:
        env = os.environ.get(TFLM_ENV, "").strip()
        if not env:
            raise UsageError(
                f"--verify-build needs a TFLite Micro build: pass --tflm DIR or set {TFLM_ENV}, "
                f"where DIR is {TFLM_WHAT}."
            )
        tflm_dir = Path(env)
    path = Path(tflm_dir).expanduser().resolve()
    if not path.is_dir():
        raise UsageError(f"--tflm {tflm_dir} is not a folder; expected {TFLM_WHAT}.")
    require_tools()
    return path


def require_tools() -> None:
    """Refuse up front when a program the build needs is missing.

    Raises:
        EdgennError: cmake, make or a C++ compiler is not on PATH (one line, the install command).
    """
    missing = {prog: pkg for prog, pkg in TOOLS.items() if shutil.which(prog) is None}
    cxx = os.environ.get("CXX", "").split()  # CXX may carry a launcher: "ccache g++"
    if not (shutil.which(cxx[0]) if cxx else any(shutil.which(c) for c in COMPILERS)):
        missing[cxx[0] if cxx else "a C++ compiler (c++ or g++)"] = "g++"
    if missing:
        raise EdgennError(
            f"--verify-build needs {' and '.join(missing)} on PATH, which "
            f"{'is' if len(missing) == 1 else 'are'} missing.",
            f"Install with: sudo apt-get install {' '.join(sorted(set(missing.values())))}",
        )


def _environment() -> dict[str, str]:
    """The build's environment: edgenn's own Python first on PATH.

    Reading a TFLM tree's flags parses its Makefile, which runs python3 scripts that need numpy
    and Pillow; edgenn's interpreter has both (they are its dependencies).
    """
    env = dict(os.environ)
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "python3").exists():
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def cmake_message(output: str) -> str:
    """CMake's first error as one line.

    The generated CMakeLists' own messages say what is missing and how to get it; CMake's other
    errors are prefixed with what was being done.

    Args:
        output: CMake's stdout and stderr.

    Returns:
        The message.
    """
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("CMake Error at"):
            body = []
            for text in lines[i + 1 :]:
                if text.startswith(("--", "CMake ")):
                    break
                body.append(text.strip())
            return re.sub(r"\s+", " ", " ".join(body)).strip() or line
        if line.startswith("CMake Error:"):
            return f"CMake could not configure the generated project: {line[12:].strip()}"
    rest = [ln.strip() for ln in lines if ln.strip()]
    return f"CMake could not configure the generated project: {rest[-1] if rest else 'no output'}"


def compiler_message(output: str) -> str:
    """The first compiler or linker error in a build's output, as one line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in lines:
        if re.search(r"error:|undefined reference|cannot find -l", line):
            return line[:400]
    return lines[-1][:400] if lines else "no message"


class HostBuild:
    """The generated project, configured and built with its CMakeLists.txt in a scratch folder.

    Args:
        folder: The output folder being written (the temporary one).
        project: What is generated there.
        scratch: An empty scratch folder (removed by the caller).
        tflm_dir: The TFLite Micro folder (``-DTFLM_DIR``).
        progress: Called with a message before each slow step.
    """

    def __init__(
        self,
        folder: Path,
        project: render.Project,
        scratch: Path,
        tflm_dir: Path,
        progress: Progress | None = None,
    ) -> None:
        self.folder = folder.resolve()
        self.name = project.name
        # A cmake layout is built where it is written; an Arduino library's src/ is copied beside
        # the cmake layout's host project files.
        self.source = self.folder if project.layout == "cmake" else scratch.resolve() / "project"
        self.build_dir = scratch.resolve() / "build"
        self.tflm_dir = tflm_dir
        self.progress = progress or (lambda message: None)
        self.project = project

    @property
    def check_program(self) -> Path:
        """The built check program."""
        return self.build_dir / render.check_target(self.name)

    def sync(self, project: render.Project) -> None:
        """Bring an Arduino library's host project up to date with its (re)written ``src/``."""
        self.project = project
        if self.source == self.folder:
            return
        files = {
            path.name: path.read_text()
            for path in (self.folder / project.source_dir).iterdir()
            if path.is_file()
        }
        files.update(render.render_host_project(project))
        render.write(self.source, files)

    def _run(self, args: list[str]) -> subprocess.CompletedProcess:
        self.source.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            args, capture_output=True, text=True, env=_environment(), cwd=self.source
        )

    def configure(self) -> None:
        """``cmake -S SOURCE -B BUILD -DTFLM_DIR=...``.

        Raises:
            EdgennError: The CMakeLists refused the TFLM folder (its message says what is missing
                and how to get it) or CMake failed.
        """
        self.progress(f"configuring with CMake against {self.tflm_dir}")
        self.sync(self.project)
        args = ["cmake", "-S", str(self.source), "-B", str(self.build_dir)]
        proc = self._run([*args, f"-DTFLM_DIR={self.tflm_dir}"])
        if proc.returncode != 0:
            raise EdgennError(cmake_message(proc.stdout + proc.stderr))

    def build(self, *targets: str) -> None:
        """``cmake --build BUILD --target ...`` (all targets when none is named).

        Raises:
            EdgennError: A file does not compile or link against this TFLite Micro.
        """
        self.progress(f"compiling {', '.join(targets) or 'the project'} (TFLM headers are slow)")
        args = ["cmake", "--build", str(self.build_dir), "--parallel", "2"]
        if targets:
            args += ["--target", *targets]
        proc = self._run(args)
        if proc.returncode != 0:
            raise EdgennError(
                f"The generated project does not build against TFLite Micro at {self.tflm_dir}: "
                f"{compiler_message(proc.stdout + proc.stderr)}"
            )


@dataclasses.dataclass
class CheckRun:
    """One run of the check program.

    Attributes:
        returncode: Its exit code (0 success, 3 arena too small).
        outputs: The raw outputs, one row per input (empty unless it succeeded).
        arena_used_bytes: What ``arena_used_bytes()`` reported (0 unless it succeeded).
        message: Its stderr, stripped.
    """

    returncode: int
    outputs: np.ndarray
    arena_used_bytes: int
    message: str


def run_check(
    program: Path, inputs: np.ndarray, output: tuple[str, list[int]], arena_bytes: int = 0
) -> CheckRun:
    """Run the check program on raw inputs.

    Args:
        program: The built check program.
        inputs: Raw inputs in the model's dtype, one per row.
        output: The model output's dtype and shape.
        arena_bytes: A heap arena of this size instead of the generated one (0: the generated).

    Returns:
        What it did.
    """
    dtype, shape = np.dtype(output[0]), output[1]
    with tempfile.TemporaryDirectory(prefix="edgenn-check-") as tmp:
        src, dst = Path(tmp) / "inputs.bin", Path(tmp) / "outputs.bin"
        src.write_bytes(np.ascontiguousarray(inputs).tobytes())
        args = [str(program), str(src), str(dst)] + ([str(arena_bytes)] if arena_bytes else [])
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            return CheckRun(proc.returncode, np.empty(0, dtype), 0, proc.stderr.strip())
        outputs = np.frombuffer(dst.read_bytes(), dtype).reshape(len(inputs), *shape)
    used = re.search(r"arena_used_bytes (\d+)", proc.stdout)
    return CheckRun(0, outputs, int(used[1]) if used else 0, proc.stderr.strip())


def _output_spec(project: render.Project) -> tuple[str, list[int]]:
    detail = project.model.output_details[0]
    return detail.dtype, list(detail.shape)


def measured_arena(
    program: Path, project: render.Project, probe: np.ndarray, margin_percent: float
) -> ArenaResult:
    """Bisect the smallest arena with which the compiled program allocates and runs.

    Args:
        program: The built check program.
        project: What it was built from (its arena, measured in the Python interpreter, is where
            the search starts).
        probe: One raw input (the arena a model needs does not depend on the values).
        margin_percent: Percent to add for the generated arena.

    Returns:
        The minimum and the arena to generate, measured on :data:`edgenn.tflm.ON_PROGRAM`.

    Raises:
        EdgennError: The program does not run even with :data:`edgenn.tflm.MAX_ARENA` bytes.
    """
    output = _output_spec(project)

    def attempt(arena_bytes: int) -> CheckRun:
        return run_check(program, probe[None], output, arena_bytes)

    # Too small an arena usually makes AllocateTensors fail (exit 3), but some kernels abort
    # instead; any failure counts as "too small" once a larger arena is known to work.
    upper = max(project.arena.recommended_bytes, tflm.ALIGN)
    run = attempt(upper)
    while run.returncode != 0:
        if upper >= tflm.MAX_ARENA:
            raise EdgennError(
                f"The compiled check program does not run the model even with a {upper}-byte "
                f"arena (exit {run.returncode}): {tflm.reason(run.message)}"
            )
        upper *= 2
        run = attempt(upper)
    minimum = tflm.bisect_arena(lambda arena_bytes: attempt(arena_bytes).returncode == 0, upper)
    recommended = tflm.with_margin(minimum, margin_percent)
    return ArenaResult(minimum, margin_percent, recommended, tflm.ON_PROGRAM)


def first_mismatch(compiled: np.ndarray, expected: np.ndarray) -> str | None:
    """Where the compiled program's outputs first differ from the Python interpreter's.

    Args:
        compiled: The check program's outputs, one row per input.
        expected: TFLM's Python interpreter's outputs, same shape.

    Returns:
        None when every row is equal, else one line naming the input and the values.
    """
    n = len(expected)
    a, b = compiled.reshape(n, -1), expected.reshape(n, -1)
    rows = np.flatnonzero((a != b).any(axis=1))
    if rows.size == 0:
        return None
    i = int(rows[0])
    cols = np.flatnonzero(a[i] != b[i])
    shown = ", ".join(f"[{j}] {int(a[i, j])} vs {int(b[i, j])}" for j in cols[:8])
    more = f" and {cols.size - 8} more" if cols.size > 8 else ""
    return (
        f"test input {i} (the first of {rows.size} that differ): output {shown}{more} "
        f"(compiled program vs TFLM Python interpreter)"
    )


def compiled_check(
    program: Path, project: render.Project, inputs: np.ndarray, reference: verify.Reference
) -> CompiledCheck:
    """Run every test input through the check program and compare.

    Args:
        program: The built check program (with the generated arena).
        project: What it was built from; ``project.arena`` was measured on it.
        inputs: Raw test inputs.
        reference: TFLM's Python interpreter's and LiteRT's outputs for them.

    Returns:
        The counts.

    Raises:
        EdgennError: The program fails, or its outputs differ from the Python interpreter's on any
            input (the first one is named).
    """
    run = run_check(program, inputs, _output_spec(project))
    if run.returncode != 0:
        raise EdgennError(
            f"The compiled check program failed with the generated "
            f"{project.arena.recommended_bytes}-byte arena (exit {run.returncode}): "
            f"{tflm.reason(run.message)}"
        )
    mismatch = first_mismatch(run.outputs, reference.tflm)
    if mismatch:
        raise EdgennError(f"The compiled program is not bit-exact with TFLM: {mismatch}.")
    litert_exact, litert_lsb, argmax = verify.difference(run.outputs, reference.litert)
    return CompiledCheck(
        images=len(inputs),
        bit_exact=len(inputs),
        litert_exact=litert_exact,
        litert_max_lsb=litert_lsb,
        argmax_agree=argmax,
        arena_min_bytes=project.arena.minimum_bytes,
    )


def check_lines(check: CompiledCheck, arena_bytes: int) -> list[str]:
    """The compiled check as lines for the README and the report."""
    n = check.images
    return [
        f"built with CMake against TFLite Micro; the check program with the generated "
        f"{arena_bytes}-byte arena matches the TFLM Python interpreter bit-exactly on "
        f"{check.bit_exact} of {n} inputs",
        f"compiled program vs LiteRT's reference kernels: bit-exact on {check.litert_exact} of "
        f"{n}, at most {check.litert_max_lsb} LSB apart, same top class on "
        f"{check.argmax_agree} of {n}",
        f"smallest working arena of the compiled program: {check.arena_min_bytes} bytes "
        f"(bisected; {check.arena_min_bytes - tflm.ALIGN} bytes fail)",
    ]
