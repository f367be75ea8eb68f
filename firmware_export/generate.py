"""[device] Turn an int8 .tflite into TFLite Micro sources: model array, op resolver, config, example.

The pipeline, each step in its own place:

1. refuse what cannot go to a microcontroller (:func:`refusals`: float I/O or weights, ops TFLM has
   no kernel for, control flow, dynamic shapes);
2. align the model bytes for TFLM with the aligner the ``tflite-micro`` package ships, and measure
   the smallest tensor arena in TFLM's own interpreter by bisection, plus a margin
   (:mod:`edgenn.tflm`);
3. fill the templates in ``templates/`` (:mod:`firmware_export.render`): ``NAME_model_data.h/.cc``
   (``alignas(16) const unsigned char g_NAME_model_data[]``), ``NAME_ops.h`` (exactly the model's
   ops, each an ``Add...()`` method of ``tflite::MicroMutableOpResolver`` that the pinned TFLM build
   has a kernel for), ``NAME_config.h``, ``NAME_example_data.h`` and the layout's project files;
4. verify them on the host (:mod:`firmware_export.verify`): the array parses back to the aligned
   bytes, TFLM's Python interpreter runs them on test images (compared with LiteRT's reference
   kernels), ``g++ -c`` compiles the data and config files;
5. with a TFLite Micro build (``--verify-build``, :mod:`firmware_export.build`): build the project
   with its own CMakeLists.txt, measure the arena on the compiled check program (the constant is
   rewritten from it), and run every test input through it: bit-exact with TFLM's Python
   interpreter, compared with LiteRT;
6. write the README with those results, and move the folder into place (nothing is left on error).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import artifact, datasets, tflite_model, tflm
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_directory
from edgenn.runtime import Runner
from edgenn.tflm import DEFAULT_ARENA_MARGIN
from firmware_export import build, names, render, verify
from firmware_export.build import TFLM_ENV, CompiledCheck, Progress
from firmware_export.render import DEFAULT_LAYOUT, LAYOUTS, resolver_method, resolver_methods
from firmware_export.verify import parse_c_array

__all__ = [
    "DEFAULT_ARENA_MARGIN",
    "DEFAULT_DATASET",
    "DEFAULT_LAYOUT",
    "DEFAULT_VERIFY_EXAMPLES",
    "LAYOUTS",
    "TFLM_ENV",
    "CompiledCheck",
    "FirmwareResult",
    "export_firmware",
    "parse_c_array",
    "refusals",
    "resolver_method",
    "resolver_methods",
    "summary",
]

#: The data set whose test images verify TFLM against LiteRT (random inputs when it does not fit).
DEFAULT_DATASET = datasets.DEFAULT_DATASET
#: How many inputs the verification compares.
DEFAULT_VERIFY_EXAMPLES = 100
PURPOSE = "edgenn firmware"
FIX = "Convert with: edgenn convert RUN --target micro"


@dataclasses.dataclass
class FirmwareResult:
    """What :func:`export_firmware` wrote and verified (``--json`` prints it).

    ``exact_examples``, ``max_lsb_difference`` and ``bit_exact`` compare TFLM's Python interpreter
    with LiteRT's reference kernels; ``compiled_check`` is the compiled program's result with a
    TFLite Micro build (None without one), and then ``arena_min_bytes`` was measured on it
    (``arena_measured_on``; ``arena_interpreter_min_bytes`` is the Python interpreter's figure).
    """

    output: str
    name: str
    layout: str
    files: list[str]
    ops: list[str]
    flash_bytes: int
    arena_min_bytes: int
    arena_bytes: int
    arena_margin_percent: float
    arena_measured_on: str
    arena_interpreter_min_bytes: int
    ram_bytes: int
    io_bytes: int
    verified_examples: int
    exact_examples: int
    max_lsb_difference: int
    bit_exact: bool
    compiled: list[str]
    checks: list[str]
    compiled_check: CompiledCheck | None


def summary(result: FirmwareResult) -> dict[str, Any]:
    """The ``--json`` document."""
    return dataclasses.asdict(result)


def report_lines(result: FirmwareResult) -> list[str]:
    """The result for people, one line each (both front ends print these)."""
    r = result
    where = f"on the {r.arena_measured_on}"
    if r.compiled_check is None:
        where += " (no TFLM build: --tflm DIR --verify-build measures it on the compiled program)"
    return [
        f"{r.output}: {r.layout} sources for {r.name} ({len(r.files)} files)",
        f"  flash {r.flash_bytes:,} B (model)   RAM {r.ram_bytes:,} B (tensor arena)",
        f"  arena: measured minimum {r.arena_min_bytes:,} B {where} + "
        f"{r.arena_margin_percent:g}% = {r.arena_bytes:,} B; inputs and outputs "
        f"({r.io_bytes} B) live inside it",
        f"  ops: {', '.join(r.ops)}",
        *(f"  verified: {check}" for check in r.checks),
    ]


def refusals(model: tflite_model.TFLiteFile) -> list[str]:
    """Why a model cannot go to a microcontroller, one line per problem (empty when it can).

    Args:
        model: The parsed model.

    Returns:
        The problems, each with what to do.

    Raises:
        MissingDependencyError: tflite-micro is not installed (its kernels are listed).
    """
    problems = []
    dtypes = {t.dtype for t in model.input_details + model.output_details}
    if model.subgraphs > 1:
        problems.append(f"{model.subgraphs} subgraphs: control flow is not supported here. {FIX}")
    if not dtypes <= {"int8", "uint8", "int16"}:
        problems.append(
            f"inputs/outputs are {', '.join(sorted(dtypes))}; a microcontroller model is int8 "
            f"end to end. {FIX}"
        )
    float_weights = {
        t.dtype for t in model.tensors if t.is_constant and t.dtype in ("float32", "float16")
    }
    if float_weights:
        problems.append(
            f"{'/'.join(sorted(float_weights))} weights: the model is not fully int8. {FIX}"
        )
    for index, reason in sorted(tflm.static_problems(model).items()):
        problems.append(f"op #{index} {model.ops[index].name}: {reason}. {FIX}")
    kernels = tflm.kernels()
    for op in model.ops:
        if not op.custom and op.name not in kernels:
            problems.append(f"op #{op.index} {op.name}: TFLM has no kernel for it. {FIX}")
    return list(dict.fromkeys(problems))


def _check_options(layout: str, arena_margin: float) -> None:
    if layout not in LAYOUTS:
        raise UsageError(f"Unknown --layout {layout!r}; expected one of {', '.join(LAYOUTS)}.")
    if arena_margin < 0:
        raise UsageError(f"--arena-margin must be 0 or more; received {arena_margin}.")


def _model_info(model: tflite_model.TFLiteFile) -> artifact.ModelInfo | None:
    """Labels and preprocessing when the model carries them (embedded or beside it), else None.

    A model without them still gets sources (no labels, random test inputs); labels that do not
    fit the output, or a damaged recipe, are an error as in every other command.
    """
    beside = model.path is not None and artifact.has_companions(model.path.parent)
    if artifact.embedded(model) is None and not beside:
        return None
    return artifact.model_info(model)


def _sample(
    model: tflite_model.TFLiteFile,
    count: int,
    dataset: str | None,
    info: artifact.ModelInfo | None,
) -> np.ndarray:
    """Quantized test inputs: the data set's test split when it fits the model, else random."""
    runner = Runner(model, xnnpack=False)
    if dataset is not None and info is not None:
        try:
            return _dataset_inputs(runner, count, dataset, info)
        except EdgennError:
            pass  # the data set is not there or does not fit the model: random inputs instead
    shape = tuple(model.input_details[0].shape)
    rng = np.random.default_rng(0)
    dtype = np.dtype(model.input_details[0].dtype)
    lim = np.iinfo(dtype)
    return rng.integers(lim.min, lim.max + 1, size=(count, *shape)).astype(dtype)


def _dataset_inputs(
    runner: Runner, count: int, dataset: str, info: artifact.ModelInfo
) -> np.ndarray:
    # Data loading is imported only when a data set is asked for.
    from edgenn import datasets, preprocess

    spec = datasets.DataSpec(dataset=dataset)
    splits = datasets.make_splits(spec, datasets.load_dataset(spec))
    x = datasets.adapt_images(splits.x_test[:count], splits.spec, info.spec)
    floats = preprocess.pixels_to_input(x, info.spec)
    return np.stack([runner.quantize_input(f[None]) for f in floats])


def _project(
    model: tflite_model.TFLiteFile,
    name: str,
    layout: str,
    arena_margin: float,
    info: artifact.ModelInfo | None,
    example: np.ndarray,
) -> render.Project:
    """Align the model, measure its arena and name its resolver methods: what the templates need."""
    aligned = tflm.align(model.data, PURPOSE)
    aligned_model = tflite_model.load(aligned)
    arena = tflm.smallest_arena(aligned, arena_margin)
    ops = list(dict.fromkeys(op.name for op in aligned_model.ops))
    methods = [resolver_method(op) for op in ops]
    # The example's expected output is TFLM's own (LiteRT's reference kernels round a few
    # boundary cases differently): the firmware must reproduce it bit for bit.
    expected = tflm.Interpreter(aligned, arena.recommended_bytes).run(example)
    labels = info.labels if info else []
    source = model.path.name if model.path else ""
    return render.Project(
        name, layout, aligned, aligned_model, ops, methods, arena, labels, example, expected, source
    )


def _result(
    output: Path,
    project: render.Project,
    found: verify.Verification,
    compiled: CompiledCheck | None,
    interpreter_arena: tflm.ArenaResult,
) -> FirmwareResult:
    arena = project.arena
    examples = len(found.reference.tflm)
    return FirmwareResult(
        output=str(output),
        name=project.name,
        layout=project.layout,
        files=sorted([*render.render_sources(project), render.README]),
        ops=project.ops,
        flash_bytes=len(project.data),
        arena_min_bytes=arena.minimum_bytes,
        arena_bytes=arena.recommended_bytes,
        arena_margin_percent=arena.margin_percent,
        arena_measured_on=arena.measured_on,
        arena_interpreter_min_bytes=interpreter_arena.minimum_bytes,
        # The inputs and outputs live inside the arena: it is all the RAM the model needs.
        ram_bytes=arena.recommended_bytes,
        io_bytes=tflm.io_bytes(project.model),
        verified_examples=examples,
        exact_examples=found.exact,
        max_lsb_difference=found.worst,
        bit_exact=found.exact == examples,
        compiled=found.compiled,
        checks=found.checks,
        compiled_check=compiled,
    )


def _loadable(model_path: Path) -> tflite_model.TFLiteFile:
    """The model, once it is known to be one a microcontroller can run (else every reason)."""
    model = tflite_model.load(model_path)
    tflm.runtime(PURPOSE)  # a missing tflite-micro is named for this command, before any work
    problems = refusals(model)
    if problems:
        raise EdgennError(
            f"{model_path} cannot go to a microcontroller:\n  " + "\n  ".join(problems)
        )
    return model


def _write_and_verify(
    folder: Path,
    project: render.Project,
    inputs: np.ndarray,
    compile_check: bool,
    host: build.HostBuild | None,
    progress: Progress,
) -> tuple[render.Project, verify.Verification, CompiledCheck | None]:
    """Write the files into ``folder`` and run every check; with a build, re-measure the arena.

    Returns:
        The project as written (its arena measured on the compiled program when built), what the
        host checks found, and the compiled program's check (None without a build).
    """
    interpreter_arena = project.arena.recommended_bytes
    render.write(folder, render.render_sources(project))
    if host is not None:
        host.configure()  # before the slow steps: a TFLM folder it refuses fails at once
        host.build(render.check_target(project.name))
        progress("bisecting the smallest tensor arena on the compiled check program")
        arena = build.measured_arena(
            host.check_program, project, inputs[0], project.arena.margin_percent
        )
        project = dataclasses.replace(project, arena=arena)
        render.write(folder, render.render_sources(project))  # the arena constant changed
        host.sync(project)
        host.build()
    progress(f"running {len(inputs)} test inputs in TFLM's Python interpreter and LiteRT")
    found = verify.verify(folder, project, inputs, compile_check, interpreter_arena)
    compiled = None
    if host is not None:
        progress(f"running {len(inputs)} test inputs through the compiled check program")
        compiled = build.compiled_check(host.check_program, project, inputs, found.reference)
        found.checks.extend(build.check_lines(compiled, project.arena.recommended_bytes))
    readme = render.render_readme(project, found.checks, built=compiled is not None)
    render.write(folder, {render.README: readme})
    return project, found, compiled


def export_firmware(
    model_path: Path,
    output: Path,
    name: str | None = None,
    layout: str = DEFAULT_LAYOUT,
    arena_margin: float = DEFAULT_ARENA_MARGIN,
    overwrite: bool = False,
    dataset: str | None = DEFAULT_DATASET,
    verify_examples: int = DEFAULT_VERIFY_EXAMPLES,
    compile_check: bool = True,
    tflm_dir: Path | None = None,
    verify_build: bool = False,
    progress: Progress | None = None,
) -> FirmwareResult:
    """Write TFLite Micro sources for an int8 model and verify them on the host.

    Args:
        model_path: The int8 ``.tflite``.
        output: Folder to create.
        name: C identifier prefix (default: one derived from the model file's name).
        layout: ``cmake`` (``main.cc``, ``check.cc``, ``CMakeLists.txt``, ``Makefile``) or
            ``arduino`` (an installable library: ``library.properties``, ``src/``,
            ``examples/``); see :data:`LAYOUTS`.
        arena_margin: Percent added to the measured minimum arena.
        overwrite: Replace an existing output folder.
        dataset: Data set whose test images verify the sources (random inputs when the model does
            not fit it, or when None).
        verify_examples: How many test inputs to run.
        compile_check: Compile the data and config sources with ``g++``.
        tflm_dir: A TFLite Micro build to compile against (asks for the build).
        verify_build: Build against ``tflm_dir`` or, without it, ``$EDGENN_TFLM``.
        progress: Called with a message before each slow step.

    Returns:
        The result.

    Raises:
        UsageError: Bad name, layout or margin, or a build asked for without a TFLM folder.
        EdgennError: The model cannot run on a microcontroller (one line per problem), its labels
            do not fit its output, a build tool is missing, the TFLM folder is refused, or a
            verification failed; nothing is left at ``output``.
        MissingDependencyError: tflite-micro is not installed.
    """
    _check_options(layout, arena_margin)
    name = names.name_for(model_path, name)
    tflm_path = build.resolve_tflm(tflm_dir, verify_build)  # and its tools, before any work
    model = _loadable(model_path)
    info = _model_info(model)
    inputs = _sample(model, verify_examples, dataset, info)
    project = _project(model, name, layout, arena_margin, info, inputs[0])
    interpreter_arena = project.arena
    report = progress or (lambda message: None)
    # The build folder is a scratch one: nothing of it ends up in the output.
    with atomic_directory(Path(output), overwrite=overwrite) as tmp:
        with tempfile.TemporaryDirectory(prefix="edgenn-firmware-") as scratch:
            host = tflm_path and build.HostBuild(tmp, project, Path(scratch), tflm_path, report)
            project, found, compiled = _write_and_verify(
                tmp, project, inputs, compile_check, host, report
            )
    return _result(output, project, found, compiled, interpreter_arena)
