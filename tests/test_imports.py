"""Device-side code never imports TensorFlow or Keras, not even lazily."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO, SAMPLES

DEVICE_MODULES = [
    "edgenn",
    "edgenn.cli",
    "edgenn.data",
    "edgenn.preprocess",
    "edgenn.fileio",
    "edgenn.stdio",
    "edgenn.tflite_model",
    "edgenn.runtime",
    "edgenn.predict",
    "edgenn.bench",
    "edgenn.targets",
    "edgenn.targets.cpu",
    "edgenn.targets.gpu",
    "edgenn.targets.edgetpu",
    "edgenn.targets.micro",
    "edgenn.targets.runtime_versions",
    "firmware_export",
]

PROBE = """
import sys
from click.testing import CliRunner
{imports}
from edgenn.cli import main
runner = CliRunner()
for args in (["--help"], ["--version"], *([name, "--help"] for name in main.commands)):
    result = runner.invoke(main, args)
    assert result.exit_code == 0, (args, result.output)
# Device commands for real, in this same process: predict, inspect with every target, bench.
model, image = sys.argv[1], sys.argv[2]
assert runner.invoke(main, ["predict", "-m", model, image]).exit_code == 0
# The float-I/O int8 model cannot go to the Edge TPU (exit 1); it runs on every other target.
expected = [("cpu", 0), ("gpu", 0), ("edgetpu", 1), ("micro", 0), ("tflite-runtime-2.14", 0)]
for target, code in expected:
    assert runner.invoke(main, ["inspect", model, "--target", target]).exit_code == code, target
from edgenn.bench import BenchOptions, bench_one
assert bench_one(__import__("pathlib").Path(model), BenchOptions(runs=5, accuracy_limit=50)).error is None
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print("HEAVY:", heavy)
"""


def test_device_modules_and_help_do_not_import_tensorflow():
    code = PROBE.format(imports="\n".join(f"import {m}" for m in DEVICE_MODULES))
    model = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"
    image = next(SAMPLES.glob("Bag/*.jpg"))
    out = subprocess.run(
        [sys.executable, "-c", code, str(model), str(image)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY: []" in out.stdout, out.stdout + out.stderr


def test_python_dash_m_edgenn():
    out = subprocess.run(
        [sys.executable, "-m", "edgenn", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "edgenn, version" in out.stdout


BLOCK_TF = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError(f"No module named '{name}'")
sys.meta_path.insert(0, Block())
from edgenn.cli import main
sys.argv = ["edgenn", "train", "--limit", "100", "-o", sys.argv[1]]
main()
"""


def test_train_without_tensorflow_names_the_pip_line(tmp_path):
    """Without TensorFlow (blocked here; really absent in the device environment), train says how to
    install it in one line, exit 1, and writes nothing."""
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", BLOCK_TF, str(run)], capture_output=True, text=True)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        "edgenn: error: edgenn train needs TensorFlow, which is not installed. "
        "Install it with: pip install 'edgenn[train]'"
    ]
    assert not run.exists()
