"""[device] Fill the project templates in ``templates/`` and write the files.

The generated C/C++, CMake, make and Arduino files are kept as real files in ``templates/`` (like
TFLite Micro's ``tools/make/templates/*.tpl``) and filled in with :class:`string.Template`:
``$name`` or ``${name}`` is a value from this module, ``$$`` a literal ``$``. CMake and make use
``$`` for their own variables, so their templates (:data:`BUILD_FILE_TEMPLATES`) mark values the
way CMake's ``configure_file`` does instead: ``@name@``. A template that names a value this module
does not provide is an error, never a silent blank.

Values every source template can use (:func:`source_values`): ``name`` (the C prefix), ``guard``
(its upper case), ``source``, ``model_bytes``, ``model_array``, ``op_count``, ``op_names``,
``registrations``, ``arena_min_bytes``, ``arena_bytes``, ``arena_margin``, ``arena_measured_on``,
``label_count``, ``label_lines``, ``example_input``, ``expected_output``, ``input_type`` and, for
``input`` and ``output``, ``*_dims``, ``*_shape``, ``*_size``, ``*_ctype``, ``*_dtype``,
``*_scale``, ``*_zero_point``. ``README.md.tpl`` gets the figures formatted for people
(:func:`readme_values`). User text (labels, the model's file name) is escaped for C++ by
:mod:`firmware_export.names`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import string
from pathlib import Path

import numpy as np

from edgenn.errors import EdgennError
from edgenn.tflite_model import TensorInfo, TFLiteFile
from edgenn.tflm import ArenaResult
from firmware_export.names import c_string, comment_text

README = "README.md"
METHODS_FILE = Path(__file__).resolve().parent / "tflm_resolver_methods.json"

#: The model sources every layout gets: template -> path (itself a template) in the source folder.
SOURCES = {
    "model_data.h.tpl": "${name}_model_data.h",
    "model_data.cc.tpl": "${name}_model_data.cc",
    "ops.h.tpl": "${name}_ops.h",
    "config.h.tpl": "${name}_config.h",
    "example_data.h.tpl": "${name}_example_data.h",
}


@dataclasses.dataclass(frozen=True)
class Layout:
    """A project layout: where the model sources go and which files surround them.

    Attributes:
        source_dir: Folder of the model sources inside the output (``""`` or ``"src/"``).
        project: Template -> path (a template too) of the files only this layout has.
        how: Template of the README paragraph that says how to use the folder.
    """

    source_dir: str
    project: dict[str, str]
    how: str


#: The host project: the example program, the check program and the two ways to build them.
HOST_PROJECT = {
    "main.cc.tpl": "main.cc",
    "check.cc.tpl": "check.cc",
    "CMakeLists.txt.tpl": "CMakeLists.txt",
    "Makefile.tpl": "Makefile",
}
#: Templates filled with ``@name@`` markers (CMake and make use ``$`` themselves).
BUILD_FILE_TEMPLATES = ("CMakeLists.txt.tpl", "Makefile.tpl")
#: The check program's CMake target and executable (``NAME_check``).
CHECK_TARGET = "${name}_check"

#: The layouts ``edgenn firmware --layout`` offers.
LAYOUT_SPECS = {
    "cmake": Layout("", HOST_PROJECT, "readme_how_cmake.md.tpl"),
    "arduino": Layout(
        "src/",
        {
            "library.properties.tpl": "library.properties",
            "sketch.ino.tpl": "examples/$name/$name.ino",
        },
        "readme_how_arduino.md.tpl",
    ),
}
#: Layout names, the one list behind ``--layout``.
LAYOUTS = tuple(LAYOUT_SPECS)
DEFAULT_LAYOUT = "cmake"

#: numpy dtype -> (C type, TfLiteType) of an input or output tensor.
C_TYPES = {
    "int8": ("int8_t", "kTfLiteInt8"),
    "uint8": ("uint8_t", "kTfLiteUInt8"),
    "int16": ("int16_t", "kTfLiteInt16"),
    "int32": ("int32_t", "kTfLiteInt32"),
    "float32": ("float", "kTfLiteFloat32"),
}


@dataclasses.dataclass
class Project:
    """What the templates are filled from.

    Attributes:
        name: C identifier prefix of every symbol and file.
        layout: A name from :data:`LAYOUTS`.
        data: The aligned model bytes (the array in ``NAME_model_data.cc``).
        model: The aligned model, parsed.
        ops: Builtin ops in the order the model first uses them.
        methods: The ``MicroMutableOpResolver`` method of each op.
        arena: The measured tensor arena.
        labels: Class names (empty when the model carries none).
        example: One raw input, for ``NAME_example_data.h``.
        expected: TFLM's output for ``example``.
        source_name: The model's file name (quoted in a comment), empty when it has none.
    """

    name: str
    layout: str
    data: bytes
    model: TFLiteFile
    ops: list[str]
    methods: list[str]
    arena: ArenaResult
    labels: list[str]
    example: np.ndarray
    expected: np.ndarray
    source_name: str = ""

    @property
    def source_dir(self) -> str:
        """Folder of the model sources inside the output (``""`` or ``"src/"``)."""
        return LAYOUT_SPECS[self.layout].source_dir


def fill(template: str, values: dict[str, object]) -> str:
    """One template from ``templates/``, filled in.

    Args:
        template: File name in ``templates/``.
        values: Placeholder -> value.

    Returns:
        The text.

    Raises:
        KeyError: The template names a value that ``values`` lacks (a bug in edgenn).
    """
    text = importlib.resources.files(__package__).joinpath("templates", template).read_text()
    kind = _AtTemplate if template in BUILD_FILE_TEMPLATES else string.Template
    return kind(text).substitute(values)


class _AtTemplate(string.Template):
    """``@name@`` placeholders (CMake's ``configure_file`` style); every other ``@`` is literal."""

    delimiter = "@"
    pattern = r"@(?:(?P<escaped>(?!))|(?P<named>[A-Za-z_][A-Za-z0-9_]*)@|(?P<braced>(?!))|(?P<invalid>(?!)))"


def _line(template: str, values: dict[str, object]) -> str:
    """A one-line template (a README paragraph, a list item) without its final newline."""
    return fill(template, values).rstrip("\n")


def source_file(template: str, name: str) -> str:
    """The path of a model source inside the source folder (``model_data.cc.tpl`` -> ``NAME_...``)."""
    return string.Template(SOURCES[template]).substitute(name=name)


def model_array(name: str) -> str:
    """The C symbol of the model array in ``NAME_model_data.cc``."""
    return f"g_{name}_model_data"


def check_target(name: str) -> str:
    """The check program's CMake target and executable name."""
    return string.Template(CHECK_TARGET).substitute(name=name)


@functools.lru_cache(maxsize=1)
def _methods_table() -> dict[str, str]:
    # Read once per process: resolver_method is called for every op of every export.
    doc = json.loads(METHODS_FILE.read_text())
    return {**doc["derived"], **doc["methods"]}


def resolver_methods() -> dict[str, str]:
    """Op -> ``MicroMutableOpResolver`` method, as TFLM's header declares them.

    Returns:
        A copy of the table (header methods, then the few rule-derived ones for newer kernels).
    """
    return dict(_methods_table())


def resolver_method(op: str) -> str:
    """The resolver method that registers a builtin op, checked against TFLM's header.

    Args:
        op: TFLite builtin op name.

    Returns:
        The method name.

    Raises:
        EdgennError: TFLM's resolver has no method for the op.
    """
    methods = _methods_table()
    if op not in methods:
        raise EdgennError(f"TFLite Micro's MicroMutableOpResolver has no method for {op}.")
    return methods[op]


def _hex_lines(values: bytes, per_line: int = 12) -> str:
    lines = []
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in values[i : i + per_line]) + ",")
    return "\n".join(lines)


