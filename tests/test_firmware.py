"""firmware_export: TFLite Micro sources that compile, fit, and give the same answers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgenn import artifact, tflite_model, tflm
from edgenn.cli import main
from edgenn.errors import EdgennError, UsageError
from edgenn.tflm import kernels as tflm_kernels
from firmware_export import (
    DEFAULT_ARENA_MARGIN,
    DEFAULT_DATASET,
    LAYOUTS,
    TFLM_ENV,
    export_firmware,
    names,
    render,
)
from firmware_export.generate import parse_c_array, resolver_methods

from .conftest import REPO

MICRO = REPO / "tests" / "data" / "tiny_cnn_micro.tflite"
FLOAT = REPO / "tests" / "data" / "tiny_cnn_fp32.tflite"


@pytest.fixture(scope="module")
def cmake_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("fw") / "cmake"
    return export_firmware(MICRO, out, name="tiny", verify_examples=50), out


def test_files_and_figures(cmake_out):
    result, out = cmake_out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "CMakeLists.txt",
            "Makefile",
            "README.md",
            "check.cc",
            "main.cc",
            "tiny_config.h",
            "tiny_example_data.h",
            "tiny_model_data.cc",
            "tiny_model_data.h",
            "tiny_ops.h",
        ]
    )
    assert result.verified_examples == 50 and result.max_lsb_difference <= 1
    assert result.bit_exact, "the tiny CNN: TFLM and LiteRT's reference kernels agree exactly"
    # No TFLM build: the arena comes from the Python interpreter, and the result says so.
    assert result.compiled_check is None and result.arena_measured_on == tflm.ON_INTERPRETER
    assert result.arena_interpreter_min_bytes == result.arena_min_bytes
    assert result.arena_min_bytes < result.arena_bytes <= result.arena_min_bytes * 1.1
    assert result.arena_bytes - result.arena_min_bytes > result.arena_min_bytes * 0.1 - 16
    config = (out / "tiny_config.h").read_text()
    assert f"constexpr int ktiny_ArenaBytes = {result.arena_bytes};" in config
    assert "constexpr int ktiny_InputShape[] = {1, 28, 28, 1};" in config
    assert '"T-shirt/top"' in config and "typedef int8_t tiny_input_t;" in config
    readme = (out / "README.md").read_text()
    assert "flash: model | " + f"{result.flash_bytes:,}" in readme
    assert "measured on the TFLM Python interpreter" in readme and "--verify-build" in readme


def test_model_array_is_the_aligned_model(cmake_out):
    result, out = cmake_out
    data = parse_c_array((out / "tiny_model_data.cc").read_text(), "g_tiny_model_data")
    assert len(data) == result.flash_bytes
    assert (
        "alignas(16) const unsigned char g_tiny_model_data[]"
        in (out / "tiny_model_data.cc").read_text()
    )
    # The same network: parses, same ops, same weights size as the original model.
    original, aligned = tflite_model.load(MICRO), tflite_model.load(data)
    assert [op.name for op in aligned.ops] == [op.name for op in original.ops]
    assert aligned.weight_bytes == original.weight_bytes


def test_op_resolver_registers_exactly_the_models_ops(cmake_out):
    result, out = cmake_out
    ops_h = (out / "tiny_ops.h").read_text()
    ops = list(dict.fromkeys(op.name for op in tflite_model.load(MICRO).ops))
    assert f"MicroMutableOpResolver<{len(ops)}>" in ops_h
    methods = re.findall(r"resolver\.(Add\w+)\(\)", ops_h)
    assert methods == [resolver_methods()[op] for op in ops]
    assert methods[:2] == ["AddConv2D", "AddMaxPool2D"]


def test_resolver_table_matches_the_kernels_tflm_has():
    """Every method names an op the pinned TFLM build has a kernel for, and every builtin op with
    a kernel there has a method (the other kernels are custom ops: signal processing, Ethos-U)."""
    from ai_edge_litert import schema_py_generated as schema

    kernels = tflm_kernels()
    methods = resolver_methods()
    builtins = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    assert set(methods) <= kernels
    assert (kernels & builtins) - set(methods) <= {"DETECTION_POSTPROCESS"}  # a custom op in TFLM
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "MEAN", "SOFTMAX"):
        assert op in methods


def test_deterministic(cmake_out, tmp_path):
    _, out = cmake_out
    again = tmp_path / "again"
    export_firmware(MICRO, again, name="tiny", verify_examples=50)
    for path in out.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_generated_sources_compile(cmake_out, tmp_path):
    _, out = cmake_out
    gxx = shutil.which("g++")
    assert gxx, "g++ is installed by scripts/setup.sh test"
    for unit in ("tiny_model_data.cc",):
        subprocess.run(
            [gxx, "-std=c++17", "-c", str(out / unit), "-o", str(tmp_path / "x.o")], check=True
        )


def test_arduino_library_layout(tmp_path):
    result = export_firmware(
        MICRO, tmp_path / "ard", name="fmnist", layout="arduino", verify_examples=5
    )
    root = tmp_path / "ard"
    assert (root / "library.properties").read_text().startswith("name=fmnist\n")
    assert (root / "src" / "fmnist_model_data.cc").is_file()
    sketch = (root / "examples" / "fmnist" / "fmnist.ino").read_text()
    assert "fmnist_RegisterOps" in sketch and "kfmnist_ExpectedOutput" in sketch
    assert result.layout == "arduino"


@pytest.mark.parametrize(
    "fixture, message",
    [
        ("float", "inputs/outputs are float32"),
        ("face_detection", "float16 weights"),
        ("sparse_face_detection", "DENSIFY"),
        ("selfie_segmentation", "custom op Convolution2DTransposeBias"),
    ],
)
def test_refusals_write_nothing(request, tmp_path, fixture, message):
    model = FLOAT if fixture == "float" else request.getfixturevalue(fixture)
    out = tmp_path / "fw"
    with pytest.raises(EdgennError) as err:
        export_firmware(model, out)
    assert message in str(err.value) and "edgenn convert RUN --target micro" in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="is not a C identifier"):
        export_firmware(MICRO, tmp_path / "x", name="my-model")
    with pytest.raises(UsageError, match="--layout"):
        export_firmware(MICRO, tmp_path / "x", layout="zephyr")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["all", "clean", "install", "ALL_BUILD", "test"])
def test_names_cmake_reserves_are_refused_up_front(tmp_path, name):
    """`--name all` used to pass every check, then CMake refused the target."""
    with pytest.raises(UsageError) as err:
        export_firmware(tmp_path / "not-read.tflite", tmp_path / "x", name=name)
    message = str(err.value)
    assert f"--name {name!r} is a target name CMake reserves" in message
    assert "\n" not in message and "e.g. --name " in message
    suggested = message.rsplit("--name ", 1)[1].rstrip(".")
    assert names.problem(suggested) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name, why",
    [("_tiny", "underscore"), ("a__b", "'__'"), ("1st", "not a C identifier"), ("x" * 101, "101")],
)
def test_names_cpp_reserves_or_files_cannot_hold_are_refused(tmp_path, name, why):
    with pytest.raises(UsageError, match=why):
        export_firmware(MICRO, tmp_path / "x", name=name)


def test_a_file_name_that_is_no_identifier_gives_a_derived_name(tmp_path):
    """A model file named "1st model.tflite" and no --name used to fail with "--name '1st_model'
    is not a C identifier", blaming an option the user never gave."""
    model = tmp_path / "1st model.tflite"
    shutil.copy(MICRO, model)
    result = export_firmware(model, tmp_path / "fw", verify_examples=2)
    assert result.name == "model_1st_model"
    assert (tmp_path / "fw" / "model_1st_model_model_data.cc").is_file()
    assert names.derive("all") == "all_model" and names.derive("\u6a21\u578b") == "model"
    assert names.derive("my-model v2") == "my_model_v2"


