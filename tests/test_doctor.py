"""edgenn doctor on real environments: LiteRT (this one), tflite-runtime 2.14 with numpy 1 and with
numpy 2, and none at all.

The other environments are real interpreters with real packages: ``.venv-tflite214`` (made by
``scripts/setup.sh test``) and a fresh ``venv --without-pip``, each given edgenn's own device
dependencies (click, Pillow, flatbuffers, and the flatbuffer schema an edgenn bundle installs for
tflite-runtime) through PYTHONPATH, as a device that installed edgenn would have them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgenn import optional, targets, tflite_model
from edgenn.cli import main
from edgenn.doctor import (
    FAIL,
    OK,
    STATUSES,
    WARN,
    Check,
    diagnose,
    edgetpu,
    probe,
    resources,
    system,
)
from edgenn.doctor import runtimes as rt
from edgenn.runtime import EDGETPU_LIBRARY, Runner

from .conftest import REPO
from .test_targets import _with_op_version

TFLITE_214 = REPO / ".venv-tflite214" / "bin" / "python"
INT8 = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"
UINT8IO = REPO / "tests" / "data" / "tiny_cnn_uint8io.tflite"
#: Runs the CLI with doctor registered (``python -m edgenn doctor`` once the CLI imports it).
CLI = "import edgenn.cli.doctor; from edgenn.cli import main; main(prog_name='edgenn')"


# ---- environments


#: Folders of bundled shared libraries that a package's wheel installs beside it.
LIBS = {"numpy": "numpy.libs", "PIL": "pillow.libs"}
#: edgenn's device dependencies besides numpy and the runtime.
DEVICE_PACKAGES = ["click", "PIL", "flatbuffers"]


def _overlay(tmp: Path, modules: list[str], schema: bool) -> Path:
    """A PYTHONPATH folder with these packages of this environment (and the schema copy)."""
    tmp.mkdir(parents=True, exist_ok=True)
    for module in modules:
        folder = Path(importlib.util.find_spec(module).origin).parent
        for path in (folder, folder.with_name(LIBS.get(module, f"{module}.libs"))):
            if path.exists():
                (tmp / path.name).symlink_to(path)
    if schema:
        # What an edgenn bundle installs for tflite-runtime (edgenn.bundle._copy_schema).
        source = importlib.util.find_spec("ai_edge_litert.schema_py_generated").origin
        shutil.copy(source, tmp / "edgenn_tflite_schema.py")
    return tmp


def _environment(overlay: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    return {**env, "PYTHONPATH": f"{overlay}{os.pathsep}{REPO}"}


@pytest.fixture(scope="module")
def tflite214(tmp_path_factory):
    """tflite-runtime 2.14 with numpy 1.26, as on 32-bit Pi OS."""
    assert TFLITE_214.is_file(), "run: bash scripts/setup.sh test (it makes .venv-tflite214)"
    overlay = _overlay(tmp_path_factory.mktemp("tfl214"), DEVICE_PACKAGES, schema=True)
    return TFLITE_214, _environment(overlay)


@pytest.fixture(scope="module")
def tflite214_numpy2(tmp_path_factory):
    """The same tflite-runtime 2.14, given numpy 2: the classic broken upgrade."""
    overlay = _overlay(tmp_path_factory.mktemp("np2"), [*DEVICE_PACKAGES, "numpy"], schema=True)
    return TFLITE_214, _environment(overlay)


@pytest.fixture(scope="module")
def no_runtime(tmp_path_factory):
    """A fresh virtual environment with numpy, Pillow and click and no runtime at all."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    overlay = _overlay(tmp_path_factory.mktemp("bare-site"), ["numpy", "click", "PIL"], False)
    env = _environment(overlay)
    found = subprocess.run(
        [str(python), "-c", "import ai_edge_litert"], env=env, capture_output=True, text=True
    )
    assert found.returncode != 0, "the bare environment must not see a runtime"
    return python, env


