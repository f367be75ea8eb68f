"""``edgenn tune``: search the model builders for the most accurate model that fits a device.

The options are ``edgenn train``'s data and model options (each one given fixes that part of the
search), the search space, the target and its limits, and where the study lives. Choices and
defaults come from the library: :class:`edgenn.host.tune.TuneOptions`,
:data:`edgenn.host.tuning.objectives.OBJECTIVE_NAMES`, :data:`edgenn.targets.TARGETS`.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click

from edgenn import targets
from edgenn.cli.base import main, print_json
from edgenn.cli.train import data_options, model_options
from edgenn.errors import UsageError
from edgenn.host.train import TrainConfig, config_options
from edgenn.host.tune import TuneEvent, TuneOptions, TuneResult
from edgenn.host.tuning.objectives import OBJECTIVE_NAMES, OBJECTIVES, Constraints, parse_bytes
from edgenn.host.tuning.report import TrialRecord, pareto_rows

#: What ``edgenn tune`` does when an option is not given.
_TUNE = TuneOptions(output=Path("."))
#: The train options a user can give (the names ``config_options`` uses).
_TRAIN_OPTIONS = tuple(config_options(TrainConfig()))
#: Seconds between redraws of the bar on a terminal.
_REDRAW = 0.2


def _bytes(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Click callback: ``64KB`` -> 65536."""
    if value is None:
        return None
    try:
        return parse_bytes(value, f"--{param.name.replace('_', '-')}")
    except UsageError as exc:
        raise click.BadParameter(exc.message) from None


#: How a trial line labels each figure.
_LABELS = {"val_accuracy": "acc", "size_bytes": "size", "arena_bytes": "arena", "latency_ms": "p50"}
_UNITS = {"size_bytes": " B", "arena_bytes": " B", "latency_ms": " ms"}


def _figures(r: TrialRecord) -> str:
    """``acc 91.20%  size 52,112 B  arena 20,112 B  p50 0.0451 ms`` (what was measured)."""
    shown = []
    for o in OBJECTIVES.values():
        value = getattr(r, o.attr)
        if value is not None:
            shown.append(f"{_LABELS[o.attr]} {o.format(value)}{_UNITS.get(o.attr, '')}")
    return "  ".join(shown)


class StudyBar:
    """Draws :class:`TuneEvent` reports on stderr.

    A line per finished trial; on a terminal also a bar for the study with the running trial's
    epoch.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._drawn = 0.0

    def _line(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def __call__(self, e: TuneEvent) -> None:
        """Print a finished trial, a retry or a wait; redraw the bar for a running trial."""
        count = f"[{e.finished}/{e.total}]"
        if e.kind == "finished" and e.record is not None:
            r = e.record
            why = f"  ({r.reason})" if r.reason else ""
            took = f"  {r.trial_seconds:.0f}s" if r.trial_seconds else ""
            self._line(
                f"{count} trial {r.number} {r.state:<8} {_figures(r)}  {r.summary()}{took}{why}"
            )
        elif e.kind == "retry" and e.record is not None:
            self._line(
                f"{count} trial {e.record.number} was stopped mid-way (its worker is gone): "
                "its parameters run again"
            )
        elif e.kind == "wait":
            self._line(f"{count} waiting for other workers' trials to finish")
        elif e.kind == "trial" and e.trial is not None and self.tty:
            self._redraw(count, e)

    def _redraw(self, count: str, e: TuneEvent) -> None:
        now = time.perf_counter()
        if now - self._drawn < _REDRAW and e.trial.kind == "epoch" and not e.trial.epoch.epoch_end:
            return
        self._drawn = now
        done = int(e.finished / max(e.total, 1) * 20)
        bar = f"{count} [{'#' * done:<20}] trial {e.trial.number}"
        p = e.trial.epoch
        if p is not None:
            bar += f" epoch {p.epoch}/{p.epochs} {p.step}/{p.steps}"
        else:
            bar += {"start": " starting", "check": " training", "convert": " converting"}.get(
                e.trial.kind, ""
            )
        self.stream.write("\r\x1b[K" + bar)
        self.stream.flush()


def _given(opts: dict[str, Any], ctx: click.Context) -> dict[str, Any]:
    """The train options the user gave (a default leaves its part of the space searched)."""
    given = {}
    for name in _TRAIN_OPTIONS:
        source = ctx.get_parameter_source(name)
        if name in opts and source not in (None, click.core.ParameterSource.DEFAULT):
            value = opts[name]
            given[name] = str(value) if isinstance(value, Path) else value
    return given


def _interrupt(signum: int, frame: Any) -> None:
    # SIGTERM (a scheduler stopping the job) ends the run as Ctrl-C does: the running trial is
    # queued again and the study stays consistent.
    raise KeyboardInterrupt


def _print_summary(result: TuneResult) -> None:
    rows = pareto_rows(result.pareto)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    title = "Pareto front" if len(result.objectives) > 1 else "best trial"
    click.echo(f"{title} ({', '.join(result.objectives)}; {result.target} int8, validation split):")
    for row in rows:
        click.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    c = result.counts
    click.echo(
        f"{result.output}: {result.finished} of {result.trials} trials finished "
        f"({c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, {c.get('FAIL', 0)} "
        f"failed) in study {result.study_name!r} ({result.storage})"
    )
    b = result.best
    if b is None:
        click.echo("no trial completed yet: rerun the same command to continue")
        return
    where = f"{result.best_dir} -> trials/{b.number:04d}" if result.best_dir else f"on {b.worker}"
    click.echo(f"best: trial {b.number}, {_figures(b)}: {b.summary()} ({where})")
    click.echo(f"replay: edgenn train --config {result.files['best_json']} -o runs/best")


@main.command(
    epilog="""\b
