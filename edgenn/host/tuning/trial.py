"""[host] One trial of ``edgenn tune``: check that it fits, train, convert, measure, prune.

1. With a limit to meet (or arena or latency among the objectives), the trial's model is built
   untrained and converted to int8 for the target (``edgenn convert``'s code, with a little
   calibration data): size, TFLite Micro arena and latency depend on the architecture, not on
   the trained values, so a trial over ``--max-size`` / ``--max-arena`` / ``--max-latency-ms``
   is rejected here, before any training.
2. ``edgenn train``'s own :func:`~edgenn.host.train.train` writes the run directory
   ``trials/NNNN``; after every epoch the validation accuracy is compared with the finished
   trials that are no larger (:func:`prune_reason`).
3. ``edgenn convert``'s own :func:`~edgenn.host.convert.convert` writes ``model_int8.tflite``
   into it; the int8 model is scored on the validation split with the device runtime and
   measured again. The test split is never read by the search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgenn import artifact, classify, optional, tflite_model
from edgenn import datasets as data_mod
from edgenn.bench import BenchOptions, bench_tflite
from edgenn.errors import EdgennError
from edgenn.host import convert as convert_mod
from edgenn.host import train as train_mod
from edgenn.host.tfutil import import_keras
from edgenn.host.tuning import arena as arena_mod
from edgenn.host.tuning import study as study_mod
from edgenn.host.tuning.objectives import ACCURACY, Constraints, Measures, Objective
from edgenn.host.tuning.space import SearchSpace
from edgenn.precision import INT8
from edgenn.runtime import Runner

TRIALS_DIR = "trials"
#: Where the untrained model of a trial's size check is converted. The name has as many
#: characters as :data:`TRIALS_DIR`, so the model path embedded in the metadata, hence the file
#: size, is the trained model's.
CHECK_DIR = ".check"
#: Trial user attributes (besides the :class:`Measures` fields and study.py's).
OPTIONS_ATTR = "options"
CURVE_ATTR = "val_accuracy_curve"
RUN_DIR_ATTR = "run_dir"
PHASE_ATTR = "phase"
#: Training examples that calibrate the untrained model's int8 ranges (its size, arena and
#: latency do not depend on them; a few keep the converter's statistics defined).
CHECK_CALIBRATION_SAMPLES = 32
#: Pruning starts at this epoch, once this many finished trials can be compared.
PRUNE_WARMUP_EPOCHS = 2
PRUNE_MIN_TRIALS = 3
#: Latency is timed on a shared machine: a peer within this factor counts as no slower.
LATENCY_TOLERANCE = 1.10


def trial_dir(output: Path, number: int) -> Path:
    """``DIR/trials/NNNN``: a trial's run directory."""
    return Path(output) / TRIALS_DIR / f"{number:04d}"


def remove_partial(output: Path, number: int) -> None:
    """Remove what a failed or killed trial left behind (its run directory is incomplete)."""
    for folder in (Path(output) / TRIALS_DIR, Path(output) / CHECK_DIR):
        if not folder.is_dir():
            continue
        for path in folder.glob(f"*{number:04d}*"):
            name = path.name
            if name == f"{number:04d}" or name.startswith((f".{number:04d}.", f"{number:04d}.")):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class TrialEvent:
    """Progress of the trial this worker runs (the CLI draws the study's bar from these).

    Attributes:
        kind: ``start``, ``check`` (size, arena and latency of the untrained model known),
            ``epoch`` (a training report) or ``convert``.
        number: The trial number.
        epoch: The training report (``epoch`` events).
        measures: The figures known so far (``check`` events).
    """

    kind: str
    number: int
    epoch: train_mod.EpochProgress | None = None
    measures: Measures | None = None


