"""``edgenn tag``: keywords for photos, in XMP sidecars or a manifest."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import IO, Any

import click

from edgenn import tag as tag_lib
from edgenn import xmp
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
@click.option(
    "-k",
    "--top-k",
    type=click.IntRange(min=1),
    default=tag_lib.DEFAULT_TOP_K,
    show_default=True,
    help="Labels considered per photo.",
)
@click.option(
    "--threshold",
    type=float,
    default=tag_lib.DEFAULT_THRESHOLD,
    show_default=True,
    help="Minimum score for a keyword.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(tag_lib.FORMATS),
    default=tag_lib.DEFAULT_FORMAT,
    show_default=True,
    help="XMP sidecars per photo, or one manifest for all.",
)
@click.option(
    "--sidecar",
    type=click.Choice(xmp.SIDECAR_STYLES),
    default=xmp.DEFAULT_SIDECAR_STYLE,
    show_default=True,
    help=xmp.describe_styles() + ".",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help=f"Manifest file for --format {'/'.join(tag_lib.MANIFEST_FORMATS)}.",
)
@click.option("--retag", is_flag=True, help="Tag photos this model tagged before again.")
@click.option("--dry-run", is_flag=True, help="Show what would be written; write nothing.")
@click.option(
    "--workers", type=click.IntRange(min=1), help="Decoding threads [default: CPU count]."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def tag(photos: tuple[Path, ...], **opts: Any) -> None:
    """Tag photos with a model as XMP keywords (dc:subject, lr:hierarchicalSubject).

    Photos are never opened for writing; existing sidecars are merged, keeping their mode and
    owner, and a retag removes only the keywords edgenn added (yours stay). Photos that would
    share a sidecar (img.jpg and img.png with --sidecar replace) fail, with the reason. Exit
    code 0 when every photo was handled (tagged or already tagged), 1 when any failed.
    """
    files = tag_lib.find_photos(photos, opts["recursive"])
    summary, results = tag_lib.tag(
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
        progress=progress_printer(),
        warn=lambda message: click.echo(f"edgenn: warning: {message}", err=True),
    )
    if opts["as_json"]:
        print_json(dataclasses.asdict(summary))
    else:
        _print_summary(summary, results, opts["dry_run"])
    if summary.failed:
        raise SystemExit(1)


def _print_summary(
    summary: tag_lib.TagSummary, results: list[tag_lib.PhotoResult], dry_run: bool
) -> None:
    if dry_run:
        for r in results:
            if r.status == "tagged":
                keywords = ", ".join(r.keywords) or "(no label over threshold)"
                click.echo(f"{r.photo}: would tag {keywords}")
    labels = ", ".join(f"{k} {v}" for k, v in summary.per_label.items()) or "-"
    click.echo(
        f"{summary.photos} photos: {summary.tagged} tagged, {summary.skipped} skipped (already "
        f"tagged by this model), {summary.failed} failed; {summary.photos_per_second} photos/s"
    )
    click.echo(f"per label: {labels}")


def progress_printer(stream: IO[str] | None = None) -> tag_lib.Progress:
    """A progress bar with photos per second and ETA (a line per 10% when not on a terminal).

    Args:
        stream: Where to write (default: stderr).

    Returns:
        A callback for :func:`edgenn.tag.tag`'s ``progress``.
    """
    stream = stream or sys.stderr
    tty = stream.isatty()
    state = {"last": 0.0, "decile": -1}

    def show(done: int, total: int, rate: float) -> None:
        now = time.perf_counter()
        decile = int(10 * done / max(total, 1))
        # On a terminal redraw at most five times a second; in a log, one line per 10%.
        if tty and now - state["last"] < 0.2 and done < total:
            return
        if not tty and decile == state["decile"] and done < total:
            return
        state["last"], state["decile"] = now, decile
        eta = (total - done) / rate if rate > 0 else 0.0
        bar = "#" * int(30 * done / max(total, 1))
        line = f"tag [{bar:<30}] {done}/{total} {rate:.1f} photos/s ETA {eta:.0f}s"
        stream.write(("\r\x1b[K" if tty else "") + line + ("" if tty and done < total else "\n"))
        stream.flush()

    return show
