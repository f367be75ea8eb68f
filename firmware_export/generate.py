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
   bytes, TFLM gives bit-exact LiteRT's reference outputs on test images, ``g++ -c`` compiles them;
5. write the README with those results, and move the folder into place (nothing is left on error).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import artifact, datasets, tflite_model, tflm
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_directory
from edgenn.runtime import Runner
from edgenn.tflm import DEFAULT_ARENA_MARGIN
from firmware_export import render, verify
from firmware_export.render import DEFAULT_LAYOUT, LAYOUTS, resolver_method, resolver_methods
from firmware_export.verify import parse_c_array

__all__ = [
    "DEFAULT_ARENA_MARGIN",
    "DEFAULT_DATASET",
    "DEFAULT_LAYOUT",
    "DEFAULT_VERIFY_EXAMPLES",
    "LAYOUTS",
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


def summary(result: FirmwareResult) -> dict[str, Any]:
    """The ``--json`` document."""
    return dataclasses.asdict(result)


def report_lines(result: FirmwareResult) -> list[str]:
    """The result for people, one line each (both front ends print these)."""
    r = result
    return [
        f"{r.output}: {r.layout} sources for {r.name} ({len(r.files)} files)",
        f"  flash {r.flash_bytes:,} B (model)   RAM {r.ram_bytes:,} B (tensor arena)",
        f"  arena: measured minimum {r.arena_min_bytes:,} B + {r.arena_margin_percent:g}% = "
        f"{r.arena_bytes:,} B; inputs and outputs ({r.io_bytes} B) live inside it",
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


def _c_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise UsageError(f"--name {name!r} is not a C identifier (letters, digits, underscores).")
    return name


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
    expected = verify.reference_output(Runner(aligned, xnnpack=False), example)
    labels = info.labels if info else []
    return render.Project(
        name, layout, aligned, aligned_model, ops, methods, arena, labels, example, expected
    )


def _result(
    output: Path,
    project: render.Project,
    files: list[str],
    found: verify.Verification,
    examples: int,
    io_bytes: int,
) -> FirmwareResult:
    arena = project.arena
    return FirmwareResult(
        output=str(output),
        name=project.name,
        layout=project.layout,
        files=sorted(files),
        ops=project.ops,
        flash_bytes=len(project.data),
        arena_min_bytes=arena.minimum_bytes,
        arena_bytes=arena.recommended_bytes,
        arena_margin_percent=arena.margin_percent,
        # The inputs and outputs live inside the arena: it is all the RAM the model needs.
        ram_bytes=arena.recommended_bytes,
        io_bytes=io_bytes,
        verified_examples=examples,
        exact_examples=found.exact,
        max_lsb_difference=found.worst,
        bit_exact=found.exact == examples,
        compiled=found.compiled,
        checks=found.checks,
    )


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
) -> FirmwareResult:
    """Write TFLite Micro sources for an int8 model and verify them on the host.

    Args:
        model_path: The int8 ``.tflite``.
        output: Folder to create.
        name: C identifier prefix (default: the model file's stem).
        layout: ``cmake`` (``main.cc`` + ``CMakeLists.txt``) or ``arduino`` (an installable
            library: ``library.properties``, ``src/``, ``examples/``); see :data:`LAYOUTS`.
        arena_margin: Percent added to the measured minimum arena.
        overwrite: Replace an existing output folder.
        dataset: Data set whose test images verify TFLM against LiteRT (random inputs when the
            model does not fit it, or when None).
        verify_examples: How many inputs to compare.
        compile_check: Compile the data and config sources with ``g++``.

    Returns:
        The result.

    Raises:
        UsageError: Bad name, layout or margin.
        EdgennError: The model cannot run on a microcontroller (one line per problem), its labels
            do not fit its output, or a verification failed; nothing is left at ``output``.
        MissingDependencyError: tflite-micro is not installed.
    """
    _check_options(layout, arena_margin)
    model = tflite_model.load(model_path)
    name = _c_name(name or re.sub(r"\W", "_", Path(model_path).stem))
    tflm.runtime(PURPOSE)  # a missing tflite-micro is named for this command, before any work
    problems = refusals(model)
    if problems:
        raise EdgennError(
            f"{model_path} cannot go to a microcontroller:\n  " + "\n  ".join(problems)
        )
    info = _model_info(model)
    inputs = _sample(model, verify_examples, dataset, info)
    project = _project(model, name, layout, arena_margin, info, inputs[0])
    files = render.render_sources(project)
    with atomic_directory(Path(output), overwrite=overwrite) as tmp:
        render.write(tmp, files)
        found = verify.verify(tmp, project, inputs, compile_check)
        render.write(tmp, {render.README: render.render_readme(project, found.checks)})
    files_written = [*files, render.README]
    return _result(output, project, files_written, found, len(inputs), tflm.io_bytes(model))
