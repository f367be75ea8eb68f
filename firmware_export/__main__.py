"""``python -m firmware_export``: the firmware exporter on its own, without the ``edgenn`` CLI.

``firmware_export`` stands beside ``edgenn`` and never imports its command line; this entry point
takes the same arguments as ``edgenn firmware`` (choices and defaults from the same constants) and
prints the same lines. Errors are one line on stderr, exit code 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import sys

from edgenn.datasets import dataset_option
from edgenn.errors import EdgennError
from firmware_export.generate import (
    DEFAULT_ARENA_MARGIN,
    DEFAULT_DATASET,
    DEFAULT_LAYOUT,
    DEFAULT_VERIFY_EXAMPLES,
    LAYOUTS,
    TFLM_ENV,
    export_firmware,
    report_lines,
    summary,
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more; received {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """The argument parser (``edgenn firmware``'s options)."""
    p = argparse.ArgumentParser(
        prog="python -m firmware_export",
        description="Write TFLite Micro sources for an int8 model, verified on the host.",
        epilog="Example: python -m firmware_export mcu/model.tflite -o firmware/fmnist",
    )
    p.add_argument("model", help="The int8 .tflite model.")
    p.add_argument("-o", "--output", required=True, help="Folder to create.")
    p.add_argument("--name", help="C identifier prefix [default: the model file's name].")
    p.add_argument("--layout", choices=LAYOUTS, default=DEFAULT_LAYOUT)
    p.add_argument("--arena-margin", type=float, default=float(DEFAULT_ARENA_MARGIN))
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument(
        "--test-images",
        type=_positive,
        default=DEFAULT_VERIFY_EXAMPLES,
        help="How many test images the checks run.",
    )
    p.add_argument(
        "--tflm",
        help="TFLite Micro to build against (build.sh folder or built tree); implies --verify-build.",
    )
    p.add_argument(
        "--verify-build",
        action="store_true",
        help=f"Build against --tflm (default: ${TFLM_ENV}) and run the compiled check program.",
    )
    p.add_argument("--overwrite", action="store_true", help="Replace an existing output folder.")
    p.add_argument("--json", action="store_true", help="Print the result as JSON.")
    return p


def run(argv: list[str]) -> int:
    """Run the exporter with command-line arguments; return the exit code."""
    args = parser().parse_args(argv)
    try:
        result = export_firmware(
            args.model,
            args.output,
            name=args.name,
            layout=args.layout,
            arena_margin=args.arena_margin,
            overwrite=args.overwrite,
            dataset=dataset_option(args.dataset),
            verify_examples=args.test_images,
            tflm_dir=args.tflm,
            verify_build=args.verify_build,
            progress=lambda message: print(f"firmware_export: {message}", file=sys.stderr),
        )
    except EdgennError as exc:
        print(f"firmware_export: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(summary(result), indent=2, default=str))
    else:
        print("\n".join(report_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
