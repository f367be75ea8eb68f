"""[host] What a study leaves in the tune folder: trials.csv, best.json, best/, pareto.png.

Everything is read back from the study's storage, so every worker of a shared study writes the
same tables (trials that ran on another machine have their run directory there).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgenn import optional
from edgenn.fileio import atomic_write_bytes, atomic_write_text
from edgenn.host.tuning import space as space_mod
from edgenn.host.tuning import trial as trial_mod
from edgenn.host.tuning.objectives import OBJECTIVES, Objective

TRIALS_CSV = "trials.csv"
BEST_JSON = "best.json"
BEST_DIR = "best"
PARETO_PNG = "pareto.png"
#: The train options that tell trials apart, as trials.csv columns (after the figures): the
#: search keys, with the widths per block or layer as one list each.
PARAM_COLUMNS = (
    "model",
    "filters",
    "hidden",
    *space_mod.CNN_KEYS[2:],
    *space_mod.COMMON_KEYS,
)
MEASURE_COLUMNS = tuple(o.attr for o in OBJECTIVES.values())


@dataclasses.dataclass
class TrialRecord:
    """One trial as the tables show it.

    Attributes:
        number: Optuna's trial number (``trials/NNNN``).
        state: Optuna's state: COMPLETE, PRUNED, FAIL, RUNNING or WAITING.
        reason: Why it was pruned or failed (a constraint, the pruning rule, an error).
        worker: ``host:pid`` that ran it.
        retry_of: The trial it re-runs (one whose worker stopped mid-way).
        val_accuracy: int8 validation accuracy (device runtime).
        size_bytes: int8 file size.
        arena_bytes: TFLite Micro arena (with margin).
        latency_ms: LiteRT p50.
        params: Parameters of the Keras model.
        check_seconds: The untrained model's conversion and measures (before training).
        train_seconds: Time in ``model.fit``.
        trial_seconds: The whole trial (check, training, conversion, measures).
        epochs_run: Epochs trained (early stopping may end sooner).
        run_dir: Its run directory on the worker's machine.
        options: Its ``edgenn train`` options (the ``--config`` format).
    """

    number: int
    state: str
    reason: str | None = None
    worker: str | None = None
    retry_of: int | None = None
    val_accuracy: float | None = None
    size_bytes: int | None = None
    arena_bytes: int | None = None
    latency_ms: float | None = None
    params: int | None = None
    check_seconds: float | None = None
    train_seconds: float | None = None
    trial_seconds: float | None = None
    epochs_run: int | None = None
    run_dir: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def overhead_seconds(self) -> float | None:
        """Time of the trial outside ``model.fit``."""
        if self.train_seconds is None or self.trial_seconds is None:
            return None
        return round(self.trial_seconds - self.train_seconds, 2)

    def summary(self) -> str:
        """The architecture in a few words: ``cnn 16,32 gap dw, dense 32, 10 epochs``."""
        o = self.options
        if not o:
            return ""
        if o.get("model") == "mlp":
            arch = f"mlp {','.join(map(str, o.get('hidden') or []))}"
        else:
            arch = f"cnn {','.join(map(str, o.get('filters') or []))} {o.get('head')}"
            arch += " dw" if o.get("depthwise") else ""
            arch += f", dense {o.get('dense')}" if o.get("dense") else ""
        epochs = o.get("epochs")
        return f"{arch}, {epochs} epoch{'' if epochs == 1 else 's'}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``--json``)."""
        return {**dataclasses.asdict(self), "overhead_seconds": self.overhead_seconds}


def to_record(frozen: Any) -> TrialRecord:
    """A record from Optuna's ``FrozenTrial`` (figures from its user attributes)."""
    attrs = frozen.user_attrs
    names = {f.name for f in dataclasses.fields(TrialRecord)} - {"number", "state", "options"}
    known = {k: attrs.get(k) for k in names}
    return TrialRecord(
        number=frozen.number,
        state=frozen.state.name,
        options=dict(attrs.get(trial_mod.OPTIONS_ATTR) or {}),
        **known,
    )


