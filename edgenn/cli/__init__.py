"""The ``edgenn`` command line: the only package that knows click.

Each command parses its options, calls one library function and prints the result: a table or
summary for people on stdout, ``--json`` for machines, progress and logs on stderr. Library errors
(:class:`edgenn.errors.EdgennError`) become one line on stderr and exit code 1 (2 for usage
errors). Host-side modules (TensorFlow) are imported inside the commands that need them, so that
``edgenn --help`` and the device commands start fast and work without TensorFlow.

One module per command group; importing them registers their commands on :data:`main`.
"""

from edgenn.cli import (  # noqa: F401
    bundle,
    camera,
    convert,
    doctor,
    firmware,
    predict,
    tag,
    train,
    tune,
)
from edgenn.cli.base import main

__all__ = ["main"]