def test_labels_with_emoji_and_trigraphs_are_valid_cpp(tmp_path):
    """An emoji used to become a JSON surrogate pair (invalid C++) and `??=` a trigraph (`#` in
    C++11/14 with trigraphs on): every label must read back as its exact UTF-8 bytes."""
    labels = [
        "T-shirt/top",
        "smile \U0001f600",
        "what??=",
        'quote " back\\slash',
        "tab\there",
        "??/",
        "\u00e91",
        "Bag",
        "ends with \\",
        "Ankle boot",
    ]
    model = tflite_model.load(MICRO)
    odd = tmp_path / "odd.tflite"
    odd.write_bytes(artifact.embed(model.data, labels, artifact.model_info(model).spec))
    out = tmp_path / "fw"
    export_firmware(odd, out, verify_examples=2)
    program = tmp_path / "labels.cc"
    program.write_text(
        '#include <cstdio>\n#include "odd_config.h"\n'
        'int main() { for (const char* l : kodd_Labels) std::printf("%s\\n", l); }\n'
    )
    expected = "".join(f"{label}\n" for label in labels).encode()
    for std in ("-std=c++11", "-std=c++14", "-std=c++17", "-std=gnu++17"):
        exe = tmp_path / "labels"
        subprocess.run(
            ["g++", std, "-trigraphs", "-Wall", "-Wextra", "-Werror", "-I", str(out)]
            + [str(program), "-o", str(exe)],
            check=True,
        )
        assert subprocess.run([str(exe)], capture_output=True, check=True).stdout == expected


def test_a_model_file_name_cannot_break_out_of_a_comment(tmp_path):
    """The file name is quoted in a // comment: a newline, a backslash or a trigraph in it must
    not turn the rest into code (the export compiles the file with -Wall -Werror)."""
    model = tmp_path / "m\nint x; ??=\\.tflite"
    shutil.copy(MICRO, model)
    result = export_firmware(model, tmp_path / "fw", name="m", verify_examples=2)
    lines = (tmp_path / "fw" / "m_model_data.cc").read_text().splitlines()
    assert lines[0].startswith("// Generated by edgenn firmware from m_int x_ ____.tflite: ")
    assert lines[1].startswith("// TFLite Micro reads") and "m_model_data.cc" in result.compiled