def records(study: Any) -> list[TrialRecord]:
    """Every trial of the study, with the reason of a FAIL that was queued again filled in."""
    found = [to_record(t) for t in study.get_trials(deepcopy=False)]
    rerun = {r.retry_of: r.number for r in found if r.retry_of is not None}
    for r in found:
        if r.state == "FAIL" and r.number in rerun:
            stopped = r.reason or "its worker stopped mid-way"
            r.reason = f"{stopped}; re-run as trial {rerun[r.number]}"
    return found


def best(found: list[TrialRecord], objectives: tuple[Objective, ...]) -> TrialRecord | None:
    """The chosen trial: the most accurate COMPLETE one (ties: the smaller, then the faster).

    Every COMPLETE trial meets the constraints, so this is the most accurate model that fits.
    """
    done = [r for r in found if r.state == "COMPLETE" and r.val_accuracy is not None]
    if not done:
        return None

    def key(r: TrialRecord) -> tuple:
        rest = [getattr(r, o.attr) for o in objectives[1:]]
        return (-r.val_accuracy, *(v if v is not None else float("inf") for v in rest))

    return min(done, key=key)


def pareto(study: Any, found: list[TrialRecord]) -> list[TrialRecord]:
    """The Pareto front (Optuna's ``best_trials``), most accurate first."""
    numbers = {t.number for t in study.best_trials} if found else set()
    front = [r for r in found if r.number in numbers]
    return sorted(front, key=lambda r: -(r.val_accuracy or 0.0))


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "" if value is None else value


def _used(options: dict[str, Any]) -> set[str]:
    """The options a trial's model kind uses (an MLP has no filters, a CNN no hidden layers)."""
    if not options:
        return set()
    unused = space_mod.MLP_KEYS if options.get("model") == "cnn" else space_mod.CNN_KEYS
    return set(PARAM_COLUMNS) - set(unused)


def write_csv(found: list[TrialRecord], path: Path) -> None:
    """``trials.csv``: one row per trial, figures, then the parameters."""
    head = ["number", "state", "reason", *MEASURE_COLUMNS, "params", "worker", "retry_of"]
    head += [
        "check_seconds",
        "train_seconds",
        "trial_seconds",
        "overhead_seconds",
        "epochs_run",
        "run_dir",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*head, *PARAM_COLUMNS])
    for r in found:
        row = r.to_dict()
        params = [_cell(r.options.get(k)) if k in _used(r.options) else "" for k in PARAM_COLUMNS]
        writer.writerow([_cell(row[k]) for k in head] + params)
    atomic_write_text(path, buf.getvalue())


def write_best_json(chosen: TrialRecord, path: Path) -> None:
    """``best.json``: the chosen trial's options, which ``edgenn train --config`` replays."""
    atomic_write_text(path, json.dumps(chosen.options, indent=2) + "\n")


