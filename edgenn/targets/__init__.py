"""[device] Targets: one record per device, and the checks of what of a .tflite runs there.

:data:`REGISTRY` holds one :class:`Target` per device: its name and help line, the precision and
I/O type ``edgenn convert`` gives it by default, the precisions it accepts, its check and the
check's typed options, and the conversion quirks it needs. The CLI's choices and help, convert's
defaults and every ``--target`` lookup come from these records; no other module compares target
names.

Every check reads the flatbuffer (``edgenn.tflite_model``) and returns a :class:`TargetReport`:
one row per op (op, version, status, reason) and a verdict line. No TensorFlow here; each check's
module is imported when the check first runs.

- ``cpu``: LiteRT on a CPU; the real runtime must load and allocate the model.
- ``gpu``: the LiteRT GPU delegate's documented op list and constraints.
- ``edgetpu``: the Edge TPU compiler's documented requirements; runs ``edgetpu_compiler`` when
  it is on PATH.
- ``micro``: TFLite Micro's own interpreter (PyPI ``tflite-micro``) and the smallest arena.
- ``tflite-runtime-2.14``: op versions against the measured table of tflite-runtime 2.14.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgenn.errors import UsageError
from edgenn.precision import FLOAT_IO, FP16, INT8, INT8_IO, PRECISIONS, UINT8_IO
from edgenn.tflite_model import TFLiteFile

#: Row statuses.
RUNS = "runs"
FALLS_BACK = "falls back"  # runs, but on the CPU instead of the accelerator
FAILS = "fails"  # cannot run on this target at all


@dataclasses.dataclass
class OpRow:
    """One operator's fate on a target.

    Attributes:
        index: Position in execution order.
        op: Op name.
        version: Op version.
        status: ``runs``, ``falls back`` or ``fails``.
        reason: Why it falls back or fails (empty when it runs).
    """

    index: int
    op: str
    version: int
    status: str
    reason: str = ""


@dataclasses.dataclass
class TargetReport:
    """The result of a target check.

    Attributes:
        target: Target name.
        ok: True when the whole model runs on the target as intended.
        verdict: One line for people.
        rows: Per-op table.
        notes: Model-level findings (dtypes, shapes, what was and was not run).
        details: Target-specific figures (e.g. the TFLM arena, compiler output).
    """

    target: str
    ok: bool
    verdict: str
    rows: list[OpRow] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON document."""
        return dataclasses.asdict(self)

    def table(self) -> str:
        """The per-op table and the verdict as text."""
        width = max([len(r.op) for r in self.rows] + [2])
        lines = [f"{'#':>3}  {'op':<{width}}  ver  {'status':<10}  reason"]
        for r in self.rows:
            lines.append(
                f"{r.index:>3}  {r.op:<{width}}  {r.version:>3}  {r.status:<10}  {r.reason}"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"verdict ({self.target}): {self.verdict}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class TargetOption:
    """A typed option of a target's check (a keyword argument of its check function).

    Attributes:
        name: The keyword.
        kind: Its type: ``float``, ``bool`` or ``Path``.
        help: One line.
        optional: ``None`` is accepted too (the check then picks the value itself).
    """

    name: str
    kind: type
    help: str
    optional: bool = False

    def coerce(self, target: str, value: Any) -> Any:
        """Check a value against the option's type.

        Args:
            target: Target name, for the message.
            value: The value given.

        Returns:
            The value (a ``str`` given for a ``Path`` option becomes a ``Path``).

        Raises:
            UsageError: The value has another type.
        """
        if value is None and self.optional:
            return value
        if self.kind is Path and isinstance(value, (str, os.PathLike)):
            return Path(value)
        # bool is an int subclass: a flag passed to a number option is a mistake, not a 1.
        if self.kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if self.kind is bool and isinstance(value, bool):
            return value
        expected = self.kind.__name__ + (" or None" if self.optional else "")
        raise UsageError(
            f"Option {self.name}={value!r} of target {target}: expected {expected}, "
            f"received {type(value).__name__}."
        )


@dataclasses.dataclass(frozen=True)
class LazyCheck:
    """A check function named by module and attribute, imported on its first call.

    Checks bring in what they need (the runtime, TFLite Micro's interpreter) when they run, so
    listing the targets (``edgenn --help``) imports none of them; the check modules also import
    this package, which could not import them in turn at load time.

    Attributes:
        module: Dotted module name.
        function: The function's name in it.
    """

    module: str
    function: str

    def load(self) -> Callable[..., TargetReport]:
        """The check function itself."""
        return getattr(importlib.import_module(self.module), self.function)

    def __call__(self, model: TFLiteFile, **options: Any) -> TargetReport:
        """Run the check.

        Args:
            model: The parsed model.
            **options: The check's keyword arguments.

        Returns:
            The report.
        """
        return self.load()(model, **options)


@dataclasses.dataclass(frozen=True)
class Target:
    """Everything edgenn knows about one target.

    Attributes:
        name: The ``--target`` value.
        help: One line for the CLI.
        default_precision: ``--quantize`` when none is given.
        check: The check function (imported on first use).
        default_io: ``--io`` of an int8 model when none is given (other precisions keep float).
        allowed_precisions: The precisions the target can run at all.
        options: The check's typed options.
        unwritten_options: Options for checking a model that is not on disk yet (``edgenn
            convert`` checks before it writes).
        recheck_after_write: Check again once the file is written: the check's compile step needs
            the file on disk.
        per_tensor_dense_layers: Dynamic-range conversion must quantize dense layers per tensor.
    """

    name: str
    help: str
    default_precision: str
    check: LazyCheck
    default_io: str = FLOAT_IO
    allowed_precisions: tuple[str, ...] = PRECISIONS
    options: tuple[TargetOption, ...] = ()
    unwritten_options: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    recheck_after_write: bool = False
    per_tensor_dense_layers: bool = False

    @property
    def option_names(self) -> tuple[str, ...]:
        """The names of :attr:`options`."""
        return tuple(o.name for o in self.options)

    def io_for(self, precision: str) -> str:
        """The I/O type a model of ``precision`` gets by default (8-bit I/O needs full int8)."""
        return self.default_io if precision == INT8 else FLOAT_IO

    def run(self, model: TFLiteFile, **options: Any) -> TargetReport:
        """Run the check with options checked against :attr:`options`.

        Args:
            model: The parsed model.
            **options: Some of :attr:`option_names`.

        Returns:
            The report.

        Raises:
            UsageError: An unknown option, or a value of the wrong type.
        """
        known = {o.name: o for o in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            valid = ", ".join(known) if known else "none (it takes no options)"
            raise UsageError(
                f"Unknown option {', '.join(map(repr, unknown))} for target {self.name}; "
                f"valid options: {valid}."
            )
        return self.check(model, **{k: known[k].coerce(self.name, v) for k, v in options.items()})


def _lazy(module: str, function: str) -> LazyCheck:
    return LazyCheck(f"{__name__}.{module}", function)


#: The targets, in the order the CLI lists them.
REGISTRY: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "cpu",
            "LiteRT on a CPU (a Raspberry Pi, a PC)",
            INT8,
            _lazy("cpu", "check_cpu"),
        ),
        # What phone GPU delegates prefer: fp16 weights, float I/O.
        Target(
            "gpu",
            "LiteRT's GPU delegate",
            FP16,
            _lazy("gpu", "check_gpu"),
        ),
        # Coral's examples feed uint8 camera frames straight in; the compiler needs full int8.
        Target(
            "edgetpu",
            "a Coral Edge TPU",
            INT8,
            _lazy("edgetpu", "check_edgetpu"),
            default_io=UINT8_IO,
            allowed_precisions=(INT8,),
            options=(
                TargetOption(
                    "output_dir",
                    Path,
                    "Where edgetpu_compiler writes *_edgetpu.tflite [default: beside the model].",
                    optional=True,
                ),
                TargetOption("compile", bool, "Run edgetpu_compiler when it is on PATH."),
            ),
            # edgetpu_compiler writes *_edgetpu.tflite beside the model: it runs on the written
            # file, not on bytes in memory.
            unwritten_options=MappingProxyType({"compile": False}),
            recheck_after_write=True,
        ),
        # TFLM's kernels and examples are int8 end to end: no float tensors at the edges.
        Target(
            "micro",
            "TFLite Micro on a microcontroller",
            INT8,
            _lazy("micro", "check_micro"),
            default_io=INT8_IO,
            allowed_precisions=(INT8,),
            options=(
                TargetOption(
                    "arena_margin", float, "Percent added to the measured minimum tensor arena."
                ),
            ),
        ),
        Target(
            "tflite-runtime-2.14",
            "tflite-runtime 2.14, for 32-bit Pi OS or Python <= 3.11",
            INT8,
            _lazy("runtime_versions", "check_tflite_runtime_214"),
            # Per-channel dynamic-range dense layers are FULLY_CONNECTED v12, which tflite-runtime
            # 2.14 cannot load (it stops at v10); per-tensor quantization gives v9.
            per_tensor_dense_layers=True,
        ),
    )
}
#: Target names (``--target`` choices).
TARGETS = tuple(REGISTRY)
#: What ``edgenn convert`` makes a model for when no ``--target`` is given.
DEFAULT_TARGET = "cpu"


def lookup(name: str) -> Target:
    """The record of a target.

    Args:
        name: A name from :data:`TARGETS`.

    Returns:
        The record.

    Raises:
        UsageError: Unknown target.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"Unknown target {name!r}; expected one of {', '.join(TARGETS)}."
        ) from None


def check(model: TFLiteFile, target: str, **options: Any) -> TargetReport:
    """Run one target's check.

    Args:
        model: The parsed model.
        target: A name from :data:`TARGETS`.
        **options: The target's options (:attr:`Target.options`), e.g. ``arena_margin`` for
            micro, ``output_dir`` and ``compile`` for edgetpu.

    Returns:
        The report.

    Raises:
        UsageError: Unknown target, unknown option or an option of the wrong type.
    """
    return lookup(target).run(model, **options)