Examples:
  edgenn tune --model cnn --max-size 64KB --trials 30 -o runs/tune-64k
  edgenn tune --target micro --max-arena 48KB --objective accuracy --objective arena -o runs/mcu
  edgenn tune --space benchmarks/configs/space-fmnist-cnn.json --trials 40 -o runs/tune
  edgenn tune --objective accuracy --epochs 10 --limit 5000 --trials 10 -o runs/quick
  edgenn tune --storage postgresql://tune:SECRET@db.lan/edgenn --study-name fmnist -o runs/w1
\b
Rerun the same command after a stop to continue: finished trials are kept, a trial stopped
mid-way runs again. Then: edgenn train --config DIR/best.json -o runs/best
"""
)
@data_options
@model_options
@click.option(
    "--space",
    "space_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSON search space: {"key": {"choices": [...]} | {"low": A, "high": B} | value}.',
)
@click.option(
    "--target",
    type=click.Choice(targets.TARGETS),
    default=_TUNE.target,
    show_default=True,
    help="Convert each trial to int8 for this target.",
)
@click.option(
    "--objective",
    "objectives",
    type=click.Choice(OBJECTIVE_NAMES),
    multiple=True,
    default=_TUNE.objectives,
    show_default=True,
    help="What to optimize (repeat for several); accuracy is always one. "
    "--objective accuracy alone gives a single best.",
)
@click.option(
    "--max-size", callback=_bytes, help="Reject int8 files larger than this (64KB = 65,536 B)."
)
@click.option("--max-arena", callback=_bytes, help="Reject models needing a larger TFLM arena.")
@click.option("--max-latency-ms", type=float, help="Reject models slower than this (LiteRT p50).")
@click.option(
    "--trials",
    type=int,
    default=_TUNE.trials,
    show_default=True,
    help="The study's total of finished (COMPLETE or PRUNED) trials; a rerun runs the rest.",
)
@click.option("--timeout", type=float, help="Start no new trial after SECONDS.")
@click.option(
    "--storage",
    help="A database shared by many workers, e.g. postgresql://USER:PASSWORD@HOST/DB "
    "[default: DIR/study.db].",
)
@click.option("--study-name", help="The study's name in --storage (needed with it).")
@click.option(
    "--prune/--no-prune",
    default=_TUNE.prune,
    show_default=True,
    help="Stop a trial whose validation accuracy trails the finished trials no larger than it.",
)
@click.option(
    "--calibration-samples",
    type=int,
    default=_TUNE.calibration_samples,
    show_default=True,
    help="Training examples that calibrate each trained model's int8 conversion.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Tune folder (created; the same command continues it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's log output.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@click.pass_context
def tune(ctx: click.Context, **opts: Any) -> None:
    """Search for the most accurate model that fits the target (resumable, multi-machine)."""
    from edgenn.host.tune import tune as run_tune

    options = TuneOptions(
        output=opts["output"],
        trials=opts["trials"],
        given=_given(opts, ctx),
        space_file=opts["space_file"],
        target=opts["target"],
        objectives=tuple(opts["objectives"]),
        constraints=Constraints(opts["max_size"], opts["max_arena"], opts["max_latency_ms"]),
        timeout=opts["timeout"],
        storage=opts["storage"],
        study_name=opts["study_name"],
        prune=opts["prune"],
        calibration_samples=opts["calibration_samples"],
        verbose=opts["verbose"],
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_tune(options, progress=None if opts["quiet"] else StudyBar())
    finally:
        signal.signal(signal.SIGTERM, previous)
    if opts["as_json"]:
        print_json(result.to_dict())
    else:
        _print_summary(result)