def link_best(output: Path, chosen: TrialRecord) -> Path | None:
    """Point ``best/`` at the chosen trial's run directory (a symlink, or a copy where links fail).

    Returns:
        ``best/``, or None when the trial ran on another machine (its directory is there).
    """
    output = Path(output)
    target = trial_mod.trial_dir(output, chosen.number)
    if not target.is_dir():
        return None
    best_dir = output / BEST_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".best.", dir=output))
    try:
        link = tmp / "link"
        try:
            os.symlink(os.path.relpath(target, output), link)
        except OSError:
            shutil.copytree(target, link, symlinks=True)
        if best_dir.is_dir() and not best_dir.is_symlink():
            shutil.rmtree(best_dir)  # an earlier copy: ours to replace
        os.replace(link, best_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return best_dir


def plot_pareto(
    found: list[TrialRecord],
    front: list[TrialRecord],
    chosen: TrialRecord | None,
    objectives: tuple[Objective, ...],
    path: Path,
) -> None:
    """``pareto.png``: validation accuracy against each other objective (size when none).

    Every COMPLETE trial is a dot, the Pareto front is drawn in red, the chosen trial is a star.
    """
    plt = optional.pyplot("pareto.png")
    axes_of = [o for o in objectives[1:]] or [OBJECTIVES["size"]]
    done = [r for r in found if r.state == "COMPLETE" and r.val_accuracy is not None]
    fig, axes = plt.subplots(1, len(axes_of), figsize=(5.5 * len(axes_of), 4.2), squeeze=False)
    for ax, objective in zip(axes[0], axes_of):
        for group, style in (
            (done, {"color": "#8aa", "s": 18}),
            (front, {"color": "red", "s": 30}),
        ):
            points = [(getattr(r, objective.attr), r.val_accuracy) for r in group]
            points = sorted(p for p in points if p[0] is not None)
            if points:
                ax.scatter(*zip(*points), zorder=3, **style)
        if len(axes_of) == 1 and front:
            ordered = sorted((getattr(r, objective.attr) or 0, r.val_accuracy) for r in front)
            ax.step(*zip(*ordered), where="post", color="red", lw=1, alpha=0.6)
        if chosen is not None and getattr(chosen, objective.attr) is not None:
            ax.scatter(
                [getattr(chosen, objective.attr)],
                [chosen.val_accuracy],
                marker="*",
                s=200,
                color="gold",
                edgecolors="black",
                zorder=4,
                label=f"best: trial {chosen.number}",
            )
            ax.legend(loc="lower right")
        ax.set_xlabel(objective.heading)
        ax.set_ylabel("int8 validation accuracy")
        ax.grid(alpha=0.3)
    pruned = sum(r.state == "PRUNED" for r in found)
    fig.suptitle(f"{len(found)} trials: {len(done)} complete, {pruned} pruned")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


@dataclasses.dataclass
class Reports:
    """The tune folder's files after a report.

    Attributes:
        records: Every trial.
        front: The Pareto front.
        best: The chosen trial (None before any trial completes).
        best_dir: ``best/`` (None when the chosen trial ran on another machine).
        files: Name -> path of each file written.
    """

    records: list[TrialRecord]
    front: list[TrialRecord]
    best: TrialRecord | None
    best_dir: Path | None
    files: dict[str, str]


def write_reports(
    study: Any, output: Path, objectives: tuple[Objective, ...], plot: bool = True
) -> Reports:
    """Write trials.csv, best.json, best/ and (with ``plot``) pareto.png from the study.

    Args:
        study: The study.
        output: The tune folder.
        objectives: The study's objectives.
        plot: Draw pareto.png (skipped between trials when matplotlib is missing).

    Returns:
        What was written.
    """
    output = Path(output)
    found = records(study)
    front = pareto(study, found) if any(r.state == "COMPLETE" for r in found) else []
    chosen = best(found, objectives)
    files = {"trials_csv": str(output / TRIALS_CSV)}
    write_csv(found, output / TRIALS_CSV)
    best_dir = None
    if chosen is not None:
        write_best_json(chosen, output / BEST_JSON)
        files["best_json"] = str(output / BEST_JSON)
        best_dir = link_best(output, chosen)
        if plot:
            plot_pareto(found, front, chosen, objectives, output / PARETO_PNG)
            files["pareto_png"] = str(output / PARETO_PNG)
    return Reports(found, front, chosen, best_dir, files)


def pareto_rows(front: list[TrialRecord]) -> list[list[str]]:
    """The Pareto table: a heading row, then one row per trial on the front."""
    shown = [OBJECTIVES[n] for n in OBJECTIVES]
    rows = [["trial", *(o.heading for o in shown), "model"]]
    for r in front:
        rows.append([str(r.number), *(o.format(getattr(r, o.attr)) for o in shown), r.summary()])
    return rows
