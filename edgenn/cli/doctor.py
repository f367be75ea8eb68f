"""``edgenn doctor``: what this device has, what it lacks to run edgenn models, and the fixes."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import click

from edgenn.cli.base import main, print_json
from edgenn.doctor import FAIL, OK, WARN, DoctorReport, diagnose

#: How each status reads in the table.
MARKS = {OK: "ok", WARN: "warn", FAIL: "FAIL"}


@main.command(
    epilog="""\b
Examples:
  edgenn doctor
  edgenn doctor --model models/fmnist-int8.tflite
  edgenn doctor --model coral/model_edgetpu.tflite --json
"""
)
@click.option(
    "-m",
    "--model",
    type=click.Path(path_type=Path),
    help="Also check that the runtime here can load and run this .tflite model.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def doctor(model: Path | None, as_json: bool) -> None:
    """Check this device: Python, OS, CPU, the LiteRT runtime, Edge TPU, cameras, memory, disk.

    Each finding says what was found, what is needed and the command that fixes it. The exit
    code is 1 when a check fails (warnings alone give 0).
    """
    progress = None if as_json else (lambda m: click.echo(f"edgenn doctor: {m}", err=True))
    report = diagnose(model, progress=progress)
    if as_json:
        print_json(report.to_dict())
    else:
        click.echo(table(report))
    if not report.ok:
        raise SystemExit(1)


def table(report: DoctorReport) -> str:
    """The findings as a table for people: one line each, with needed/fix lines under problems."""
    width = max(len(c.name) for c in report.checks)
    columns = max(shutil.get_terminal_size((100, 24)).columns, 80)
    indent = " " * (6 + width + 2)
    lines = []
    for c in report.checks:
        head = f"{MARKS[c.status]:<5} {c.name:<{width}}  "
        lines.append(_wrap(c.found, columns, head, indent))
        if c.needed:
            lines.append(_wrap(c.needed, columns, indent + "needed: ", indent + " " * 8))
        # Commands are never wrapped: they are copied and pasted.
        if c.fix:
            lines.append(f"{indent}fix:    {c.fix}")
        lines += [f"{indent}or:     {alternative}" for alternative in c.alternatives]
    failed, warned = report.count(FAIL), report.count(WARN)
    verdict = "ready" if report.ok else "not ready"
    lines.append(
        f"verdict: {verdict} ({len(report.checks)} checks, {failed} failed, {warned} warnings)"
    )
    return "\n".join(lines)


def _wrap(text: str, columns: int, first: str, rest: str) -> str:
    """``text`` wrapped to the terminal, paths kept whole."""
    return textwrap.fill(
        text, columns, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )
