"""[host] The accuracy-gated fallback ladder of ``edgenn convert --quantize auto``, and sweeps.

:func:`climb` tries conversions in order and stops at the first that loses no more than
``--max-accuracy-drop`` points on the test split:

1. full int8, once per ``--calibration-samples`` count (a list sweeps: ``100,500,2000`` tries
   each in turn and stops at the first within the gate);
2. ``int8-mixed``: int8 with the ops that introduce the most error kept in float. The
   per-layer comparison of the best int8 attempt (:func:`edgenn.quantization.compare`) ranks the
   ops; up to three growing sets are tried (:func:`edgenn.quantization.float_candidates`). Only
   where the target runs float ops (:func:`edgenn.quantization.ladder_for`: never edgetpu or
   micro);
3. dynamic range; 4. fp16.

A plain ``--quantize P`` is a ladder of one step (with the sweep for int8). Regression models
have no accuracy to gate on: their first step is kept. When no step passes, :func:`gate_error`
names the layers to blame and the remedies, and offers the ladder when it was not climbed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from edgenn import quantization, targets, tflite_model
from edgenn.errors import EdgennError
from edgenn.precision import INT8


@dataclasses.dataclass
class Candidate:
    """One conversion the ladder tried.

    Attributes:
        precision: A precision, or ``int8-mixed``.
        io: Input/output type.
        model_bytes: The model with its metadata embedded, as it would be written.
        parsed: The same, parsed.
        calibration_samples: Calibration examples (int8 steps; 0 otherwise).
        kept_float: Ops of the full-int8 model kept in float (``int8-mixed``), as
            ``{"index", "op"}``.
        score: Test accuracy (classification) or MSE (regression); None when not scored.
        drop: Accuracy points lost against the Keras model (classification only).
        latency_ms: Median batch-1 latency with the device runtime on this machine.
    """

    precision: str
    io: str
    model_bytes: bytes
    parsed: tflite_model.TFLiteFile
    calibration_samples: int = 0
    kept_float: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    score: float | None = None
    drop: float | None = None
    latency_ms: float | None = None

    @property
    def size_bytes(self) -> int:
        """Size of the model as it would be written."""
        return len(self.model_bytes)

    def entry(self, chosen: bool) -> dict[str, Any]:
        """One ``ladder`` entry of ``edgenn convert --json``."""
        return {
            "precision": self.precision,
            "accuracy": round(self.score, 4) if self.drop is not None else None,
            "drop_points": round(self.drop, 3) if self.drop is not None else None,
            "size_bytes": self.size_bytes,
            "chosen": chosen,
            "latency_ms": self.latency_ms,
            "calibration_samples": self.calibration_samples,
            "kept_float": self.kept_float,
        }

    def label(self) -> str:
        """``int8 (300 calibration samples)``, ``int8-mixed (ops 2, 3 in float)``, ``fp16``."""
        if self.kept_float:
            ops = ", ".join(str(k["index"]) for k in self.kept_float)
            return f"{self.precision} (ops {ops} in float)"
        if self.precision == INT8:
            return f"{INT8} ({self.calibration_samples} calibration samples)"
        return self.precision


class Maker(Protocol):
    """What the ladder needs from a conversion session (:class:`edgenn.host.convert._Session`)."""

    has_data: bool
    training_examples: int | None

    def make(
        self,
        precision: str,
        count: int = 0,
        kept: Sequence[int] = (),
        base: Candidate | None = None,
    ) -> Candidate:
        """Convert, embed, score and time one candidate."""

    def analyse(self, candidate: Candidate) -> quantization.QuantizationReport:
        """The per-layer comparison of a candidate with the float reference."""


@dataclasses.dataclass
class Climb:
    """What :func:`climb` did.

    Attributes:
        tried: Every candidate, in order.
        chosen: The first within the gate (None: none was).
        int8_report: The per-layer comparison of the best full-int8 attempt, when one was made.
        decision: Which step was taken, why, and what it costs against full int8.
    """

    tried: list[Candidate] = dataclasses.field(default_factory=list)
    chosen: Candidate | None = None
    int8_report: quantization.QuantizationReport | None = None
    decision: str = ""

    def best_int8(self) -> Candidate | None:
        """The full-int8 attempt with the smallest drop (the last one when none was scored)."""
        full = [c for c in self.tried if c.precision == INT8]
        scored = [c for c in full if c.drop is not None]
        if scored:
            return min(scored, key=lambda c: c.drop)
        return full[-1] if full else None


def passes(candidate: Candidate, gate: float) -> bool:
    """Within ``--max-accuracy-drop`` (a candidate without an accuracy drop always passes)."""
    return candidate.drop is None or candidate.drop <= gate


def climb(
    maker: Maker,
    steps: Sequence[str],
    counts: Sequence[int],
    gate: float,
    say: Callable[[str], None],
) -> Climb:
    """Try the steps in order; stop at the first candidate within the gate.

    Args:
        maker: Makes and analyses candidates.
        steps: Precisions (and ``int8-mixed``) in ladder order.
        counts: Calibration sample counts for the int8 steps (a sweep when several).
        gate: ``--max-accuracy-drop`` in points.
        say: Progress callback.

    Returns:
        What was tried and chosen.
    """
    result = Climb()
    for step in steps:
        if step in (INT8, quantization.INT8_MIXED) and len(steps) > 1 and not maker.has_data:
            say(f"ladder: skipping {step}: the run has no data.json to calibrate on")
            continue
        if step == INT8:
            for count in counts:
                if _attempt(result, maker.make(INT8, count), gate, say):
                    break
        elif step == quantization.INT8_MIXED:
            _keep_float(maker, result, gate, say)
        else:
            _attempt(result, maker.make(step), gate, say)
        if result.chosen is not None:
            break
    result.decision = decision(result, gate)
    return result


def _attempt(result: Climb, candidate: Candidate, gate: float, say: Callable[[str], None]) -> bool:
    """Record a candidate; choose it when it is within the gate."""
    result.tried.append(candidate)
    ok = passes(candidate, gate)
    if candidate.drop is not None:
        verdict = "within" if ok else "more than"
        say(
            f"  {candidate.label()}: accuracy {candidate.score:.2%}, drop "
            f"{candidate.drop:.2f} points ({verdict} --max-accuracy-drop {gate:g}), "
            f"{candidate.size_bytes:,} B"
        )
    if ok:
        result.chosen = candidate
    return ok


def _keep_float(maker: Maker, result: Climb, gate: float, say: Callable[[str], None]) -> None:
    """The ``int8-mixed`` step: growing sets of the worst ops kept in float."""
    base = result.best_int8()
    if base is None:
        return
    result.int8_report = maker.analyse(base)
    sets = quantization.float_candidates(result.int8_report, base.parsed)
    if not sets:
        say("ladder: no op of the int8 model can be kept in float")
    for kept in sets:
        try:
            candidate = maker.make(quantization.INT8_MIXED, base.calibration_samples, kept, base)
        except EdgennError as exc:
            # The converter refuses some sets (TensorFlow's selective quantization has limits):
            # the ladder goes on to the next step rather than stopping the conversion.
            say(f"ladder: int8-mixed with ops {', '.join(map(str, kept))} in float failed: {exc}")
            return
        if _attempt(result, candidate, gate, say):
            return


def _lost(candidate: Candidate) -> str:
    if candidate.drop is None:
        return f"{candidate.label()}: not scored"
    return f"{candidate.label()} lost {candidate.drop:.2f} points"


def decision(result: Climb, gate: float) -> str:
    """One paragraph: the step written, why the ones before it were not, and its cost.

    Args:
        result: The climb.
        gate: ``--max-accuracy-drop``.

    Returns:
        The text (empty when nothing was chosen).
    """
    chosen = result.chosen
    if chosen is None:
        return ""
    if chosen.score is None:
        why = "not scored (no test split)"
    elif chosen.drop is None:
        why = f"test MSE {chosen.score:.4g} (the accuracy gate applies to classifiers only)"
    else:
        why = f"lost {chosen.drop:.2f} points, within --max-accuracy-drop {gate:g}"
    text = f"{chosen.label()} written: {why}."
    before = [c for c in result.tried if c is not chosen]
    if before:
        text += " Before it: " + "; ".join(_lost(c) for c in before) + f" (more than {gate:g})."
    first = result.tried[0]
    if first is not chosen:
        text += (
            f" Cost against {first.label()}: {chosen.size_bytes:,} B vs {first.size_bytes:,} B "
            f"({chosen.size_bytes / first.size_bytes:.2f}x)"
        )
        if chosen.latency_ms is not None and first.latency_ms:
            text += (
                f", {chosen.latency_ms:.4f} ms vs {first.latency_ms:.4f} ms per inference "
                f"({chosen.latency_ms / first.latency_ms:.2f}x)"
            )
        text += "."
    return text


def gate_error(
    maker: Maker, result: Climb, target: targets.Target, gate: float, command: str
) -> EdgennError:
    """The error when no candidate met the gate: what each lost, the layers to blame, remedies.

    Args:
        maker: For the per-layer comparison of the best int8 attempt.
        result: The climb (nothing chosen).
        target: The target (which ladder it allows).
        gate: ``--max-accuracy-drop``.
        command: The conversion command the advice extends.

    Returns:
        The error to raise; nothing has been written.
    """
    tried = result.tried
    if len(tried) == 1:
        c = tried[0]
        float_score = c.score + c.drop / 100
        message = (
            f"{c.precision} conversion lost {c.drop:.2f} accuracy points ({float_score:.2%} "
            f"float -> {c.score:.2%}), more than --max-accuracy-drop {gate:g}; nothing was written."
        )
    else:
        message = (
            f"No conversion tried met --max-accuracy-drop {gate:g}: "
            + "; ".join(_lost(c) for c in tried)
            + "; nothing was written."
        )
    hints = []
    steps = quantization.ladder_for(target.allowed_precisions)
    climbed = {c.precision for c in tried}
    if len(steps) > 1 and not set(steps[1:]) & climbed:
        hints.append(
            f"Try the fallback ladder: {command} --quantize {quantization.AUTO} "
            f"({' -> '.join(steps)}; the first within the gate is written)."
        )
    base = result.best_int8()
    if base is not None:
        report = result.int8_report or maker.analyse(base)
        result.int8_report = report
        worst = "; ".join(quantization.describe_op(e) for e in quantization.blamed(report))
        message += f" Layers to blame in the int8 model: {worst}."
        most = max(c.calibration_samples for c in tried if c.precision == INT8)
        hints.extend(
            quantization.remedies(report, base.parsed, most, command, maker.training_examples)
        )
    hints.append("Or raise --max-accuracy-drop.")
    return EdgennError(message, " ".join(hints))