@dataclasses.dataclass
class TrialContext:
    """What every trial of a worker shares.

    Attributes:
        output: The tune folder.
        space: The search space.
        splits: The data (the same for every trial: data options are never searched).
        target: ``--target``.
        objectives: The study's objectives.
        constraints: The hard limits.
        prune: Stop hopeless trials early.
        calibration_samples: Calibration examples of the trained model's conversion.
        measure_arena: TFLite Micro is installed (the arena is measured).
        verbose: Keep TensorFlow's log output.
        progress: Receives :class:`TrialEvent`.
    """

    output: Path
    space: SearchSpace
    splits: data_mod.Splits
    target: str
    objectives: tuple[Objective, ...]
    constraints: Constraints
    prune: bool = True
    calibration_samples: int = convert_mod.DEFAULT_CALIBRATION_SAMPLES
    measure_arena: bool = True
    verbose: bool = False
    progress: Callable[[TrialEvent], None] | None = None

    @property
    def check_first(self) -> bool:
        """Whether the untrained model is converted and measured before training.

        It is when a limit may reject the trial, or when arena or latency is an objective (the
        pruning rule compares trials on them); otherwise the trained model's conversion gives
        every figure and trials compare by parameter count.
        """
        measured = {o.attr for o in self.objectives} & {"arena_bytes", "latency_ms"}
        return self.constraints.any or bool(measured)

    def emit(self, event: TrialEvent) -> None:
        """Pass an event on to the progress callback, if any."""
        if self.progress is not None:
            self.progress(event)


def measure_file(path: Path, ctx: TrialContext, arena: dict | None = None) -> Measures:
    """Size, arena and LiteRT p50 latency of a ``.tflite`` file.

    Args:
        path: The model.
        ctx: The trial context.
        arena: The arena figures a conversion for ``micro`` already measured, if any.

    Returns:
        The measures (``val_accuracy`` None).

    Raises:
        EdgennError: LiteRT cannot run the model.
    """
    parsed = tflite_model.load(path)
    if arena:
        arena_bytes = int(arena["recommended_bytes"])
    else:
        arena_bytes = arena_mod.measure(path) if ctx.measure_arena else None
    # The code edgenn bench runs for a .tflite row: warm-up, then the median of timed invokes.
    row = bench_tflite(path, BenchOptions(dataset=None))
    if row.error or row.latency_ms is None:
        raise EdgennError(f"LiteRT could not time {path}: {row.error}")
    return Measures(None, parsed.size_bytes, arena_bytes, row.latency_ms.p50)


def check_untrained(config: train_mod.TrainConfig, ctx: TrialContext, number: int) -> Measures:
    """Build the trial's model untrained, convert it as the trained one will be, and measure it.

    The untrained model is written as a minimal run directory under ``.check/NNNN`` and goes
    through ``edgenn convert``'s own :func:`~edgenn.host.convert.convert` (int8 for the target,
    calibrated on a few training examples), so the file is the trained model's byte for byte
    but for the weights' values.

    Args:
        config: The trial's configuration.
        ctx: The trial context.
        number: The trial number (its files are named after it).

    Returns:
        Size, arena and latency, which training does not change.
    """
    keras = import_keras("edgenn tune", ctx.verbose)
    keras.utils.set_random_seed(config.data.seed)
    model, _ = train_mod.build_model(config, ctx.splits)
    # Fresh biases and batch-norm statistics are all zeros or ones, and the converter stores
    # equal constant buffers once: the untrained file would be hundreds of bytes smaller than
    # the trained one. A little noise makes every buffer distinct, as after training.
    rng = np.random.default_rng(config.data.seed)
    model.set_weights(
        [w + rng.normal(0, 1e-2, w.shape).astype(w.dtype) for w in model.get_weights()]
    )
    folder = Path(ctx.output) / CHECK_DIR / f"{number:04d}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        model.save(folder / "model.keras")
        artifact.write_companions(folder, ctx.splits.labels, ctx.splits.spec)
        data_mod.save_data_spec(ctx.splits.data, folder)
        converted = convert_mod.convert(
            folder,
            target=ctx.target,
            quantize=INT8,
            calibration_samples=CHECK_CALIBRATION_SAMPLES,
            compare=False,  # no test-split scoring, no gate: trials are scored on validation
            verbose=ctx.verbose,
        )
        arena = converted.check.get("details", {}).get("arena")
        measures = measure_file(Path(converted.output), ctx, arena)
        measures.params = int(model.count_params())
        return measures
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # only when no other worker's check is in it
        keras.backend.clear_session()


