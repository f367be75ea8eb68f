"""[device] Names and text that go into generated C++, CMake and make files.

The C prefix (``--name``) becomes file names, C++ symbols and CMake/make target names, so it must
be valid in all three; labels and the model's file name are user text that ends up inside C++
string literals and comments, so they are escaped for every C++ dialect a board toolchain may use
(including the ones that still replace trigraphs such as ``??=``).
"""

from __future__ import annotations

import re
from pathlib import Path

from edgenn.errors import UsageError

#: Target names CMake's generators reserve (policy CMP0037), plus the ones CTest and CPack reserve
#: when a project includes them; compared without case (Visual Studio's ALL_BUILD, INSTALL...).
RESERVED_TARGETS = (
    "all",
    "all_build",
    "clean",
    "depend",
    "edit_cache",
    "help",
    "install",
    "list_install_components",
    "package",
    "package_source",
    "preinstall",
    "rebuild_cache",
    "run_tests",
    "test",
    "zero_check",
)
#: The prefix becomes part of file names (``NAME_model_data.cc``): keep them well under 255 bytes.
MAX_NAME = 100
#: What a name derived from a file name starts with when the file name does not start a C name.
NAME_PREFIX = "model"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Characters kept as they are in a // comment; others (a backslash, which would continue the
#: comment on the next line, a ``?`` that could start a trigraph, control characters) become ``_``.
_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 ._+,()-]")


def problem(name: str) -> str | None:
    """Why ``name`` cannot be the C prefix, or None when it can.

    Args:
        name: A candidate prefix.

    Returns:
        The reason, one sentence without the option name.
    """
    if not _IDENTIFIER.fullmatch(name):
        return "is not a C identifier (ASCII letters, digits and underscores, not starting with a digit)"
    if name.startswith("_") or "__" in name:
        return (
            "starts with an underscore or contains '__': C++ reserves such identifiers "
            "for the compiler and its library"
        )
    if name.lower() in RESERVED_TARGETS:
        return (
            "is a target name CMake reserves (like all, clean, help, install and test), so the "
            "generated CMakeLists.txt could not build it"
        )
    if len(name) > MAX_NAME:
        return f"has {len(name)} characters; it becomes part of file names, at most {MAX_NAME}"
    return None


def check_name(name: str) -> str:
    """The ``--name`` the user gave, refused with the reason when it cannot be used.

    Args:
        name: The prefix.

    Returns:
        ``name``.

    Raises:
        UsageError: It cannot be used (the message names a valid alternative).
    """
    why = problem(name)
    if why:
        raise UsageError(f"--name {name!r} {why}; choose another, e.g. --name {derive(name)}.")
    return name


def derive(text: str) -> str:
    """A valid C prefix made from any text (a model file's name, a refused ``--name``).

    Runs of other characters become one underscore; a name that would start with a digit, or is
    empty, gets the prefix ``model``; a reserved target name gets the suffix ``_model``.

    Args:
        text: The text.

    Returns:
        A prefix :func:`problem` accepts.
    """
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:MAX_NAME].rstrip("_")
    if not name:
        return NAME_PREFIX
    if name[0].isdigit():
        name = f"{NAME_PREFIX}_{name}"[:MAX_NAME].rstrip("_")
    if name.lower() in RESERVED_TARGETS:
        name = f"{name}_{NAME_PREFIX}"
    return name


def name_for(model_path: Path, name: str | None) -> str:
    """The C prefix: ``name`` when given (checked), else one derived from the model's file name.

    Args:
        model_path: The model file.
        name: The ``--name`` option, or None.

    Returns:
        The prefix.

    Raises:
        UsageError: ``name`` was given and cannot be used.
    """
    if name is not None:
        return check_name(name)
    return derive(Path(model_path).stem)


def c_string(text: str) -> str:
    r"""``text`` as a C/C++ string literal that every dialect reads back as the same UTF-8 bytes.

    Printable ASCII stays readable; ``"`` and ``\`` are escaped, ``?`` becomes ``\?`` so that no
    trigraph (``??=`` is ``#`` before C++17) can form, and every other byte (non-ASCII UTF-8 such
    as an emoji, control characters) is a three-digit octal escape, which never swallows a digit
    that follows it (a hex escape would).

    Args:
        text: Any text.

    Returns:
        The literal, quotes included.
    """
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\?':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def comment_text(text: str) -> str:
    """``text`` made safe inside a ``//`` comment (no line continuation, trigraph or newline)."""
    return _COMMENT_SAFE.sub("_", text)
