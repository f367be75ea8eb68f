"""``edgenn tag``: keywords for photos, in XMP sidecars or a manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from edgenn.cli.base import main, print_json


@main.command(
    epilog="""\b
Examples:
  edgenn tag -m model.tflite ~/Pictures/holiday --recursive
  edgenn tag -m model.tflite photos/ -k 2 --threshold 0.3 --sidecar replace
  edgenn tag -m model.tflite photos/ --format csv -o tags.csv --json
"""
)
@click.option(
    "-m", "--model", type=click.Path(path_type=Path), required=True, help="The .tflite classifier."
)
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--recursive", is_flag=True, help="Walk sub-folders.")
@click.option("-k", "--top-k", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--threshold", type=float, default=0.5, show_default=True, help="Minimum score for a keyword."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["xmp", "json", "csv"]),
    default="xmp",
    show_default=True,
    help="XMP sidecars per photo, or one manifest for all.",
)
@click.option(
    "--sidecar",
    type=click.Choice(["ext", "replace"]),
    default="ext",
    show_default=True,
    help="ext: photo.jpg.xmp (darktable, digiKam); replace: photo.xmp (Lightroom).",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Manifest file for --format json/csv."
)
@click.option("--retag", is_flag=True, help="Tag photos this model tagged before again.")
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@click.option(
    "--workers", type=click.IntRange(min=1), help="Decoding threads [default: CPU count]."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def tag(photos: tuple[Path, ...], **opts: Any) -> None:
    """Tag photos with a model as XMP keywords (dc:subject, lr:hierarchicalSubject).

    Photos are never opened for writing; existing sidecars are merged. Exit code 0 when every
    photo was handled (tagged or already tagged), 1 when any failed.
    """
    from edgenn import tag as tag_mod

    files = tag_mod.find_photos(photos, opts["recursive"])
    summary, results = tag_mod.tag(
        opts["model"],
        files,
        top_k=opts["top_k"],
        threshold=opts["threshold"],
        fmt=opts["fmt"],
        sidecar=opts["sidecar"],
        retag=opts["retag"],
        dry_run=opts["dry_run"],
        output=opts["output"],
        workers=opts["workers"],
        progress=tag_mod.progress_printer(),
        warn=lambda line: click.echo(line, err=True),
    )
    if opts["as_json"]:
        print_json(dataclasses.asdict(summary))
    else:
        if opts["dry_run"]:
            for r in results:
                if r.status == "tagged":
                    click.echo(
                        f"{r.photo}: would tag {', '.join(r.keywords) or '(no label over threshold)'}"
                    )
        labels = ", ".join(f"{k} {v}" for k, v in summary.per_label.items()) or "-"
        click.echo(
            f"{summary.photos} photos: {summary.tagged} tagged, {summary.skipped} skipped (already "
            f"tagged by this model), {summary.failed} failed; {summary.photos_per_second} photos/s"
        )
        click.echo(f"per label: {labels}")
    if summary.failed:
        raise SystemExit(1)
