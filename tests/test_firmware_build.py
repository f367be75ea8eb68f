"""The generated firmware compiled against a real TFLite Micro: CMake, make, Arduino, the checks.

Everything here links the TFLite Micro library that ``bash scripts/build_tflm.sh`` builds once
(``scripts/test.sh`` exports its folder as ``EDGENN_TFLM``); without it these tests fail, they never
skip. That folder also holds the TFLM source tree the library was built in (``tflm/``), used for
the "source tree" branch of the generated build files. A file that includes TFLM's headers takes
seconds to compile, so the project is exported (and built by the export) once per session, and the
user's own builds of it reuse that folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgenn import tflite_model, tflm
from edgenn.errors import EdgennError
from firmware_export import TFLM_ENV, build, export_firmware, render
from firmware_export.verify import Reference, parse_c_array

from .conftest import REPO

MICRO = REPO / "tests" / "data" / "tiny_cnn_micro.tflite"
IMAGES = 300
#: The files a cmake-layout export holds, and nothing else (no build products).
CMAKE_FILES = {
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
}
#: A test-only stand-in for the Arduino core: just what the generated sketch uses.
ARDUINO_H = """\
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <time.h>
inline unsigned long micros() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<unsigned long>(t.tv_sec * 1000000UL + t.tv_nsec / 1000);
}
struct HostSerial {
  void begin(unsigned long) {}
  explicit operator bool() const { return true; }
  void print(const char* s) { fputs(s, stdout); }
  void print(long v) { printf("%ld", v); }
  void println(const char* s) { puts(s); }
  void println(unsigned long v) { printf("%lu\\n", v); }
};
inline HostSerial Serial;
void setup();
void loop();
"""
ARDUINO_MAIN = '#include "Arduino.h"\nint main() { setup(); loop(); return 0; }\n'


@pytest.fixture(scope="session")
def tflm_build() -> Path:
    """The folder scripts/build_tflm.sh made: lib/, flags.txt and the built source tree tflm/."""
    value = os.environ.get(TFLM_ENV, "")
    if not value:
        pytest.fail(
            f"{TFLM_ENV} is not set: build TFLite Micro once with `bash scripts/build_tflm.sh` "
            f"and export {TFLM_ENV}=<the folder it prints> (bash scripts/test.sh does both)."
        )
    path = Path(value)
    if not (path / "flags.txt").is_file():
        pytest.fail(f"{TFLM_ENV}={value} has no flags.txt; run: bash scripts/build_tflm.sh")
    return path


@pytest.fixture(scope="session")
def tflm_tree(tflm_build) -> Path:
    tree = tflm_build / "tflm"
    assert list(tree.glob("gen/*/lib/libtensorflow-microlite.a")), "build.sh ran make microlite"
    return tree


def python_first_env() -> dict[str, str]:
    """PATH with this interpreter first: a TFLM tree's Makefile runs python3 with numpy + Pillow."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tflm_build, fmnist_dir):
    """``python -m firmware_export --verify-build`` (TFLM from EDGENN_TFLM) on 300 test images."""
    out = tmp_path_factory.mktemp("fwbuild") / "tiny"
    args = [sys.executable, "-m", "firmware_export", str(MICRO), "-o", str(out), "--name", "tiny"]
    args += ["--verify-build", "--test-images", str(IMAGES), "--json"]
    proc = subprocess.run(args, capture_output=True, text=True, env=python_first_env())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), out, proc.stderr