def count_params(config: train_mod.TrainConfig, ctx: TrialContext) -> Measures:
    """The trial's parameter count (its model built, not converted)."""
    keras = import_keras("edgenn tune", ctx.verbose)
    model, _ = train_mod.build_model(config, ctx.splits)
    params = int(model.count_params())
    keras.backend.clear_session()
    return Measures(params=params)


def _no_larger(theirs: dict[str, Any], mine: Measures, others: list[Objective]) -> bool:
    """Whether a finished trial is no larger than ``mine`` in every objective but accuracy.

    Compared on the int8 figures when they were measured before training, else on parameters.
    """
    if not all(getattr(mine, o.attr) is not None for o in others):
        return (
            theirs.get("params") is not None
            and mine.params is not None
            and (theirs["params"] <= mine.params)
        )
    for o in others:
        slack = LATENCY_TOLERANCE if o.attr == "latency_ms" else 1.0
        if theirs.get(o.attr) is None or theirs[o.attr] > getattr(mine, o.attr) * slack:
            return False
    return True


def prune_reason(
    study: Any, mine: Measures, curve: list[float], objectives: tuple[Objective, ...]
) -> str | None:
    """Why a running trial is hopeless, or None.

    A trial can only reach the Pareto front by beating every trial that is no larger (in each
    objective but accuracy: size, arena, latency; by parameter count when those are measured
    only after training), so it is compared with those: it is stopped
    when its validation accuracy at epoch ``e`` is below the median, at epoch ``e``, of the
    finished trials no larger than it. With ``--objective accuracy`` alone that is every finished
    trial: Optuna's median rule. (Optuna's pruners take one objective, hence this rule.)

    Args:
        study: The study.
        mine: What is known of the running trial before training: its int8 size, arena and
            latency (when measured first, see :attr:`TrialContext.check_first`) and parameters.
        curve: Its validation accuracy after each epoch so far.
        objectives: The study's objectives.

    Returns:
        The reason, or None to go on.
    """
    optuna = study_mod.optuna_module()
    epoch = len(curve)
    if epoch < PRUNE_WARMUP_EPOCHS:
        return None
    others = [o for o in objectives if o.name != ACCURACY]
    peers = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        past = t.user_attrs.get(CURVE_ATTR) or []
        if len(past) >= epoch and _no_larger(t.user_attrs, mine, others):
            peers.append(float(past[epoch - 1]))
    if len(peers) < PRUNE_MIN_TRIALS:
        return None
    median = float(np.median(peers))
    if curve[-1] >= median:
        return None
    return (
        f"pruned at epoch {epoch}: validation accuracy {curve[-1]:.2%} < {median:.2%}, the "
        f"median of {len(peers)} finished trials no larger"
    )


def record(trial: Any, measures: Measures) -> None:
    """Store the measured figures as the trial's user attributes (pruned trials keep theirs)."""
    for name, value in dataclasses.asdict(measures).items():
        if value is not None:
            trial.set_user_attr(name, value)


def reject(trial: Any, reason: str) -> None:
    """End the trial as PRUNED, with the reason in its ``reason`` attribute.

    Raises:
        optuna.TrialPruned: Always.
    """
    trial.set_user_attr(study_mod.REASON_ATTR, reason)
    raise study_mod.optuna_module().TrialPruned(reason)


def validation_accuracy(path: Path, splits: data_mod.Splits) -> float:
    """Accuracy of a ``.tflite`` on the validation split, run by the device runtime (LiteRT)."""
    outputs = Runner(path).predict(splits.model_inputs(splits.x_val))
    return classify.accuracy(outputs, splits.y_val)