def _quantization(tensor: TensorInfo) -> tuple[float, int]:
    """(scale, zero point) of a tensor; (0.0, 0) when it is not quantized."""
    scale = tensor.scale[0] if tensor.scale else 0.0
    zero_point = tensor.zero_point[0] if tensor.zero_point else 0
    return scale, zero_point


def _tensor_values(prefix: str, tensor: TensorInfo) -> dict[str, object]:
    scale, zero_point = _quantization(tensor)
    return {
        f"{prefix}_dims": len(tensor.shape),
        f"{prefix}_shape": ", ".join(str(s) for s in tensor.shape),
        f"{prefix}_size": int(np.prod(tensor.shape)),
        f"{prefix}_ctype": C_TYPES[tensor.dtype][0],
        f"{prefix}_dtype": tensor.dtype,
        # repr() is the shortest text that reads back as the same float.
        f"{prefix}_scale": repr(scale),
        f"{prefix}_zero_point": zero_point,
    }


def source_values(project: Project) -> dict[str, object]:
    """The values the source and project templates are filled from.

    Args:
        project: What is being generated.

    Returns:
        Placeholder -> value (the module docstring lists them).
    """
    name, model, arena = project.name, project.model, project.arena
    inp, out = model.input_details[0], model.output_details[0]
    labels = ",\n".join(f"    {c_string(label)}" for label in project.labels)
    return {
        "name": name,
        "guard": name.upper(),
        "source": comment_text(project.source_name) if project.source_name else "the model",
        "model_bytes": len(project.data),
        "model_array": _hex_lines(project.data),
        "op_count": len(project.ops),
        "op_names": ", ".join(project.ops),
        "registrations": "\n".join(
            _line("op_registration.tpl", {"method": m}) for m in project.methods
        ),
        "arena_min_bytes": arena.minimum_bytes,
        "arena_bytes": arena.recommended_bytes,
        "arena_margin": f"{arena.margin_percent:g}",
        "arena_measured_on": arena.measured_on,
        "label_count": len(project.labels),
        # An empty initializer list is not valid C++ for an array of unknown size.
        "label_lines": labels or '    ""',
        "example_input": ", ".join(str(int(v)) for v in project.example.reshape(-1)),
        "expected_output": ", ".join(str(int(v)) for v in project.expected.reshape(-1)),
        "input_type": C_TYPES[inp.dtype][1],
        **_tensor_values("input", inp),
        **_tensor_values("output", out),
    }