@pytest.fixture(scope="session")
def user_build(exported, tflm_build, tmp_path_factory) -> Path:
    """The exported folder built the way its README says, with its own CMakeLists.txt."""
    _, out, _ = exported
    build_dir = tmp_path_factory.mktemp("userbuild")
    for args in (
        ["cmake", "-S", str(out), "-B", str(build_dir), f"-DTFLM_DIR={tflm_build}"],
        ["cmake", "--build", str(build_dir), "--parallel", "2"],
    ):
        proc = subprocess.run(args, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return build_dir


def project_of(out: Path, doc: dict) -> render.Project:
    """The exported project as :mod:`firmware_export.build` sees it (for its check functions)."""
    data = parse_c_array((out / "tiny_model_data.cc").read_text(), "g_tiny_model_data")
    model = tflite_model.load(data)
    arena = tflm.ArenaResult(
        doc["arena_min_bytes"],
        doc["arena_margin_percent"],
        doc["arena_bytes"],
        doc["arena_measured_on"],
    )
    example = np.zeros(model.input_details[0].shape, np.int8)
    return render.Project("tiny", "cmake", data, model, doc["ops"], [], arena, [], example, example)


def random_inputs(count: int) -> np.ndarray:
    return np.random.default_rng(3).integers(-128, 128, (count, 1, 28, 28, 1)).astype(np.int8)


def test_verify_build_reports_the_compiled_check(exported):
    doc, out, stderr = exported
    check = doc["compiled_check"]
    assert list(check) == [
        "images",
        "bit_exact",
        "litert_exact",
        "litert_max_lsb",
        "argmax_agree",
        "arena_min_bytes",
    ]
    assert check["images"] == check["bit_exact"] == doc["verified_examples"] == IMAGES
    assert 0 <= check["litert_exact"] <= IMAGES and check["argmax_agree"] <= IMAGES
    assert (check["litert_exact"] == IMAGES) == (check["litert_max_lsb"] == 0)
    assert "configuring with CMake" in stderr and "bisecting" in stderr
    assert {p.name for p in out.iterdir()} == CMAKE_FILES, "no build products in the output"
    readme = (out / "README.md").read_text()
    assert f"matches the TFLM Python interpreter bit-exactly on {IMAGES} of {IMAGES}" in readme
    assert "measured on the compiled program" in readme


def test_the_arena_constant_is_the_compiled_minimum_plus_the_margin(exported):
    doc, out, _ = exported
    minimum = doc["compiled_check"]["arena_min_bytes"]
    assert doc["arena_min_bytes"] == minimum and doc["arena_measured_on"] == tflm.ON_PROGRAM
    assert doc["arena_bytes"] == tflm.with_margin(minimum, 10) <= minimum * 1.10
    # The Python interpreter needs a little more than the compiled program (issue 13: 320 B).
    assert doc["arena_interpreter_min_bytes"] > minimum
    config = (out / "tiny_config.h").read_text()
    assert f"constexpr int ktiny_ArenaBytes = {doc['arena_bytes']};" in config
    assert f"constexpr int ktiny_ArenaMinimumBytes = {minimum};" in config
    assert "found by bisection on the compiled program" in config


def test_the_project_builds_as_generated_and_its_example_matches(exported, user_build):
    doc, _, _ = exported
    run = subprocess.run([str(user_build / "tiny")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"tiny: 0 of 10 outputs differ; arena used {doc['arena_min_bytes']} of " in run.stdout


def test_minimum_arena_works_and_16_bytes_less_fails(exported, user_build):
    doc, out, _ = exported
    program, project = user_build / "tiny_check", project_of(out, doc)
    output = ("int8", [1, 10])
    minimum = doc["arena_min_bytes"]
    probe = random_inputs(1)
    works = build.run_check(program, probe, output, minimum)
    fails = build.run_check(program, probe, output, minimum - tflm.ALIGN)
    assert works.returncode == 0 and works.arena_used_bytes <= minimum
    assert fails.returncode == build.ARENA_TOO_SMALL
    assert f"AllocateTensors failed with a {minimum - 16}-byte arena" in fails.message
    generated = build.run_check(program, probe, output)
    assert generated.returncode == 0
    again = build.measured_arena(program, project, probe[0], 10)
    assert again.minimum_bytes == minimum and again.recommended_bytes == doc["arena_bytes"]


def test_compiled_outputs_are_bit_exact_and_a_mismatch_names_the_input(exported, user_build):
    doc, out, _ = exported
    program, project = user_build / "tiny_check", project_of(out, doc)
    inputs = random_inputs(20)
    micro = tflm.Interpreter(project.data, doc["arena_interpreter_min_bytes"])
    expected = np.stack([micro.run(x) for x in inputs])
    reference = Reference(expected, expected.copy())
    check = build.compiled_check(program, project, inputs, reference)
    assert check.bit_exact == check.litert_exact == check.argmax_agree == 20
    value = int(expected[7, 0, 3])
    reference.tflm[7, 0, 3] = value + 1 if value < 127 else value - 1
    with pytest.raises(EdgennError) as err:
        build.compiled_check(program, project, inputs, reference)
    message = str(err.value)
    assert "test input 7 (the first of 1 that differ): output [3] " in message
    assert f"[3] {value} vs {int(reference.tflm[7, 0, 3])} (compiled program vs TFLM" in message


def test_makefile_with_a_tflm_source_tree_builds_and_runs(exported, tflm_tree, tmp_path):
    _, out, _ = exported
    copy = tmp_path / "tiny"
    shutil.copytree(out, copy)
    run = subprocess.run(
        ["make", "-C", str(copy), "-j2", f"TFLM_DIR={tflm_tree}", "all", "run"],
        capture_output=True,
        text=True,
        env=python_first_env(),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tiny: 0 of 10 outputs differ" in run.stdout
    assert (copy / "build-make" / "tiny_check").is_file()


def flags_seen(folder: Path, tflm_dir: Path, tool: str, build_dir: Path) -> list[str]:
    """The compile flags the generated CMakeLists.txt or Makefile read from ``tflm_dir``."""
    if tool == "cmake":
        args = ["cmake", "-S", str(folder), "-B", str(build_dir), f"-DTFLM_DIR={tflm_dir}"]
        pattern = r"-- TFLite Micro flags: (.*)"
    else:
        args = ["make", "-s", "-C", str(folder), f"TFLM_DIR={tflm_dir}", "tflm-flags"]
        pattern = r"flags: (.*)"
    proc = subprocess.run(args, capture_output=True, text=True, env=python_first_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return re.search(pattern, proc.stdout)[1].split()


@pytest.mark.parametrize("tool", ["cmake", "make"])
def test_a_tree_and_its_build_folder_give_the_same_flags(
    exported, tflm_build, tflm_tree, tmp_path, tool
):
    """Both kinds of TFLM_DIR give the library's exact defines and flags, in both build files."""
    _, out, _ = exported
    copy = tmp_path / "tiny"
    shutil.copytree(out, copy)
    from_folder = flags_seen(copy, tflm_build, tool, tmp_path / "a")
    from_tree = flags_seen(copy, tflm_tree, tool, tmp_path / "b")
    assert from_folder == from_tree
    assert {"-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON", "-std=c++17"} <= set(from_tree)
    assert not [f for f in from_tree if f.startswith("-W")]


def tree_without_library(tree: Path, where: Path) -> Path:
    """A TFLM source tree in which `make microlite` has not run (the real one, minus gen/)."""
    where.mkdir()
    for entry in tree.iterdir():
        if entry.name != "gen":
            (where / entry.name).symlink_to(entry)
    return where


def library_without_static_memory(tflm_build: Path, where: Path, keep_define: bool) -> Path:
    """A build folder whose library was compiled without -DTF_LITE_STATIC_MEMORY."""
    (where / "lib").mkdir(parents=True)
    root = tflm_build / "tflm"
    obj = where / "common.o"
    source = root / "tensorflow/lite/core/c/common.cc"
    subprocess.run(
        ["g++", "-std=c++17", "-c", f"-I{root}", str(source), "-o", str(obj)], check=True
    )
    lib = where / "lib" / "libtensorflow-microlite.a"
    subprocess.run(["ar", "rcs", str(lib), str(obj)], check=True)
    flags = (tflm_build / "flags.txt").read_text()
    real = re.search(r'^TFLM_LIB="(.*)"$', flags, re.M)[1]
    flags = flags.replace(real, str(lib))
    assert flags.count(str(lib)) == 2  # TFLM_LIB and TFLM_LIBS
    if not keep_define:
        flags = flags.replace(" -DTF_LITE_STATIC_MEMORY", "")
    (where / "flags.txt").write_text(flags)
    return where


@pytest.mark.parametrize(
    "case, message",
    [
        ("tree without library", "No TFLite Micro library at '{tflm}/gen/"),
        ("library without the define", "was built without -DTF_LITE_STATIC_MEMORY"),
        ("flags without the define", "lack -DTF_LITE_STATIC_MEMORY"),
    ],
)
def test_a_tflm_folder_that_cannot_work_is_one_line_and_writes_nothing(
    exported, tflm_build, tflm_tree, tmp_path, case, message
):
    if case == "tree without library":
        bad = tree_without_library(tflm_tree, tmp_path / "tree")
        fix = f"build it with: make -C {bad} -f tensorflow/lite/micro/tools/make/Makefile microlite"
    else:
        bad = library_without_static_memory(tflm_build, tmp_path / "bad", case.startswith("lib"))
        fix = f"rebuild it with TFLM's build.sh TARBALL {bad}"
    message = message.format(tflm=bad)
    out = tmp_path / "fw"
    with pytest.raises(EdgennError) as err:
        export_firmware(MICRO, out, name="tiny", verify_examples=2, tflm_dir=bad)
    assert message in str(err.value) and fix in str(err.value)
    assert "\n" not in str(err.value) and not out.exists()
    # The plain Makefile stops with the same message before compiling anything.
    _, folder, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    proc = subprocess.run(
        ["make", "-C", str(copy), f"TFLM_DIR={bad}"],
        capture_output=True,
        text=True,
        env=python_first_env(),
    )
    assert proc.returncode != 0 and message in proc.stderr and fix.split(": ")[0] in proc.stderr
    assert not list(copy.glob("build-make/*.o"))


@pytest.mark.parametrize("keep", [("cmake", "make"), ()])
def test_a_missing_compiler_or_cmake_is_named_before_any_work(
    tflm_build, tmp_path, monkeypatch, keep
):
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in keep:
        (tools / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(tools))
    monkeypatch.delenv("CXX", raising=False)
    out = tmp_path / "fw"
    with pytest.raises(EdgennError) as err:
        export_firmware(MICRO, out, verify_examples=2, tflm_dir=tflm_build)
    message = str(err.value)
    assert "a C++ compiler (c++ or g++)" in message and "sudo apt-get install" in message
    assert ("cmake" in message.split("on PATH")[0]) == (not keep)
    assert not out.exists()


def test_a_model_with_an_op_tflm_lacks_is_refused_before_building(
    selfie_segmentation, tflm_build, tmp_path
):
    out = tmp_path / "fw"
    with pytest.raises(EdgennError, match="custom op Convolution2DTransposeBias"):
        export_firmware(selfie_segmentation, out, tflm_dir=tflm_build)
    assert not out.exists()


def test_arduino_sketch_compiles_and_runs_on_the_host(tflm_build, tmp_path):
    """The Arduino library, compiled as the Arduino IDE would (the .ino as C++ with Arduino.h
    included first) against a stand-in Arduino core, runs its example with the generated arena."""
    out = tmp_path / "ard"
    export_firmware(MICRO, out, name="fmnist", layout="arduino", verify_examples=2)
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "Arduino.h").write_text(ARDUINO_H)
    (stub / "TensorFlowLite.h").write_text("#pragma once\n")  # Arduino_TensorFlowLite's umbrella
    (stub / "main.cc").write_text(ARDUINO_MAIN)
    flags = dict(
        re.findall(r'^(TFLM_[A-Z_]+)="(.*)"$', (tflm_build / "flags.txt").read_text(), re.M)
    )
    exe = tmp_path / "sketch"
    args = ["g++", *flags["TFLM_CXXFLAGS"].split(), *flags["TFLM_INCLUDES"].split(), "-O2"]
    args += [f"-I{stub}", f"-I{out / 'src'}", "-include", "Arduino.h"]
    args += ["-x", "c++", str(out / "examples" / "fmnist" / "fmnist.ino"), "-x", "none"]
    args += [str(out / "src" / "fmnist_model_data.cc"), str(stub / "main.cc")]
    args += [*flags["TFLM_LDFLAGS"].split(), *flags["TFLM_LIBS"].split(), "-o", str(exe)]
    subprocess.run(args, check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0
    assert run.stdout.startswith("fmnist: outputs differing from the host: 0; inference us: ")
