"""``edgenn firmware``: TFLite Micro sources for a microcontroller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgenn.cli.base import main, print_json
from firmware_export import (
    DEFAULT_ARENA_MARGIN,
    DEFAULT_DATASET,
    DEFAULT_LAYOUT,
    DEFAULT_VERIFY_EXAMPLES,
    LAYOUTS,
    TFLM_ENV,
)


@main.command(
    epilog="""\b
Examples:
  edgenn firmware runs/fmnist-cnn/model_int8.tflite -o firmware/fmnist --name fmnist
  edgenn firmware mcu/model.tflite -o arduino/fmnist --layout arduino --arena-margin 20
  edgenn firmware mcu/model.tflite -o firmware/fmnist --tflm ~/tflite-micro --verify-build
  python -m firmware_export mcu/model.tflite -o firmware/fmnist
"""
)
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder to create."
)
@click.option("--name", help="C identifier prefix [default: the model file's name].")
@click.option("--layout", type=click.Choice(LAYOUTS), default=DEFAULT_LAYOUT, show_default=True)
@click.option(
    "--arena-margin",
    type=float,
    default=float(DEFAULT_ARENA_MARGIN),
    show_default=True,
    help="Percent added to the measured minimum tensor arena.",
)
@click.option(
    "--dataset",
    default=DEFAULT_DATASET,
    show_default=True,
    help="Test images that verify TFLM against LiteRT (random inputs if they do not fit; none).",
)
@click.option(
    "--test-images",
    type=click.IntRange(min=1),
    default=DEFAULT_VERIFY_EXAMPLES,
    show_default=True,
    help="How many test images the checks run (Fashion-MNIST has 10,000).",
)
@click.option(
    "--tflm",
    "tflm_dir",
    type=click.Path(path_type=Path),
    help="TFLite Micro to build against: a folder made by TFLM's build.sh (flags.txt) or a "
    "tree where `make -f tensorflow/lite/micro/tools/make/Makefile microlite` has run. "
    "Implies --verify-build.",
)
@click.option(
    "--verify-build",
    is_flag=True,
    help="Build the project with its CMakeLists.txt against --tflm (default: "
    f"${TFLM_ENV}), measure the arena on the compiled program and run it on the test images.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def firmware(model: Path, output: Path, **opts: Any) -> None:
    """Write TFLite Micro sources for an int8 model, verified on the host (bit-exact, compiled)."""
    from edgenn.datasets import dataset_option
    from firmware_export.generate import export_firmware, report_lines, summary

    result = export_firmware(
        model,
        output,
        name=opts["name"],
        layout=opts["layout"],
        arena_margin=opts["arena_margin"],
        overwrite=opts["overwrite"],
        dataset=dataset_option(opts["dataset"]),
        verify_examples=opts["test_images"],
        tflm_dir=opts["tflm_dir"],
        verify_build=opts["verify_build"],
        progress=lambda message: click.echo(f"firmware: {message}", err=True),
    )
    if opts["as_json"]:
        print_json(summary(result))
        return
    for line in report_lines(result):
        click.echo(line)
