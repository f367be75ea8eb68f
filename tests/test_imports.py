"""Device-side code never imports TensorFlow, Keras or an optional extra, not even lazily.

Every module outside ``edgenn/host/`` is found by walking the tree (no hand-written list) and
imported in a fresh interpreter in which TensorFlow, Keras and every optional extra of
:data:`edgenn.optional.DEPENDENCIES` (but the LiteRT runtimes) cannot be imported at all.
"""

from __future__ import annotations

import subprocess
import sys

from edgenn import optional

from .conftest import REPO, SAMPLES

#: What a device install has besides numpy, pillow and click: a LiteRT runtime.
RUNTIMES = {"ai_edge_litert", "tflite_runtime"}
BLOCKED = sorted({"tensorflow", "keras", "tf_keras", *optional.DEPENDENCIES} - RUNTIMES)

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def device_modules() -> list[str]:
    """Every module of edgenn and firmware_export except edgenn.host, found on disk."""
    names = []
    for package in ("edgenn", "firmware_export"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[:2] == ["edgenn", "host"] or parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


def test_the_walk_finds_every_device_module():
    names = device_modules()
    # The walk is the list: spot-check that it reaches into every sub-package.
    for expected in ("edgenn.cli.camera", "edgenn.targets.micro", "edgenn.tag", "edgenn.bundle"):
        assert expected in names
    assert not any(n.startswith("edgenn.host") for n in names)


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    blocker = BLOCKER.format(blocked=BLOCKED)
    return subprocess.run(
        [sys.executable, "-c", blocker + code, *args], capture_output=True, text=True, cwd=REPO
    )


def test_every_device_module_imports_without_tensorflow_or_extras():
    code = "\n".join(f"import {m}" for m in device_modules())
    code += "\nheavy = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)"
    code += "\nprint('HEAVY:', heavy)"
    out = _run(code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY: []" in out.stdout, out.stdout


def test_the_classifier_does_not_load_the_data_set_loaders():
    """A device that only classifies never imports the training data code."""
    out = _run("from edgenn import Classifier\nClassifier\nprint(sorted(sys.modules))")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'edgenn.predict'" in out.stdout and "edgenn.datasets" not in out.stdout


def test_the_blocker_really_blocks():
    out = _run("import cv2")
    assert out.returncode != 0 and "blocked" in out.stderr


PROBE = """
from pathlib import Path
from click.testing import CliRunner
from edgenn.cli import main
runner = CliRunner()
for args in (["--help"], ["--version"], *([name, "--help"] for name in main.commands)):
    result = runner.invoke(main, args)
    assert result.exit_code == 0, (args, result.output)
# Device commands for real, in this same process: predict, inspect on the targets that need no
# extra, bench.
model, image = sys.argv[1], sys.argv[2]
assert runner.invoke(main, ["predict", "-m", model, image]).exit_code == 0
for target, code in [("cpu", 0), ("gpu", 0), ("edgetpu", 1), ("tflite-runtime-2.14", 0)]:
    assert runner.invoke(main, ["inspect", model, "--target", target]).exit_code == code, target
# The micro check needs the [micro] extra: without it, one line naming the install.
result = runner.invoke(main, ["inspect", model, "--target", "micro"])
assert result.exit_code == 1 and "pip install 'edgenn[micro]'" in result.output, result.output
from edgenn.bench import BenchOptions, bench_one
assert bench_one(Path(model), BenchOptions(runs=5, accuracy_limit=50)).error is None
heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("HEAVY:", heavy)
"""


def test_help_and_device_commands_run_without_tensorflow_or_extras():
    model = REPO / "tests" / "data" / "tiny_cnn_int8.tflite"
    image = next(SAMPLES.glob("Bag/*.jpg"))
    out = _run(PROBE, str(model), str(image))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "HEAVY: []" in out.stdout, out.stdout + out.stderr


def test_python_dash_m_edgenn():
    out = subprocess.run(
        [sys.executable, "-m", "edgenn", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "edgenn, version" in out.stdout


TRAIN_WITHOUT_TF = """
from edgenn.cli import main
sys.argv = ["edgenn", "train", "--limit", "100", "-o", sys.argv[1]]
main()
"""


def test_train_without_tensorflow_says_how_to_install(tmp_path):
    out = _run(TRAIN_WITHOUT_TF, str(tmp_path / "run"))
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "edgenn: error: edgenn train needs tensorflow, which is not installed. "
        "Install it with: pip install 'edgenn[train]'"
    )
    assert not (tmp_path / "run").exists()
