"""[host] What ``edgenn tune`` scores a trial on, and the hard constraints a trial must meet.

Every figure is measured on the real int8 artifact: validation accuracy with the device runtime,
the file size, the TFLite Micro arena (bisected as ``edgenn inspect --target micro`` does) and
LiteRT's median latency. Size, arena and latency do not depend on the trained weights, so they
are measured on the untrained model first and a trial that cannot fit is rejected before it
trains.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from edgenn.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Objective:
    """One thing a study optimizes.

    Attributes:
        name: The ``--objective`` value.
        direction: Optuna's ``maximize`` or ``minimize``.
        attr: The :class:`Measures` field, trial user attribute and ``trials.csv`` column.
        heading: Column heading in the Pareto table.
    """

    name: str
    direction: str
    attr: str
    heading: str

    def format(self, value: Any) -> str:
        """The value as the tables show it (``-`` when not measured)."""
        if value is None:
            return "-"
        if self.attr == "val_accuracy":
            return f"{value:.2%}"
        if self.attr == "latency_ms":
            return f"{value:.4f}"
        return f"{int(value):,}"


#: The objectives, in the order tables show them. Accuracy is always one of a study's.
OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("accuracy", "maximize", "val_accuracy", "val acc"),
        Objective("size", "minimize", "size_bytes", "size B"),
        Objective("arena", "minimize", "arena_bytes", "arena B"),
        Objective("latency", "minimize", "latency_ms", "p50 ms"),
    )
}
#: ``--objective`` choices.
OBJECTIVE_NAMES = tuple(OBJECTIVES)
ACCURACY = "accuracy"
#: Accuracy against int8 file size: the trade-off every microcontroller user faces first.
DEFAULT_OBJECTIVES = (ACCURACY, "size")


def resolve_objectives(names: tuple[str, ...] | list[str]) -> tuple[Objective, ...]:
    """The objectives of a study, accuracy first, each once.

    Args:
        names: ``--objective`` values; accuracy is added when missing.

    Returns:
        The records.

    Raises:
        UsageError: An unknown name.
    """
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise UsageError(
            f"Unknown --objective {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(OBJECTIVE_NAMES)}."
        )
    ordered = [ACCURACY, *(n for n in names if n != ACCURACY)]
    return tuple(OBJECTIVES[n] for n in dict.fromkeys(ordered))


@dataclasses.dataclass
class Measures:
    """A trial's figures (None: not measured yet, or not measurable for this model).

    Attributes:
        val_accuracy: Accuracy of the int8 model on the validation split, with the device
            runtime (LiteRT), never the test split.
        size_bytes: The int8 ``.tflite`` file.
        arena_bytes: TFLite Micro's tensor arena with its 10% margin, as ``edgenn firmware``
            allocates it.
        latency_ms: LiteRT's median ``invoke()`` time on this machine.
        params: Parameters of the Keras model (how trials compare sizes for pruning when the
            int8 figures are not measured before training).
    """

    val_accuracy: float | None = None
    size_bytes: int | None = None
    arena_bytes: int | None = None
    latency_ms: float | None = None
    params: int | None = None

    def values(self, objectives: tuple[Objective, ...]) -> list[float]:
        """The objective values in study order (for Optuna)."""
        return [float(getattr(self, o.attr)) for o in objectives]


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Hard limits; a trial over any of them is rejected (Optuna state PRUNED, with the reason).

    Attributes:
        max_size: int8 file size in bytes.
        max_arena: TFLite Micro arena in bytes.
        max_latency_ms: LiteRT p50 latency in milliseconds.
    """

    max_size: int | None = None
    max_arena: int | None = None
    max_latency_ms: float | None = None

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return any(v is not None for v in dataclasses.astuple(self))

    def check(self) -> None:
        """Refuse limits that are not positive.

        Raises:
            UsageError: A limit is zero or negative.
        """
        for name, value in dataclasses.asdict(self).items():
            if value is not None and value <= 0:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be positive; received {value}.")

    def violation(self, m: Measures) -> str | None:
        """Why the measures break a limit (None when they do not, or are not measured yet)."""
        if self.max_size is not None and m.size_bytes is not None and m.size_bytes > self.max_size:
            return f"size {m.size_bytes:,} B > --max-size {self.max_size:,} B"
        if self.max_arena is not None:
            if m.arena_bytes is None and m.size_bytes is not None:
                return "TFLite Micro cannot run the model, so --max-arena cannot be met"
            if m.arena_bytes is not None and m.arena_bytes > self.max_arena:
                return f"arena {m.arena_bytes:,} B > --max-arena {self.max_arena:,} B"
        if (
            self.max_latency_ms is not None
            and m.latency_ms is not None
            and m.latency_ms > self.max_latency_ms
        ):
            return f"latency {m.latency_ms:.4f} ms > --max-latency-ms {self.max_latency_ms:g}"
        return None


#: Multipliers of the size suffixes: KB is 1,024 bytes, as microcontroller data sheets count.
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2}
_UNITS["mib"] = _UNITS["mb"]


def parse_bytes(text: str | int, flag: str = "size") -> int:
    """``64KB`` / ``64k`` / ``65536`` / ``0.5MB`` -> bytes (KB = 1,024 bytes).

    Args:
        text: The value as typed.
        flag: The option, for the message.

    Returns:
        Bytes.

    Raises:
        UsageError: Not a size.
    """
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise UsageError(
            f"{flag} expects a size such as 65536, 64KB or 0.5MB (KB = 1,024 bytes); "
            f"received {text!r}."
        )
    return int(round(float(match.group(1)) * _UNITS[unit]))