def render_sources(project: Project) -> dict[str, str]:
    """Every file but the README (it quotes the verification, which needs the files first).

    Args:
        project: What is being generated.

    Returns:
        Relative path -> text.
    """
    values = source_values(project)
    layout = LAYOUT_SPECS[project.layout]
    files = {}
    for template in SOURCES:
        files[layout.source_dir + source_file(template, project.name)] = fill(template, values)
    for template, path in layout.project.items():
        files[string.Template(path).substitute(values)] = fill(template, values)
    return files


def render_host_project(project: Project) -> dict[str, str]:
    """The cmake layout's project files (example, check program, CMakeLists.txt, Makefile).

    An Arduino library has none; ``--verify-build`` builds its ``src/`` files with these.

    Args:
        project: What is being generated.

    Returns:
        File name -> text.
    """
    values = source_values(project)
    return {path: fill(template, values) for template, path in HOST_PROJECT.items()}


def readme_values(project: Project, checks: list[str], built: bool) -> dict[str, object]:
    """The values ``README.md.tpl`` is filled from: the figures formatted for people.

    Args:
        project: What was generated.
        checks: What the host verification found, one line each.
        built: Whether the project was compiled against TFLite Micro and its check program run.

    Returns:
        Placeholder -> value.
    """
    name, arena = project.name, project.arena
    values: dict[str, object] = {
        "name": name,
        "how": _line(LAYOUT_SPECS[project.layout].how, {"name": name}),
        "not_verified": _line(
            "readme_built.md.tpl" if built else "readme_not_built.md.tpl", {"name": name}
        ),
        "model_bytes": f"{len(project.data):,}",
        "arena_min_bytes": f"{arena.minimum_bytes:,}",
        "arena_measured_on": arena.measured_on,
        "arena_margin": f"{arena.margin_percent:g}",
        "arena_bytes": f"{arena.recommended_bytes:,}",
        "labels": ", ".join(project.labels) if project.labels else "(none embedded)",
        "source_dir": project.source_dir or "./",
        "op_count": len(project.ops),
        "methods": ", ".join(f"`{m}()`" for m in project.methods),
        "verified": "\n".join(f"- {c}" for c in checks),
    }
    for prefix, tensor in (
        ("input", project.model.input_details[0]),
        ("output", project.model.output_details[0]),
    ):
        scale, zero_point = _quantization(tensor)
        values[f"{prefix}_dtype"] = tensor.dtype
        values[f"{prefix}_shape"] = str(tensor.shape)
        values[f"{prefix}_scale"] = f"{scale:.6g}"
        values[f"{prefix}_zero_point"] = zero_point
    return values


def render_readme(project: Project, checks: list[str], built: bool = False) -> str:
    """The README: how to use the folder, the figures, and what was verified on the host."""
    return fill("README.md.tpl", readme_values(project, checks, built))


def write(folder: Path, files: dict[str, str]) -> None:
    """Write rendered files under ``folder``, creating sub-folders.

    Args:
        folder: The output folder (the temporary one, before it is moved into place).
        files: Relative path -> text.
    """
    for rel, text in files.items():
        path = folder / rel
        # An unchanged file keeps its time stamp, so a build of the folder does not redo it.
        if path.is_file() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
