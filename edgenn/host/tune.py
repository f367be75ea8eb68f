"""[host] ``edgenn tune``: search for the most accurate model that fits the device.

Each trial trains one configuration of the search space (:mod:`edgenn.host.tuning.space`) with
``edgenn train``'s code, converts it to int8 for the target with ``edgenn convert``'s, and is
scored on the real artifact (:mod:`edgenn.host.tuning.objectives`). The study lives in Optuna's
RDB storage (:mod:`edgenn.host.tuning.study`): SQLite in the output folder by default, so a run
killed at any moment continues where it stopped, or a shared database for many workers.

The tune folder::

    study.db        the study (default storage)
    tune.json       which study and storage this folder belongs to
    trials/NNNN/    one edgenn train run directory per trial, with model_int8.tflite
    trials.csv      every trial: state, reason, figures, parameters, worker
    best.json       the chosen trial's options: edgenn train --config best.json replays it
    best/           the chosen trial's run directory (a symlink, or a copy)
    pareto.png      accuracy against size (and arena, latency), the Pareto front in red
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgenn import datasets as data_mod
from edgenn import optional, targets
from edgenn.errors import EdgennError, UsageError
from edgenn.fileio import atomic_write_text, read_regular
from edgenn.host import convert as convert_mod
from edgenn.host import train as train_mod
from edgenn.host.tfutil import import_keras, import_tensorflow
from edgenn.host.tuning import report as report_mod
from edgenn.host.tuning import study as study_mod
from edgenn.host.tuning import trial as trial_mod
from edgenn.host.tuning.objectives import (
    DEFAULT_OBJECTIVES,
    OBJECTIVE_NAMES,
    Constraints,
    Measures,
    Objective,
    parse_bytes,
    resolve_objectives,
)
from edgenn.host.tuning.space import SearchSpace, build_space, read_space_file

__all__ = [
    "DEFAULT_OBJECTIVES",
    "DEFAULT_TRIALS",
    "OBJECTIVE_NAMES",
    "Constraints",
    "TuneEvent",
    "TuneOptions",
    "TuneResult",
    "parse_bytes",
    "tune",
]

DEFAULT_TRIALS = 20
#: The file that ties a tune folder to its study.
TUNE_FILE = "tune.json"
#: A worker stops after this many trials in a row fail (a broken set-up, not a bad trial).
MAX_FAILURES_IN_A_ROW = 3


@dataclasses.dataclass
class TuneOptions:
    """What ``edgenn tune`` was asked; the CLI's defaults are these fields' defaults.

    Attributes:
        output: The tune folder (created, or continued when it holds the same study).
        trials: The study's total of finished (COMPLETE or PRUNED) trials.
        given: ``edgenn train`` options the user gave: each fixes its key of the space; the
            data options (never searched) are taken from here.
        space_file: A JSON search-space file (see :mod:`edgenn.host.tuning.space`).
        target: The target trials are converted for (int8).
        objectives: ``--objective`` names; accuracy is always one.
        constraints: Hard limits on size, arena and latency.
        timeout: Start no new trial after this many seconds (this worker).
        storage: A SQLAlchemy URL of a shared study (None: ``output/study.db``).
        study_name: The study's name (required with ``storage``).
        prune: Stop hopeless trials early.
        calibration_samples: Calibration examples of each trained model's conversion.
        verbose: Keep TensorFlow's log output.
    """

    output: Path
    trials: int = DEFAULT_TRIALS
    given: dict[str, Any] = dataclasses.field(default_factory=dict)
    space_file: Path | None = None
    target: str = targets.DEFAULT_TARGET
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    constraints: Constraints = dataclasses.field(default_factory=Constraints)
    timeout: float | None = None
    storage: str | None = None
    study_name: str | None = None
    prune: bool = True
    calibration_samples: int = convert_mod.DEFAULT_CALIBRATION_SAMPLES
    verbose: bool = False


@dataclasses.dataclass(frozen=True)
class TuneEvent:
    """Progress of the study, for the CLI's bar and its line per finished trial.

    Attributes:
        kind: ``trial`` (this worker's running trial reports), ``finished`` (a trial of this
            worker ended), ``retry`` (a trial killed mid-way was queued again) or ``wait``
            (waiting for other workers' trials).
        finished: The study's finished trials (COMPLETE + PRUNED).
        total: ``--trials``.
        trial: The running trial's report (``trial`` events).
        record: The trial that ended, or was queued again.
    """

    kind: str
    finished: int
    total: int
    trial: trial_mod.TrialEvent | None = None
    record: report_mod.TrialRecord | None = None


@dataclasses.dataclass
class TuneResult:
    """What :func:`tune` returns (``--json`` prints :meth:`to_dict`).

    Attributes:
        output: The tune folder.
        study_name: The study.
        storage: Its storage URL (password hidden).
        objectives: The objectives, accuracy first.
        target: The target.
        trials: ``--trials``.
        counts: Trials per Optuna state.
        ran: Trials this worker finished in this run.
        retried: Trials found killed mid-way and queued again.
        best: The chosen trial.
        pareto: The Pareto front, most accurate first.
        best_dir: ``best/`` (None when the chosen trial ran on another machine).
        files: The files written.
        seconds: This run's duration.
        overhead_percent: Median share of a COMPLETE trial spent outside ``model.fit``.
    """

    output: str
    study_name: str
    storage: str
    objectives: list[str]
    target: str
    trials: int
    counts: dict[str, int]
    ran: list[int]
    retried: list[int]
    best: report_mod.TrialRecord | None
    pareto: list[report_mod.TrialRecord]
    best_dir: str | None
    files: dict[str, str]
    seconds: float
    overhead_percent: float | None

    @property
    def finished(self) -> int:
        """COMPLETE + PRUNED trials in the study."""
        return study_mod.finished(self.counts)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        doc = dataclasses.asdict(self)
        doc["best"] = self.best.to_dict() if self.best else None
        doc["pareto"] = [r.to_dict() for r in self.pareto]
        doc["finished"] = self.finished
        return doc


def _check_options(options: TuneOptions) -> None:
    """Refuse bad numbers and combinations before anything is read or opened."""
    if options.trials < 1:
        raise UsageError(f"--trials must be at least 1; received {options.trials}.")
    if options.timeout is not None and options.timeout <= 0:
        raise UsageError(f"--timeout must be positive; received {options.timeout}.")
    if options.calibration_samples < 1:
        raise UsageError(
            f"--calibration-samples must be at least 1; received {options.calibration_samples}."
        )
    if options.storage and not options.study_name:
        raise UsageError(
            "--storage needs --study-name: workers that share a database find their study by "
            "its name. Example: --storage postgresql://USER:PASSWORD@HOST/DB --study-name fmnist"
        )
    options.constraints.check()
    targets.lookup(options.target)


def _storage_label(storage: str | None) -> str:
    """How tune.json names the storage: the URL (password hidden), or ``study.db``.

    The folder's own file is named relatively, so that a moved folder still continues.
    """
    return study_mod.mask_url(storage) if storage else study_mod.STUDY_DB


def _check_folder(output: Path, storage: str | None, name: str) -> None:
    """A folder to continue must belong to this study; any other non-empty folder is refused."""
    storage = _storage_label(storage)
    marker = output / TUNE_FILE
    if marker.is_file():
        try:
            doc = json.loads(read_regular(marker, "a tune folder's tune.json", 64 * 1024))
        except ValueError:
            doc = {}
        if (doc.get("storage"), doc.get("study_name")) != (storage, name):
            raise EdgennError(
                f"{output} belongs to study {doc.get('study_name')!r} in {doc.get('storage')}; "
                f"received study {name!r} in {storage}.",
                "Use another -o folder for another study.",
            )
    elif output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise EdgennError(
            f"{output} exists and is not an edgenn tune folder (no {TUNE_FILE}).",
            "Choose a new -o folder; rerunning the same command continues a tune folder.",
        )


def _lock_path(url: str) -> Path | None:
    """The lock file beside a SQLite study's database (None for other storages)."""
    if not study_mod.is_sqlite(url) or ":memory:" in url:
        return None
    return Path(url.split(":///", 1)[1] + ".lock")


def _sqlite_file(url: str) -> Path | None:
    lock = _lock_path(url)
    return lock.with_suffix("") if lock else None


def load_splits(base: train_mod.TrainConfig) -> data_mod.Splits:
    """The data every trial trains on (the data options are never searched).

    Raises:
        EdgennError: Not a classification data set (the search maximizes accuracy).
    """
    splits = data_mod.make_splits(base.data)
    if splits.task != "classification":
        raise EdgennError(
            f"{base.data.dataset} is a {splits.task} data set; edgenn tune maximizes "
            "classification accuracy.",
            "Tune a classification data set, or train regression models with edgenn train.",
        )
    return splits


def check_feasible(space: SearchSpace, ctx: trial_mod.TrialContext) -> list[Measures]:
    """Measure the smallest models of the space; refuse constraints none of them can meet.

    The candidates (:meth:`SearchSpace.smallest`) are built untrained and counted; the one with
    the fewest parameters of each model kind is converted and measured.

    Returns:
        The measures of the models converted.

    Raises:
        EdgennError: Even the smallest model is over a limit (nothing was created).
    """
    keras = import_keras("edgenn tune", ctx.verbose)
    fewest: dict[str, tuple[int, train_mod.TrainConfig]] = {}
    for options in space.smallest():
        config = train_mod.config_from_options({**space.fixed, **options})
        model, _ = train_mod.build_model(config, ctx.splits)
        params = int(model.count_params())
        if config.model not in fewest or params < fewest[config.model][0]:
            fewest[config.model] = (params, config)
    keras.backend.clear_session()
    measured = []
    with tempfile.TemporaryDirectory(prefix="edgenn-tune-") as scratch:
        probe = dataclasses.replace(ctx, output=Path(scratch))
        for _, config in fewest.values():
            measured.append((trial_mod.check_untrained(config, probe, 0), config))
    limits = ctx.constraints
    for attr, limit, flag in (
        ("size_bytes", limits.max_size, "--max-size"),
        ("arena_bytes", limits.max_arena, "--max-arena"),
        ("latency_ms", limits.max_latency_ms, "--max-latency-ms"),
    ):
        values = [(getattr(m, attr), c) for m, c in measured if getattr(m, attr) is not None]
        if limit is None or not measured:
            continue
        smallest = min(values, key=lambda v: v[0]) if values else None
        if smallest is None or smallest[0] > limit:
            raise _infeasible(flag, limit, attr, smallest, ctx.target)
    return [m for m, _ in measured]


def _infeasible(flag: str, limit: float, attr: str, smallest: Any, target: str) -> EdgennError:
    if smallest is None:
        return EdgennError(
            f"No model in the search space runs in TFLite Micro, so {flag} cannot be met.",
            "Drop --max-arena, or search int8 models TFLite Micro runs (--target micro).",
        )
    value, config = smallest
    record = report_mod.TrialRecord(0, "", options=train_mod.config_options(config))
    shown = f"{value:,.4f} ms" if attr == "latency_ms" else f"{int(value):,} B"
    wanted = f"{limit:g} ms" if attr == "latency_ms" else f"{int(limit):,} B"
    return EdgennError(
        f"No model in the search space meets {flag} {wanted}: the smallest "
        f"({record.summary().rsplit(',', 1)[0]}) is {shown} as an int8 model for {target}.",
        f"Raise {flag}, or search smaller models (a --space file with narrower filters/hidden).",
    )


class _Worker:
    """This process's part of the study: its trials, the retries it finds, its progress.

    Args:
        options: The request.
        objectives: The study's objectives.
        url: The study's storage.
        progress: Receives :class:`TuneEvent`.
    """

    def __init__(
        self,
        options: TuneOptions,
        objectives: tuple[Objective, ...],
        url: str,
        progress: Callable[[TuneEvent], None] | None,
    ) -> None:
        self.options = options
        self.objectives = objectives
        self.progress = progress
        # The worker holding a SQLite study's lock is its only one: every RUNNING trial is dead.
        self.exclusive = _lock_path(url) is not None
        self.study: Any = None
        self.done = 0
        self.ran: list[int] = []
        self.retried: list[int] = []
        self.failures: list[str] = []
        started = time.monotonic()
        self.deadline = started + options.timeout if options.timeout else None

    def emit(self, kind: str, **fields: Any) -> None:
        """Send a :class:`TuneEvent` with the study's current count."""
        if self.progress is not None:
            self.progress(TuneEvent(kind, self.done, self.options.trials, **fields))

    def on_stale(self, study: Any, frozen: Any) -> None:
        """Optuna's heartbeat failed a trial of a silent worker: queue it again."""
        study_mod.retry(study, frozen)
        self._retried(frozen.number)

    def _retried(self, number: int) -> None:
        trial_mod.remove_partial(self.options.output, number)
        self.retried.append(number)
        self.emit("retry", record=report_mod.TrialRecord(number, "FAIL"))

    def recover(self) -> None:
        """Fail and queue again the trials of workers known to be gone."""
        for number in study_mod.recover(self.study, self.exclusive, lambda n: None):
            self._retried(number)

    def room(self) -> bool:
        """Whether to start another trial (waits while other workers' trials may end it)."""

        def waiting(done: int) -> None:
            self.done = done
            self.emit("wait")

        return study_mod.wait_for_room(
            self.study, self.options.trials, self.deadline, self.recover, waiting
        )

    def after_trial(self, study: Any, frozen: Any) -> None:
        """Optuna's callback after each trial of this worker: report, then stop or go on."""
        record = report_mod.to_record(frozen)
        self.ran.append(record.number)
        self.failures = (
            [*self.failures, record.reason or "no reason"] if record.state == "FAIL" else []
        )
        self.done = study_mod.finished(study_mod.tally(study))
        report_mod.write_reports(study, self.options.output, self.objectives)
        self.emit("finished", record=record)
        if len(self.failures) >= MAX_FAILURES_IN_A_ROW or not self.room():
            study.stop()

    def run(self, study: Any, ctx: trial_mod.TrialContext) -> None:
        """Run trials until the study has its total, time is up, or trials keep failing.

        Raises:
            EdgennError: :data:`MAX_FAILURES_IN_A_ROW` trials failed in a row.
        """
        self.study = study
        self.done = study_mod.finished(study_mod.tally(study))

        def trial_event(event: trial_mod.TrialEvent) -> None:
            self.emit("trial", trial=event)

        runner = trial_mod.TrialRunner(dataclasses.replace(ctx, progress=trial_event))
        if self.room():
            study.optimize(runner, callbacks=[self.after_trial], catch=(EdgennError,))
        if len(self.failures) >= MAX_FAILURES_IN_A_ROW:
            raise EdgennError(
                f"{MAX_FAILURES_IN_A_ROW} trials in a row failed; the last: {self.failures[-1]}",
                "Fix the cause and rerun the same command: the study continues.",
            )


@dataclasses.dataclass
class _Plan:
    """The request, checked: what to search, where the study lives."""

    objectives: tuple[Objective, ...]
    space: SearchSpace
    base: train_mod.TrainConfig
    url: str
    spec: study_mod.StudySpec


def _plan(options: TuneOptions) -> _Plan:
    """Check everything that needs neither data nor TensorFlow (fast, one-line errors)."""
    _check_options(options)
    objectives = resolve_objectives(options.objectives)
    doc = read_space_file(options.space_file) if options.space_file else None
    source = str(options.space_file) if options.space_file else "the search space"
    space = build_space(doc, options.given, source)
    base = train_mod.config_from_options(space.fixed)
    if base.distribute == "multi-worker":
        raise UsageError(
            "edgenn tune trains each trial in this process; --distribute multi-worker needs "
            "every machine in one training. Run a tune worker per machine with --storage "
            "postgresql://... --study-name NAME, or use --distribute mirrored."
        )
    train_mod.check_distribution(base.distribute)
    output = Path(options.output)
    url = options.storage or study_mod.sqlite_url(output / study_mod.STUDY_DB)
    name = options.study_name or study_mod.DEFAULT_STUDY_NAME
    spec = study_mod.StudySpec(name, objectives, options.target, base.data.dataset)
    _check_folder(output, options.storage, name)
    study_mod.optuna_module()
    if trial_mod.needs_micro(options.target, objectives, options.constraints):
        optional.require("tflite_micro", "edgenn tune (the TFLite Micro arena)")
    return _Plan(objectives, space, base, url, spec)


def _connect(plan: _Plan, worker: _Worker) -> Any | None:
    """Open the storage and check an existing study, changing nothing.

    A new SQLite file is not created here: a run refused later leaves no study behind.
    """
    db = _sqlite_file(plan.url)
    if db is not None and not db.is_file():
        return None
    storage = study_mod.open_storage(plan.url, worker.on_stale)
    study_mod.find_study(storage, plan.spec)
    return storage


@contextlib.contextmanager
def _locked(url: str) -> Iterator[None]:
    lock = _lock_path(url)
    if lock is None:
        yield
        return
    with study_mod.exclusive(lock):
        yield


def _start_folder(output: Path, plan: _Plan, storage: str | None) -> None:
    output.mkdir(parents=True, exist_ok=True)
    marker = output / TUNE_FILE
    if not marker.is_file():
        doc = {"storage": _storage_label(storage), **plan.spec.attrs()}
        atomic_write_text(marker, json.dumps({"study_name": plan.spec.name, **doc}, indent=2))


def tune(options: TuneOptions, progress: Callable[[TuneEvent], None] | None = None) -> TuneResult:
    """Run (or continue) a study until it has ``options.trials`` finished trials.

    Args:
        options: What to search, for which target, under which limits, where.
        progress: Receives a :class:`TuneEvent` for each report of the running trial, each
            trial that ends, each trial queued again and each wait for other workers.

    Returns:
        The study's state, the chosen trial and the Pareto front.

    Raises:
        UsageError: Bad options or search space.
        EdgennError: An impossible constraint, an unreachable storage, a study made with other
            objectives (left untouched), or trials that keep failing.
        MissingDependencyError: TensorFlow, Optuna, psycopg2 or tflite-micro is missing.
    """
    started = time.monotonic()
    plan = _plan(options)
    output = Path(options.output)
    worker = _Worker(options, plan.objectives, plan.url, progress)
    storage = _connect(plan, worker)
    splits = load_splits(plan.base)
    # Each trial trains as edgenn train --distribute would; the CPU split for "mirrored" must
    # come before the size check first runs TensorFlow in this process.
    train_mod.start_devices(import_tensorflow("edgenn tune", options.verbose), plan.base.distribute)
    ctx = trial_mod.TrialContext(
        output=output,
        space=plan.space,
        splits=splits,
        target=options.target,
        objectives=plan.objectives,
        constraints=options.constraints,
        prune=options.prune,
        calibration_samples=options.calibration_samples,
        measure_arena=trial_mod.can_measure_arena(),
        verbose=options.verbose,
    )
    if options.constraints.any:
        check_feasible(plan.space, ctx)
    with _locked(plan.url):
        _start_folder(output, plan, options.storage)
        storage = storage or study_mod.open_storage(plan.url, worker.on_stale)
        study = study_mod.create_study(storage, plan.spec, study_mod.sampler(options.trials))
        worker.run(study, ctx)
        reports = report_mod.write_reports(study, output, plan.objectives)
        counts = study_mod.tally(study)
    return _result(options, plan, worker, reports, counts, time.monotonic() - started)


def _result(
    options: TuneOptions,
    plan: _Plan,
    worker: _Worker,
    reports: report_mod.Reports,
    counts: dict[str, int],
    seconds: float,
) -> TuneResult:
    shares = [
        r.overhead_seconds / r.trial_seconds * 100
        for r in reports.records
        if r.state == "COMPLETE" and r.overhead_seconds is not None and r.trial_seconds
    ]
    return TuneResult(
        output=str(options.output),
        study_name=plan.spec.name,
        storage=study_mod.mask_url(plan.url),
        objectives=[o.name for o in plan.objectives],
        target=options.target,
        trials=options.trials,
        counts=counts,
        ran=worker.ran,
        retried=worker.retried,
        best=reports.best,
        pareto=reports.front,
        best_dir=str(reports.best_dir) if reports.best_dir else None,
        files=reports.files,
        seconds=round(seconds, 2),
        overhead_percent=round(statistics.median(shares), 2) if shares else None,
    )
