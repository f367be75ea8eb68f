"""House rules that hold for every library module, checked on the source itself.

- No function is longer than :data:`MAX_FUNCTION_LINES` (one a reader can hold in their head).
- The library never prints: only ``edgenn/cli/`` and ``__main__`` entry points write to the terminal.
- Optional packages are imported through ``edgenn.optional`` only (one table of install lines).
- ``firmware_export`` never imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

MAX_FUNCTION_LINES = 60
LIBRARY = sorted([*(REPO / "edgenn").rglob("*.py"), *(REPO / "firmware_export").rglob("*.py")])
CLI = REPO / "edgenn" / "cli"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_library_is_found():
    names = {_rel(p) for p in LIBRARY}
    assert {"edgenn/artifact.py", "edgenn/cli/base.py", "edgenn/host/convert.py"} <= names


def test_no_function_is_too_long():
    long = []
    for path in LIBRARY:
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{_rel(path)}:{node.lineno} {node.name}() is {lines} lines")
    assert long == []


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":`` (a process entry point, not library code)."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _terminal_writes(tree: ast.Module) -> list[int]:
    """Lines that print: print(), click.echo(), sys.stdout/sys.stderr .write()."""
    skip = {id(n) for guard in tree.body if _is_main_guard(guard) for n in ast.walk(guard)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in skip:
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "print":
            found.append(node.lineno)
        elif isinstance(func, ast.Attribute):
            owner = ast.unparse(func.value)
            if (owner == "click" and func.attr in ("echo", "secho")) or (
                owner in ("sys.stdout", "sys.stderr") and func.attr == "write"
            ):
                found.append(node.lineno)
    return found


def test_the_library_never_prints():
    printing = []
    for path in LIBRARY:
        # The CLI and the ``python -m`` entry points are the programs that print.
        if CLI in path.parents or path.name == "__main__.py":
            continue
        printing += [f"{_rel(path)}:{line}" for line in _terminal_writes(_tree(path))]
    assert printing == [], "only edgenn/cli/ writes to the terminal"


def test_the_print_check_can_fail():
    tree = ast.parse("import sys, click\nprint(1)\nclick.echo(2)\nsys.stderr.write('x')\n")
    assert _terminal_writes(tree) == [2, 3, 4]


#: The one hand-written fallback import: the flatbuffer schema copy that an edgenn bundle installs
#: on tflite-runtime devices (it is not a package anyone installs with pip).
IMPORT_FALLBACKS = {("edgenn/tflite_model.py", "edgenn_tflite_schema")}


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every import below ``tree`` as ``(line, module)``; relative ones keep their dots."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def _guarded_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Imports inside ``try`` blocks whose handler catches ImportError."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        if not caught & {"ImportError", "ModuleNotFoundError"}:
            continue
        for inner in node.body:
            found += _imported_modules(inner)
    return found


def test_optional_imports_go_through_one_table():
    owner = REPO / "edgenn" / "optional.py"
    hand_written = []
    for path in LIBRARY:
        if path == owner:
            continue
        for line, module in _guarded_imports(_tree(path)):
            if (_rel(path), module) not in IMPORT_FALLBACKS:
                hand_written.append(f"{_rel(path)}:{line} imports {module} by hand")
    assert hand_written == [], "use edgenn.optional.require / try_import"


def test_optional_packages_are_never_imported_directly():
    """Not even inside a function: edgenn.optional.require gives the one-line install hint."""
    from edgenn import optional

    owner = REPO / "edgenn" / "optional.py"
    direct = []
    for path in LIBRARY:
        if path == owner:
            continue
        for line, module in _imported_modules(_tree(path)):
            if module.split(".")[0] in optional.DEPENDENCIES:
                direct.append(f"{_rel(path)}:{line} imports {module}")
    assert direct == []


@pytest.mark.parametrize("path", sorted((REPO / "firmware_export").rglob("*.py")), ids=_rel)
def test_firmware_export_never_imports_the_cli(path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("edgenn.cli"), _rel(path)
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("edgenn.cli") for a in node.names), _rel(path)