def _doctor(environment, *args: str) -> tuple[int, dict]:
    python, env = environment
    proc = subprocess.run(
        [str(python), "-c", CLI, "doctor", "--json", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    return proc.returncode, {c["name"]: c for c in doc["checks"]}


@pytest.fixture(scope="module")
def fc12(tmp_path_factory) -> Path:
    """edgenn's int8 CNN with FULLY_CONNECTED at version 12, as a newer converter writes it
    (dynamic-range dense layers are v12 from TF 2.17 on; tflite-runtime 2.14 stops at v10)."""
    path = tmp_path_factory.mktemp("fc12") / "cnn_fc12.tflite"
    path.write_bytes(_with_op_version(INT8, "FULLY_CONNECTED", 12))
    return path


# ---- this environment: LiteRT


@pytest.fixture(scope="module")
def here(fc12):
    return diagnose(fc12)


def test_litert_environment_is_ready(here):
    checks = {c.name: c for c in here.checks}
    assert here.ok and checks["runtime"].status == OK, checks["runtime"]
    assert checks["runtime"].found.startswith("ai-edge-litert 2.3.0 loads and runs")
    (installed,) = checks["runtime"].details["installed"]
    assert installed["output"][:4] == list(probe.PROBE_EXPECTED)
    # LiteRT 2.3 loads FULLY_CONNECTED v12: the real load says so, and so does the table.
    assert checks["model-runtime"].status == OK
    assert checks["model-runtime"].details["loadable_by"] == ["ai-edge-litert 2.3.0"]
    assert {c.status for c in here.checks} <= set(STATUSES)


def test_system_facts_match_the_machine(here):
    checks = {c.name: c for c in here.checks}
    release = system.os_release(Path("/etc/os-release").read_text())
    assert checks["os"].found.startswith(release["PRETTY_NAME"])
    cpu = checks["cpu"].details
    assert cpu["kernel_machine"] == os.uname().machine
    assert cpu["userland_bits"] == (64 if sys.maxsize > 2**32 else 32)
    assert set(cpu["features"]) <= set(system.CPU_FEATURES)
    page = os.sysconf("SC_PAGE_SIZE")
    assert checks["memory"].details["total_bytes"] == page * os.sysconf("SC_PHYS_PAGES")
    # The model's measured run decides the memory check.
    assert checks["memory"].details["model_peak_bytes"] > 10 * resources.MIB
    assert checks["disk"].details["free_bytes"][str(REPO)] > 0


def test_an_arm_board_is_named_from_its_cpuinfo():
    """A Raspberry Pi 4's /proc/cpuinfo (64-bit Pi OS): the board's name and its ASIMD."""
    text = (
        "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\n"
        "Revision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"
    )
    name, flags = system.cpuinfo(text)
    assert name == "Raspberry Pi 4 Model B Rev 1.1" and "asimd" in flags
    # x86 lists the model *number* under "model": the name comes from "model name".
    assert system.cpuinfo("model\t: 1\nmodel name\t: AMD EPYC\nflags\t: avx2\n")[0] == "AMD EPYC"


def test_cli_text_and_json(fc12):
    runner = CliRunner()
    text = runner.invoke(main, ["doctor", "--model", str(fc12)])
    assert text.exit_code == 0, text.output
    assert "ok    runtime" in text.stdout and "verdict: ready" in text.stdout
    assert "fix:    " in text.stdout  # the Edge TPU warning carries its install command
    doc = runner.invoke(main, ["doctor", "--json"])
    parsed = json.loads(doc.stdout)
    assert doc.exit_code == 0 and parsed["ok"] and parsed["model"] is None
    fields = {f.name for f in dataclasses.fields(Check)}
    assert all(set(c) == fields for c in parsed["checks"])
    helped = runner.invoke(main, ["doctor", "--help"])
    assert "edgenn doctor --model" in helped.stdout


def test_a_missing_model_fails_with_one_line(tmp_path):
    result = CliRunner().invoke(main, ["doctor", "--json", "--model", str(tmp_path / "no.tflite")])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 1 and checks["model"]["status"] == FAIL
    assert "Model not found" in checks["model"]["found"]


# ---- tflite-runtime 2.14


def test_tflite_runtime_214_loads_edgenn_models(tflite214):
    code, checks = _doctor(tflite214, "--model", INT8)
    assert code == 0, checks
    assert checks["runtime"]["status"] == OK
    assert checks["runtime"]["found"].startswith("tflite-runtime 2.14.0 loads and runs")
    assert checks["numpy"]["found"].startswith("numpy 1.")
    assert checks["model-runtime"]["status"] == OK


def test_tflite_runtime_214_cannot_load_fully_connected_v12(tflite214, fc12):
    code, checks = _doctor(tflite214, "--model", fc12)
    model = checks["model-runtime"]
    assert code == 1 and model["status"] == FAIL
    # The runtime's own words, the table's explanation, and the two ways out.
    assert "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'" in model["found"]
    assert "tflite-runtime 2.14.0 loads FULLY_CONNECTED up to version 10" in model["needed"]
    assert model["fix"] == f"{TFLITE_214} -m pip install ai-edge-litert"
    assert model["alternatives"] == ["edgenn convert RUN --target tflite-runtime-2.14"]
    assert "tflite-runtime-2.14" in targets.TARGETS


def test_tflite_runtime_214_lacks_mediapipes_custom_op(tflite214, selfie_segmentation):
    code, checks = _doctor(tflite214, "--model", selfie_segmentation)
    model = checks["model-runtime"]
    assert code == 1 and "unresolved custom op: Convolution2DTransposeBias" in model["found"]
    assert "Convolution2DTransposeBias" in model["needed"]
    assert model["fix"].endswith("-m pip install ai-edge-litert")


def test_tflite_runtime_214_under_numpy_2(tflite214_numpy2):
    code, checks = _doctor(tflite214_numpy2, "--model", INT8)
    assert code == 1
    # The model is fine: the runtime is what fails, and the fix is said once, there.
    assert checks["model-runtime"]["needed"] == "a working runtime: see runtime"
    runtime, numpy_check = checks["runtime"], checks["numpy"]
    assert (
        runtime["status"] == FAIL and "numpy.core.multiarray failed to import" in runtime["found"]
    )
    assert runtime["fix"] == f"{TFLITE_214} -m pip install 'numpy<2'"
    assert numpy_check["status"] == FAIL and numpy_check["fix"] == runtime["fix"]


# ---- no runtime at all


def test_no_runtime(no_runtime, fc12):
    code, checks = _doctor(no_runtime, "--model", fc12)
    python = no_runtime[0]
    runtime = checks["runtime"]
    assert code == 1 and runtime["status"] == FAIL
    assert (
        runtime["found"] == "no LiteRT runtime installed (ai-edge-litert, tflite-runtime not found)"
    )
    assert runtime["fix"] == f"{python} -m pip install ai-edge-litert"
    assert checks["model"]["status"] == FAIL and "cannot read it" in checks["model"]["found"]
    assert checks["model"]["fix"] == runtime["fix"]


# ---- install lines for other platforms


def _platform(
    machine: str, bits: int, python: tuple[int, int, int], features: tuple[str, ...] = ()
) -> system.Platform:
    """This machine's facts with another architecture, userland and Python."""
    return dataclasses.replace(
        system.detect(),
        kernel_machine=machine,
        userland_bits=bits,
        wheel_arch=system.wheel_arch(machine, bits),
        python=python,
        cpu_features=list(features),
    )


def test_install_line_for_each_platform():
    pi32 = rt.advice(_platform("armv7l", 32, (3, 11, 2)))
    assert pi32.package == "tflite-runtime"
    assert pi32.command.endswith("-m pip install tflite-runtime==2.14.0 'numpy<2'")
    # 32-bit Pi OS on a 64-bit kernel: pip installs armv7l wheels, so the same line.
    assert rt.advice(_platform("aarch64", 32, (3, 11, 2))).command == pi32.command
    assert rt.advice(_platform("aarch64", 64, (3, 11, 2))).package == "ai-edge-litert"
    assert rt.advice(_platform("x86_64", 64, (3, 10, 12))).package == "tflite-runtime"
    # Python 3.13 on 32-bit ARM: no wheel of either runtime; say what would work.
    trixie = rt.advice(_platform("armv7l", 32, (3, 13, 5)))
    assert trixie.package is None and trixie.command == ""
    assert "Python <= 3.11" in trixie.needed
    assert "pyenv install 3.11" in trixie.alternatives[0]
    assert "64-bit" in trixie.alternatives[1]
    assert rt.advice(_platform("armv6l", 32, (3, 11, 2))).package is None


def test_install_lines_are_the_projects_own():
    for packages in (optional.LITERT_PACKAGES, optional.TFLITE_RUNTIME_PACKAGES):
        assert f"pip install {packages}" in optional.RUNTIME_INSTALL


def test_cpu_check_flags_a_32_bit_os_on_a_64_bit_cpu():
    check = system.check_cpu(_platform("aarch64", 32, (3, 11, 2), ("asimd",)))
    assert check.status == WARN and "32-bit OS" in check.needed
    assert system.check_cpu(_platform("armv7l", 32, (3, 11, 2), ("neon",))).status == OK
    assert "NEON" in system.check_cpu(_platform("armv7l", 32, (3, 11, 2))).needed
    assert system.check_cpu(_platform("armv6l", 32, (3, 11, 2))).status == FAIL


def test_the_probe_model_is_one_add():
    model = tflite_model.load(probe.PROBE_MODEL)
    assert [(op.name, op.version) for op in model.ops] == [("ADD", 1)]
    assert model.input_details[0].shape == [1, 4] and model.input_details[0].dtype == "float32"
    out = Runner(probe.PROBE_MODEL).predict(np.array([probe.PROBE_INPUT], dtype=np.float32))
    assert tuple(out.ravel()) == probe.PROBE_EXPECTED


# ---- Edge TPU


def test_edge_tpu_runtime_absence_is_reported_with_the_install_command(here):
    with pytest.raises(OSError):
        import ctypes

        ctypes.CDLL(EDGETPU_LIBRARY)  # the fact the check reports: no runtime on this machine
    check = here.get("edgetpu-runtime")
    assert check.status == WARN and check.found.startswith(f"{EDGETPU_LIBRARY} not found")
    assert check.fix == edgetpu.INSTALL and "sudo apt-get install -y libedgetpu1-std" in check.fix


def _compiled_for_edgetpu(source: Path, min_runtime: int, compiler: str) -> bytes:
    """A real Edge TPU-style model (uint8 I/O) whose graph is one ``edgetpu-custom-op`` holding an
    executable package as edgetpu_compiler writes it: a FlexBuffer map whose key "4" is a DWN1
    flatbuffer (minimum runtime version, compiler version; no executable, nothing runs it here)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s
    from flatbuffers import flexbuffers

    b = flatbuffers.Builder(64)
    version = b.CreateString(compiler)
    b.StartObject(9)
    b.PrependInt32Slot(0, min_runtime, 0)
    b.PrependUOffsetTRelativeSlot(4, version, 0)
    b.Finish(b.EndObject(), file_identifier=b"DWN1")
    package = bytes(b.Output())
    fbb = flexbuffers.Builder()
    with fbb.Map():
        fbb.Int("1", 1)
        fbb.String("4", package.decode("ascii"))  # a flexbuffer string, as libedgetpu reads it
        fbb.Int("5", 0)
    model = s.ModelT.InitFromPackedBuf(bytearray(source.read_bytes()), 0)
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    code.customCode, code.version = edgetpu.EDGETPU_CUSTOM_OP, 1
    model.operatorCodes.append(code)
    graph = model.subgraphs[0]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = (
        len(model.operatorCodes) - 1,
        graph.inputs,
        graph.outputs,
    )
    op.customOptions = np.frombuffer(bytes(fbb.Finish()), dtype=np.uint8)
    graph.operators = [op]
    out = flatbuffers.Builder(1024)
    out.Finish(model.Pack(out), file_identifier=b"TFL3")
    return bytes(out.Output())


def test_edge_tpu_model_needs_the_runtime(tmp_path):
    path = tmp_path / "cnn_edgetpu.tflite"
    path.write_bytes(_compiled_for_edgetpu(UINT8IO, 14, "16.0.384591198"))
    model = tflite_model.load(path)
    info = edgetpu.compiled_model(model)
    assert (info.ops, info.min_runtime_version, info.compiler_versions) == (
        1,
        14,
        ["16.0.384591198"],
    )
    # The interpreter really needs the delegate for this op.
    with pytest.raises(Exception, match="edgetpu-custom-op"):
        Runner(path)
    result = CliRunner().invoke(main, ["doctor", "--json", "--model", str(path)])
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    compiled = checks["edgetpu-model"]
    assert result.exit_code == 1 and compiled["status"] == FAIL
    assert "compiler 16.0.384591198): needs runtime version 14" in compiled["found"]
    assert compiled["needed"] == "the Edge TPU runtime, version 14 or newer"
    assert compiled["fix"] == edgetpu.INSTALL
    assert checks["model-runtime"]["status"] == WARN


def test_an_older_edge_tpu_runtime_is_told_to_upgrade(tmp_path):
    """The version comparison, with the runtime a Coral set-up reports (RuntimeVersion(13))."""
    path = tmp_path / "m.tflite"
    path.write_bytes(_compiled_for_edgetpu(UINT8IO, 14, "16.0.384591198"))
    old = edgetpu.EdgeTpuRuntime(
        library="libedgetpu.so.1",
        loaded=True,
        version="BuildLabel(N/A), RuntimeVersion(13)",
        runtime_version=13,
        packages={"libedgetpu1-max": "15.0"},
        devices=["Coral USB Accelerator (USB 18d1:9302)"],
    )
    check = edgetpu.check_model(tflite_model.load(path), old)
    assert check.status == FAIL and check.needed == "Edge TPU runtime version 14 or newer"
    assert check.fix == "sudo apt-get update && sudo apt-get install --only-upgrade libedgetpu1-max"
    assert check.alternatives == [
        "on the host, compile for this runtime: edgetpu_compiler -m 13 MODEL.tflite"
    ]
    assert edgetpu.check_model(tflite_model.load(INT8), old) is None


def test_a_damaged_edge_tpu_package_is_named():
    with pytest.raises(ValueError, match="no custom options"):
        edgetpu.read_package(b"")
    with pytest.raises(ValueError, match="identifier"):
        from flatbuffers import flexbuffers

        edgetpu.read_package(bytes(flexbuffers.Dumps({"4": "TFL3TFL3"})))
