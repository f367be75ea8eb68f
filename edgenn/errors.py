"""Errors that the library raises and the CLI prints as one line.

The library never prints and never exits: it raises :class:`EdgennError` with a message that says
what was received and what was expected, plus a hint that says how to fix it. ``edgenn.cli`` turns
it into a single line on stderr and exit code 1.
"""

from __future__ import annotations


class EdgennError(Exception):
    """An error the user can fix.

    Args:
        message: What was received and what was expected.
        hint: How to fix it (a command to run, an option to pass); optional.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} {self.hint}"
        return self.message


class UsageError(EdgennError):
    """A bad combination of options or arguments (exit code 2, like click's usage errors)."""

    exit_code = 2


class MissingDependencyError(EdgennError):
    """An optional package is not installed; the hint names the ``pip install`` line."""

    def __init__(self, package: str, purpose: str, install: str) -> None:
        super().__init__(
            f"{purpose} needs {package}, which is not installed.",
            f"Install it with: {install}",
        )
        self.package = package
        self.install = install
