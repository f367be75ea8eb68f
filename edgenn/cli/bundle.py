"""``edgenn bundle`` and ``edgenn deploy``: a folder that installs on a device, and copying it there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from edgenn.bundle import BUNDLE_TARGETS, DEFAULT_TARGET, SERVICES
from edgenn.cli.base import main, print_json


def _choices_help(records: dict, lead: str) -> str:
    """``lead`` followed by one ``name: help`` phrase per record of a registry."""
    return lead + " " + "; ".join(f"{name}: {r.help}" for name, r in records.items()) + "."


@main.command(
    epilog="""\b
Examples:
  edgenn bundle runs/fmnist-cnn/model_int8.tflite -o bundle-pi --target pi
  edgenn bundle pi/model.tflite -o bundle-legacy --target pi-legacy --service tag
  edgenn bundle runs/fmnist-cnn/model_int8.tflite -o bundle-cam --service camera
"""
)
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Folder to create."
)
@click.option(
    "--target",
    type=click.Choice(list(BUNDLE_TARGETS)),
    default=DEFAULT_TARGET,
    show_default=True,
    help=_choices_help(BUNDLE_TARGETS, "The device."),
)
@click.option(
    "--service",
    type=click.Choice(list(SERVICES)),
    help=_choices_help(SERVICES, "Also write a systemd unit for this job."),
)
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bundle(
    models: tuple[Path, ...],
    output: Path,
    target: str,
    service: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Make a self-contained folder that installs and runs the model(s) on a Pi or a Coral."""
    from edgenn.bundle import make_bundle

    result = make_bundle(list(models), output, target, service, overwrite)
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    job = f", {result.service} service" if result.service else ""
    click.echo(f"{result.output}: bundle for {result.target}{job} ({len(result.files)} files)")
    for m in result.models:
        click.echo(f"  {m['model']}: {m['size_bytes']:,} B; {m['check']}: {m['verdict']}")
    click.echo(f"  requirements: {', '.join(result.requirements)}")
    click.echo(
        f"  next: copy it to the device and run ./install.sh (or: edgenn deploy {result.output} USER@HOST)"
    )


@main.command(
    epilog="""\b
Deploy replaces the folder's contents (rsync --delete; the device's .venv stays),
so it deploys only into a new or empty folder, or one an earlier deploy marked
with a .edgenn-deploy file; it refuses any other.
\b
Examples:
  edgenn deploy bundle-pi pi@raspberrypi.local
  edgenn deploy bundle-pi pi@10.0.0.7:apps/classifier --run --ssh-option=-p --ssh-option=2222
  edgenn deploy bundle-cam 'pi@[fe80::2%wlan0]:camera' --run --json
"""
)
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.argument("destination")
@click.option(
    "--run",
    is_flag=True,
    help="Install and (re)start the bundle's systemd unit for this folder and user (or check "
    "that edgenn runs there).",
)
@click.option("--ssh-option", "ssh_options", multiple=True, help="Extra ssh argument (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def deploy(
    bundle_dir: Path, destination: str, run: bool, ssh_options: tuple[str, ...], as_json: bool
) -> None:
    """Copy a bundle to USER@HOST[:PATH] with rsync over ssh and run its install.sh there."""
    from edgenn.bundle_deploy import deploy as run_deploy

    result = run_deploy(bundle_dir, destination, run, list(ssh_options))
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    click.echo(result.output.rstrip())
    click.echo(f"deployed to {result.destination}" + (" and started" if result.started else ""))
