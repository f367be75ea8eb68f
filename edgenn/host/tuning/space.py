"""[host] The search space of ``edgenn tune``: which ``edgenn train`` options a trial may take.

A space maps a key to a dimension, written in JSON the same way in :data:`DEFAULT_SPACE` and in
a ``--space`` file::

    {"model": {"choices": ["cnn"]},                      a list to pick from
     "learning_rate": {"low": 3e-4, "high": 1e-2, "log": true},   a range (int or float)
     "filters": {"low": 8, "high": 48, "step": 8},       channels of EACH block, picked per block
     "blocks": {"low": 2, "high": 3},                    how many conv blocks
     "patience": 3}                                      a bare value: fixed, as edgenn train's

The keys are ``edgenn train``'s option names (their Python names: ``learning_rate`` for
``--lr``) plus ``blocks`` (CNN conv blocks) and ``layers`` (MLP hidden layers); ``filters`` and
``hidden`` ranges or choices apply to each block or layer. Options given on the command line fix
their key (``--model cnn``, ``--filters 16,32``), over the file, over the defaults. A trial's
options become a :class:`~edgenn.host.train.TrainConfig` through
:func:`~edgenn.host.train.config_from_options`, so every value is checked as ``edgenn train``
checks it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgenn.errors import EdgennError
from edgenn.fileio import read_regular
from edgenn.host import models
from edgenn.host import train as train_mod

#: Keys that only a CNN uses, only an MLP uses, and every model uses.
CNN_KEYS = ("blocks", "filters", "depthwise", "head", "dense")
MLP_KEYS = ("layers", "hidden")
COMMON_KEYS = (
    "activation",
    "dropout",
    "optimizer",
    "learning_rate",
    "lr_schedule",
    "batch_size",
    "augment",
    "epochs",
)
#: The keys a space can search (``choices`` or a range); other train options can only be fixed.
SEARCH_KEYS = ("model", *CNN_KEYS, *MLP_KEYS, *COMMON_KEYS)
#: Keys that are not train options: the number of CNN blocks and of MLP hidden layers.
COUNT_KEYS = {"blocks": "filters", "layers": "hidden"}
#: What ``edgenn tune`` searches when nothing narrows it. Small widths: the point is a model
#: that fits a microcontroller. Each value is checked against the library's lists on load.
DEFAULT_SPACE: dict[str, Any] = {
    "model": {"choices": list(models.MODEL_KINDS)},
    "blocks": {"low": 2, "high": 3},
    "filters": {"low": 8, "high": 64, "step": 8},
    "depthwise": {"choices": [False, True]},
    "head": {"choices": list(models.CNN_HEADS)},
    "dense": {"choices": [0, 32, 64]},
    "layers": {"low": 1, "high": 2},
    "hidden": {"low": 32, "high": 256, "step": 32},
    "activation": {"choices": ["relu", "leaky_relu"]},
    "dropout": {"low": 0.0, "high": 0.5, "step": 0.05},
    "optimizer": {"choices": ["adam", "nesterov"]},
    "learning_rate": {"low": 3e-4, "high": 1e-2, "log": True},
    "lr_schedule": {"choices": ["cosine", "constant"]},
    "batch_size": {"choices": [32, 64, 128]},
    "augment": {"choices": [False, True]},
    "epochs": {"low": 5, "high": 30, "step": 5},
}
#: A space file is a few hundred bytes; refuse anything far larger before parsing it.
SPACE_MAX_BYTES = 1024 * 1024
#: The most blocks or hidden layers a range may reach (each adds a parameter to the study).
MAX_COUNT = 8
_FORMS = '{"choices": [...]}, {"low": A, "high": B} (optional "step", "log": true) or a fixed value'


@dataclasses.dataclass(frozen=True)
class Dim:
    """One dimension of the space.

    Attributes:
        key: The space key.
        kind: ``fixed``, ``choice``, ``int`` or ``float``.
        value: The fixed value.
        choices: The values to pick from.
        low: Range start (inclusive).
        high: Range end (inclusive).
        step: Range step (None: continuous floats, 1 for ints).
        log: Sample the range on a log scale.
    """

    key: str
    kind: str
    value: Any = None
    choices: tuple[Any, ...] = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False

    def values(self) -> list[Any]:
        """Every value a ``fixed``, ``choice`` or ``int`` dimension can take (ranges: both ends)."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return [self.low, self.high]

    def suggest(self, trial: Any, param: str) -> Any:
        """The value for ``trial`` (Optuna's ``suggest_*``; a fixed value is not a parameter)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "choice":
            return trial.suggest_categorical(param, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                param, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        value = trial.suggest_float(param, self.low, self.high, step=self.step, log=self.log)
        # A stepped float lands on low + k * step in binary (0.30000000000000004): keep the
        # decimal value the space file means, as best.json will show it.
        return round(value, 10) if self.step else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _range_dim(key: str, spec: Mapping[str, Any]) -> Dim:
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise EdgennError(f"Search-space key {key!r}: low, high and step must be numbers.")
    if low > high or (step is not None and step <= 0) or (log and (low <= 0 or step)):
        raise EdgennError(
            f"Search-space key {key!r} received low {low}, high {high}, step {step}, log {log}; "
            "expected low <= high, a positive step, and log only with low > 0 and no step."
        )
    kind = "int" if all(_is_int(v) for v in numbers) else "float"
    return Dim(key, kind, low=low, high=high, step=step, log=bool(log))


def parse_dim(key: str, spec: Any) -> Dim:
    """One dimension from its JSON form.

    Args:
        key: The space key.
        spec: ``{"choices": [...]}``, ``{"low", "high"[, "step"][, "log"]}`` or a fixed value.

    Returns:
        The dimension (not yet checked against the train options: :func:`check_dim`).

    Raises:
        EdgennError: A malformed dimension.
    """
    if not isinstance(spec, Mapping):
        return Dim(key, "fixed", value=spec)
    if set(spec) == {"choices"}:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise EdgennError(f"Search-space key {key!r}: choices must be a non-empty list.")
        if any(isinstance(c, (list, dict)) for c in choices):
            raise EdgennError(
                f"Search-space key {key!r}: choices must be single values (for filters and "
                "hidden: the width of each block or layer); give a list as a fixed value."
            )
        return Dim(key, "choice", choices=tuple(choices))
    if {"low", "high"} <= set(spec) <= {"low", "high", "step", "log"}:
        return _range_dim(key, spec)
    raise EdgennError(f"Search-space key {key!r} received {json.dumps(spec)}; expected {_FORMS}.")


def _train_option_names() -> tuple[str, ...]:
    return tuple(train_mod.config_options(train_mod.TrainConfig()))


def check_dim(dim: Dim) -> None:
    """Check every value a dimension can take as ``edgenn train`` would check it.

    Raises:
        EdgennError: A value no run could take, or a search over a key that can only be fixed.
    """
    if dim.kind != "fixed" and dim.key not in SEARCH_KEYS:
        raise EdgennError(
            f"Search-space key {dim.key!r} can only be fixed (a bare value); the keys that can "
            f"be searched are: {', '.join(SEARCH_KEYS)}."
        )
    for value in dim.values():
        if dim.key in COUNT_KEYS:
            if not _is_int(value) or not 1 <= value <= MAX_COUNT:
                raise EdgennError(
                    f"Search-space key {dim.key!r} received {value!r}; expected an integer "
                    f"from 1 to {MAX_COUNT}."
                )
            continue
        if dim.key == "dropout" and value is not None and not 0 <= value < 1:
            raise EdgennError(f"Search-space key 'dropout' received {value!r}; expected [0, 1).")
        per_block = dim.key in COUNT_KEYS.values() and dim.kind != "fixed"
        try:
            train_mod.config_from_options({dim.key: [value] if per_block else value})
        except EdgennError as exc:
            raise EdgennError(f"Search-space key {dim.key!r}: {exc.message}") from None


def read_space_file(path: Path) -> dict[str, Any]:
    """The JSON object of a ``--space`` file.

    Raises:
        EdgennError: Unreadable, not JSON or not an object; the message names the file.
    """
    path = Path(path)
    raw = read_regular(path, "a JSON search-space file", SPACE_MAX_BYTES)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EdgennError(f"{path} is not valid JSON ({exc}); expected a search space.") from None
    if not isinstance(doc, dict):
        raise EdgennError(
            f"{path} holds a JSON {type(doc).__name__}; expected an object such as "
            '{"model": {"choices": ["cnn"]}, "epochs": 10}.'
        )
    return doc


@dataclasses.dataclass
class SearchSpace:
    """The dimensions to search and the train options every trial shares.

    Attributes:
        dims: One :class:`Dim` per key of :data:`SEARCH_KEYS`.
        fixed: Train options that are not searched (data set, limit, seed, patience...).
    """

    dims: dict[str, Dim]
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)

    def sample(self, trial: Any) -> dict[str, Any]:
        """A trial's train options (model-specific keys only for its model kind).

        Args:
            trial: An Optuna trial; fixed keys do not become Optuna parameters.

        Returns:
            Options for :func:`~edgenn.host.train.config_from_options`.
        """
        d = self.dims
        options: dict[str, Any] = {"model": d["model"].suggest(trial, "model")}
        if options["model"] == "cnn":
            options["filters"] = self._widths(trial, "blocks", "filters")
            for key in CNN_KEYS[2:]:
                options[key] = d[key].suggest(trial, key)
        else:
            options["hidden"] = self._widths(trial, "layers", "hidden")
        for key in COMMON_KEYS:
            options[key] = d[key].suggest(trial, key)
        return options

    def _widths(self, trial: Any, count_key: str, width_key: str) -> list[int]:
        """Channels per block (or units per layer): a fixed list, or one parameter each."""
        width = self.dims[width_key]
        if width.kind == "fixed":
            return list(width.value)
        count = self.dims[count_key].suggest(trial, count_key)
        return [width.suggest(trial, f"{width_key}_{i + 1}") for i in range(count)]

    def smallest(self) -> list[dict[str, Any]]:
        """The candidates for the smallest model of the space.

        Narrowest widths and fewest units, with every block count, head and block type: which
        of those is smallest depends on the input size, so each is built and counted.

        Returns:
            Train options, one dict per candidate.
        """
        d = self.dims
        common = {key: _smallest_value(d[key]) for key in COMMON_KEYS}
        found = []
        for model in d["model"].values():
            if model == "cnn":
                product = itertools.product(
                    self._narrowest("blocks", "filters"),
                    d["head"].values(),
                    d["depthwise"].values(),
                )
                for filters, head, depthwise in product:
                    dense = min(d["dense"].values())
                    found.append(
                        {"model": model, "filters": filters, "head": head, "dense": dense}
                        | {"depthwise": depthwise, **common}
                    )
            else:
                for hidden in self._narrowest("layers", "hidden"):
                    found.append({"model": model, "hidden": hidden, **common})
        return found

    def _narrowest(self, count_key: str, width_key: str) -> list[list[int]]:
        width = self.dims[width_key]
        if width.kind == "fixed":
            return [list(width.value)]
        low = int(min(width.values()))
        return [[low] * count for count in self.dims[count_key].values()]

    def describe(self) -> dict[str, Any]:
        """The space in its JSON form (fixed keys as bare values)."""
        doc: dict[str, Any] = {}
        for key, dim in self.dims.items():
            if dim.kind == "fixed":
                doc[key] = dim.value
            elif dim.kind == "choice":
                doc[key] = {"choices": list(dim.choices)}
            else:
                doc[key] = {"low": dim.low, "high": dim.high}
                doc[key] |= {"step": dim.step} if dim.step else {}
                doc[key] |= {"log": True} if dim.log else {}
        return {**doc, **self.fixed}


def _smallest_value(dim: Dim) -> Any:
    """A value that keeps the model smallest: relu (fused into the convolution) when allowed."""
    values = dim.values()
    if dim.key == "activation" and "relu" in values:
        return "relu"
    return min(values) if all(isinstance(v, (int, float)) for v in values) else values[0]


def build_space(
    file_doc: Mapping[str, Any] | None, given: Mapping[str, Any], source: str = "--space"
) -> SearchSpace:
    """The space: the defaults, then a ``--space`` file, then the options given on the command line.

    Args:
        file_doc: The file's JSON object (None: no file).
        given: ``edgenn train`` options the user gave (they fix their key).
        source: Where ``file_doc`` came from, for messages.

    Returns:
        The checked space.

    Raises:
        EdgennError: An unknown key (the message lists the valid ones), a malformed dimension,
            or a value no run could take.
    """
    options = _train_option_names()
    valid = (*SEARCH_KEYS, *(o for o in options if o not in SEARCH_KEYS))
    unknown = sorted(str(k) for k in (file_doc or {}) if k not in valid)
    if unknown:
        raise EdgennError(
            f"Unknown search-space key(s) {', '.join(map(repr, unknown))} in {source}; "
            f"expected some of: {', '.join(valid)}."
        )
    dims = {key: parse_dim(key, spec) for key, spec in DEFAULT_SPACE.items()}
    fixed: dict[str, Any] = {}
    for layer in (file_doc or {}, given):
        for key, value in layer.items():
            if key in SEARCH_KEYS:
                dims[key] = parse_dim(key, value) if layer is file_doc else Dim(key, "fixed", value)
            elif isinstance(value, Mapping):
                check_dim(parse_dim(key, value))  # refuses a search over a fixed-only key
            else:
                fixed[key] = value
    for dim in dims.values():
        check_dim(dim)
    _check_counts(dims, file_doc or {}, source)
    try:
        train_mod.config_from_options(fixed)
    except EdgennError as exc:
        raise EdgennError(f"{exc.message} (in {source} or the command line)") from None
    if fixed.get("base"):
        raise EdgennError(
            "edgenn tune searches edgenn's own MLP and CNN builders; --base (transfer learning) "
            "is not searched. Drop --base, or tune the base run's head with edgenn train."
        )
    return SearchSpace(dims, fixed)


def _check_counts(dims: dict[str, Dim], file_doc: Mapping[str, Any], source: str) -> None:
    """A fixed ``filters`` / ``hidden`` list sets the count; a count given with it must agree."""
    for count_key, width_key in COUNT_KEYS.items():
        width = dims[width_key]
        if width.kind == "fixed" and count_key in file_doc:
            if len(width.value) not in dims[count_key].values():
                raise EdgennError(
                    f"{source}: {count_key!r} allows {dims[count_key].values()} but {width_key} "
                    f"is fixed to {width.value} ({len(width.value)} of them)."
                )