def test_existing_output_needs_overwrite(cmake_out):
    _, out = cmake_out
    with pytest.raises(EdgennError, match="already exists"):
        export_firmware(MICRO, out, name="tiny")


def test_cli_and_python_dash_m_are_the_same_command(tmp_path):
    result = CliRunner().invoke(main, ["firmware", str(MICRO), "-o", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["exact_examples"] == doc["verified_examples"] and doc["name"] == "tiny_cnn_micro"
    out = subprocess.run(
        [sys.executable, "-m", "firmware_export", str(MICRO), "-o", str(tmp_path / "b"), "--json"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["arena_bytes"] == doc["arena_bytes"]
    for name in ("tiny_cnn_micro_model_data.cc", "tiny_cnn_micro_config.h", "tiny_cnn_micro_ops.h"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    refused = CliRunner().invoke(main, ["firmware", str(FLOAT), "-o", str(tmp_path / "c")])
    assert refused.exit_code == 1 and "cannot go to a microcontroller" in refused.output
    alone = subprocess.run(
        [sys.executable, "-m", "firmware_export", str(FLOAT), "-o", str(tmp_path / "d")],
        capture_output=True,
        text=True,
    )
    assert alone.returncode == 1 and alone.stdout == ""
    assert alone.stderr.startswith("firmware_export: error: ") and "microcontroller" in alone.stderr
    # The same message as edgenn firmware's, under the program's own name; nothing written.
    assert alone.stderr.split("error: ", 1)[1] == refused.output.split("error: ", 1)[1]
    assert not (tmp_path / "d").exists()


def test_cli_choices_and_defaults_come_from_the_library():
    params = {p.name: p for p in main.commands["firmware"].params}
    assert tuple(params["layout"].type.choices) == LAYOUTS == ("cmake", "arduino")
    assert params["layout"].default == render.DEFAULT_LAYOUT
    assert params["arena_margin"].default == DEFAULT_ARENA_MARGIN == tflm.DEFAULT_ARENA_MARGIN
    assert params["dataset"].default == DEFAULT_DATASET


def test_every_template_is_used_and_packaged():
    """Each file in templates/ is one the renderer fills (an unused one would be dead code), and
    it is read through importlib.resources, as an installed package reads it."""
    import importlib.resources

    folder = importlib.resources.files("firmware_export").joinpath("templates")
    on_disk = {p.name for p in folder.iterdir() if p.name.endswith(".tpl")}
    used = {*render.SOURCES, "README.md.tpl", "op_registration.tpl", "config_check.cc.tpl"}
    used |= {"readme_built.md.tpl", "readme_not_built.md.tpl", *render.HOST_PROJECT}
    for layout in render.LAYOUT_SPECS.values():
        used |= {*layout.project, layout.how}
    assert on_disk == used


def test_templates_leave_no_placeholder(cmake_out, tmp_path):
    """Every $value is filled; CMake and make files (their own $ syntax) fill @value@ markers."""
    _, out = cmake_out
    ard = tmp_path / "ard"
    export_firmware(MICRO, ard, name="t", layout="arduino", verify_examples=2, compile_check=False)
    texts = {p: p.read_text() for root in (out, ard) for p in root.rglob("*") if p.is_file()}
    build_files = {"CMakeLists.txt", "Makefile"}
    for path, text in texts.items():
        if path.name in build_files:
            assert not re.search(r"@[A-Za-z_]\w*@", text), path
        else:
            assert "$" not in text, path
    cmake = (out / "CMakeLists.txt").read_text()
    assert "add_executable(tiny main.cc tiny_model_data.cc)" in cmake
    assert "add_executable(tiny_check check.cc tiny_model_data.cc)" in cmake
    assert "NAME := tiny\n" in (out / "Makefile").read_text()


def test_labels_that_do_not_fit_the_output_are_refused(tmp_path):
    """The firmware's label table must match the model's outputs, as in every other command."""
    model = tflite_model.load(MICRO)
    info = artifact.model_info(model)
    wrong = tmp_path / "wrong.tflite"
    # Embedded as an older edgenn (or another tool) could have: embed() itself now refuses it.
    payload = artifact.metadata_bytes(info.labels[:3], info.spec)
    wrong.write_bytes(tflite_model.embed_metadata(model.data, artifact.METADATA_ENTRY, payload))
    out = tmp_path / "fw"
    with pytest.raises(EdgennError, match="3 labels but 10 outputs"):
        export_firmware(wrong, out, verify_examples=2)
    assert not out.exists()


def test_verify_build_without_a_tflm_folder_says_how(tmp_path, monkeypatch):
    monkeypatch.delenv(TFLM_ENV, raising=False)
    args = ["firmware", str(MICRO), "-o", str(tmp_path / "a"), "--verify-build"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--verify-build needs a TFLite Micro build: pass --tflm DIR or set EDGENN_TFLM" in (
        result.output
    )
    missing = CliRunner().invoke(main, [*args[:4], "--tflm", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "is not a folder" in missing.output
    assert list(tmp_path.iterdir()) == []
