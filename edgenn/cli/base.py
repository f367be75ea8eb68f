"""The ``edgenn`` command group and the helpers every command module shares.

Each command parses its options, calls one library function and prints the result: a table or
summary for people on stdout, ``--json`` for machines, progress and logs on stderr. Library errors
(:class:`edgenn.errors.EdgennError`) become one line on stderr and exit code 1 (2 for usage
errors). Host-side modules (TensorFlow) are imported inside the commands that need them, so that
``edgenn --help`` and the device commands start fast and work without TensorFlow.
"""

from __future__ import annotations

import json
from typing import Any

import click

from edgenn import __version__
from edgenn.errors import EdgennError

ROOT_HELP = """Train compact neural networks and run them on edge devices.

\b
Examples:
  edgenn train --dataset fashion-mnist --model cnn --epochs 15 -o runs/fmnist-cnn
  edgenn convert runs/fmnist-cnn --quantize int8 -o runs/fmnist-cnn/model_int8.tflite
  edgenn inspect runs/fmnist-cnn/model_int8.tflite --target edgetpu
  edgenn predict -m runs/fmnist-cnn/model_int8.tflite datasets/fashion-mnist-samples/Bag
  edgenn bench runs/fmnist-cnn runs/fmnist-cnn/model_int8.tflite --plot bench.png
"""


class EdgennGroup(click.Group):
    """A click group that prints library errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, turning EdgennError into a one-line message and an exit code."""
        try:
            return super().invoke(ctx)
        except EdgennError as exc:
            click.echo(f"edgenn: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("edgenn: interrupted", err=True)
            ctx.exit(130)


@click.group(
    cls=EdgennGroup,
    help=ROOT_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="edgenn")
def main() -> None:
    """Entry point of the ``edgenn`` console script."""


def int_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """Click callback: ``128,64`` -> ``[128, 64]``."""
    if value is None:
        return None
    try:
        items = [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers such as 128,64; received {value!r}"
        ) from None
    if not items:
        raise click.BadParameter(f"expected at least one integer; received {value!r}")
    return items


def parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """Click callback: ``28`` or ``96x96`` -> ``[height, width]``."""
    if value is None:
        return None
    parts = value.lower().replace("x", ",").split(",")
    try:
        dims = [int(p) for p in parts if p]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise click.BadParameter(
            f"expected SIZE or HEIGHTxWIDTH such as 28 or 96x96; received {value!r}"
        )
    return dims


def print_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(doc, indent=2, default=str))
