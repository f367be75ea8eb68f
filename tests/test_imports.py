"""Device-side code never imports TensorFlow or Keras, not even lazily."""

from __future__ import annotations

import subprocess
import sys

DEVICE_MODULES = [
    "edgenn",
    "edgenn.cli",
    "edgenn.data",
    "edgenn.preprocess",
    "edgenn.fileio",
    "firmware_export",
]

PROBE = """
import sys
from click.testing import CliRunner
{imports}
from edgenn.cli import main
runner = CliRunner()
for args in (["--help"], ["--version"], ["train", "--help"]):
    result = runner.invoke(main, args)
    assert result.exit_code == 0, (args, result.output)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print("HEAVY:", heavy)
"""


def test_device_modules_and_help_do_not_import_tensorflow():
    code = PROBE.format(imports="\n".join(f"import {m}" for m in DEVICE_MODULES))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
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