class TrialRunner:
    """The objective Optuna calls: one trial, start to end.

    Args:
        ctx: What every trial shares.
    """

    def __init__(self, ctx: TrialContext) -> None:
        self.ctx = ctx

    def __call__(self, trial: Any) -> list[float]:
        """Run one trial.

        Args:
            trial: The Optuna trial.

        Returns:
            The objective values.

        Raises:
            optuna.TrialPruned: Over a constraint, or hopeless (the reason is stored).
            EdgennError: The trial failed (the reason is stored; the study goes on).
            KeyboardInterrupt: Interrupted: the trial's parameters are queued again first.
        """
        started = time.perf_counter()
        ctx = self.ctx
        trial.set_user_attr(study_mod.WORKER_ATTR, study_mod.worker_id())
        options = {**ctx.space.fixed, **ctx.space.sample(trial)}
        config = train_mod.config_from_options(options)
        trial.set_user_attr(OPTIONS_ATTR, train_mod.config_options(config))
        ctx.emit(TrialEvent("start", trial.number))
        try:
            return self._run(trial, config, started)
        except KeyboardInterrupt:
            trial.set_user_attr(study_mod.REASON_ATTR, "interrupted")
            study_mod.retry(trial.study, trial)
            remove_partial(ctx.output, trial.number)
            raise
        except EdgennError as exc:
            trial.set_user_attr(study_mod.REASON_ATTR, str(exc)[:1000])
            remove_partial(ctx.output, trial.number)
            raise

    def _run(self, trial: Any, config: train_mod.TrainConfig, started: float) -> list[float]:
        ctx = self.ctx
        trial.set_user_attr(PHASE_ATTR, "check")
        if ctx.check_first:
            untrained = check_untrained(config, ctx, trial.number)
        else:
            untrained = count_params(config, ctx)
        trial.set_user_attr("check_seconds", round(time.perf_counter() - started, 2))
        record(trial, untrained)
        ctx.emit(TrialEvent("check", trial.number, measures=untrained))
        violation = ctx.constraints.violation(untrained)
        if violation:
            reject(trial, f"before training: {violation}")
        run_dir = trial_dir(ctx.output, trial.number)
        trial.set_user_attr(PHASE_ATTR, "train")
        result = train_mod.train(
            config, run_dir, progress=self._epochs(trial, untrained), verbose=ctx.verbose
        )
        trial.set_user_attr(RUN_DIR_ATTR, str(Path(run_dir).resolve()))
        trial.set_user_attr("train_seconds", result.metrics["train_seconds"])
        trial.set_user_attr("epochs_run", result.metrics["epochs_run"])
        trial.set_user_attr(PHASE_ATTR, "convert")
        ctx.emit(TrialEvent("convert", trial.number))
        converted = convert_mod.convert(
            run_dir,
            target=ctx.target,
            quantize=INT8,
            calibration_samples=ctx.calibration_samples,
            compare=False,  # no test-split scoring, no gate: trials are scored on validation
            verbose=ctx.verbose,
        )
        path = Path(converted.output)
        final = measure_file(path, ctx, converted.check.get("details", {}).get("arena"))
        final.val_accuracy = validation_accuracy(path, ctx.splits)
        record(trial, final)
        trial.set_user_attr("trial_seconds", round(time.perf_counter() - started, 2))
        trial.set_user_attr(PHASE_ATTR, "done")
        violation = ctx.constraints.violation(final)
        if violation:
            reject(trial, f"after training: {violation}")
        unmeasured = [o.name for o in ctx.objectives if getattr(final, o.attr) is None]
        if unmeasured:
            reject(trial, f"{', '.join(unmeasured)} not measurable: TFLite Micro cannot run it")
        return final.values(ctx.objectives)

    def _epochs(self, trial: Any, untrained: Measures) -> Callable[[Any], None]:
        """The training progress callback: reports, records the curve, prunes."""
        ctx = self.ctx
        curve: list[float] = []

        def on_progress(p: train_mod.EpochProgress) -> None:
            ctx.emit(TrialEvent("epoch", trial.number, epoch=p))
            accuracy = p.metrics.get("val_accuracy")
            if not p.epoch_end or p.phase != train_mod.TRAIN_PHASE or accuracy is None:
                return
            curve.append(round(float(accuracy), 6))
            trial.set_user_attr(CURVE_ATTR, curve)
            if ctx.prune and p.epoch < p.epochs:
                reason = prune_reason(trial.study, untrained, curve, ctx.objectives)
                if reason:
                    reject(trial, reason)

        return on_progress


def needs_micro(target: str, objectives: tuple[Objective, ...], constraints: Constraints) -> bool:
    """Whether the arena must be measured (so tflite-micro must be installed)."""
    wanted = any(o.attr == "arena_bytes" for o in objectives) or constraints.max_arena is not None
    return wanted or target == "micro"


def can_measure_arena() -> bool:
    """Whether tflite-micro is installed (without it the arena column stays empty)."""
    return optional.available("tflite_micro")
