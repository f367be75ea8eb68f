"""edgenn: train compact neural networks and run them on edge devices.

The public Python API (see the README's "Python API" section):

- :class:`Classifier` and :class:`Class`: classify images with a .tflite model (device side:
  numpy, Pillow and a LiteRT runtime).
- :func:`inspect`: what a .tflite file holds, optionally checked against a target.
- :func:`train` and :func:`convert`: the host side (they need TensorFlow:
  ``pip install 'edgenn[train]'``).

This module imports nothing heavy: the names above are resolved on first use (``Classifier``
and ``Class`` through the module ``__getattr__``; the functions import their modules when
called), so that ``import edgenn`` and ``edgenn --help`` start fast and never pull in TensorFlow.
"""

from __future__ import annotations

import importlib as _importlib
from pathlib import Path as _Path
from typing import TYPE_CHECKING

from edgenn.errors import EdgennError, MissingDependencyError

if TYPE_CHECKING:
    import os
    from typing import Any

    from edgenn.classify import Class
    from edgenn.host.convert import ConvertResult
    from edgenn.host.train import TrainConfig, TrainResult
    from edgenn.predict import Classification, Classifier

__version__ = "0.1.0"

#: Public names imported on first use, by the module that defines them.
_LAZY = {
    "Classifier": "edgenn.predict",
    "Classification": "edgenn.predict",
    "Class": "edgenn.classify",
}

__all__ = [
    "Class",
    "Classification",
    "Classifier",
    "EdgennError",
    "MissingDependencyError",
    "__version__",
    "convert",
    "inspect",
    "train",
]


def __getattr__(name: str) -> Any:
    """Import ``Classifier``, ``Classification`` and ``Class`` when first used (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgenn' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def inspect(model: str | os.PathLike, target: str | None = None, **options: Any) -> dict[str, Any]:
    """What a .tflite file holds: the ``edgenn inspect --json`` document.

    Needs no TensorFlow and no runtime (the flatbuffer is parsed directly), except for the
    target checks that run the model.

    Args:
        model: The .tflite file.
        target: Also check this target (a name of :data:`edgenn.targets.TARGETS`); the report is
            the document's ``check`` entry.
        **options: The target's options (e.g. ``arena_margin`` for ``micro``).

    Returns:
        Inputs, outputs, ops, sizes, MACs, embedded labels and preprocessing, and ``check``.

    Raises:
        EdgennError: The file is missing or damaged, or the target or an option is unknown.
    """
    from edgenn import artifact, targets, tflite_model

    parsed = tflite_model.load(_Path(model))
    doc = artifact.describe(parsed)
    if target is not None:
        doc["check"] = targets.check(parsed, target, **options).to_dict()
    return doc


def train(
    output: str | os.PathLike, config: TrainConfig | None = None, **settings: Any
) -> TrainResult:
    """Train a model and write its run directory, as ``edgenn train`` does (needs TensorFlow).

    Example: ``edgenn.train("runs/demo", model="mlp", limit=2000, epochs=3)``.

    Args:
        output: The run directory to create.
        config: A full :class:`edgenn.host.train.TrainConfig` (default: ``edgenn train``'s).
        **settings: Fields of ``TrainConfig`` (``model``, ``epochs``...) or of its
            :class:`edgenn.datasets.DataSpec` (``dataset``, ``limit``...), which override
            ``config``'s; and the keywords of :func:`edgenn.host.train.train` (``overwrite``,
            ``progress``, ``verbose``).

    Returns:
        The :class:`edgenn.host.train.TrainResult`: ``run_dir``, ``metrics`` and the Keras model.

    Raises:
        UsageError: A setting is unknown.
        MissingDependencyError: TensorFlow is not installed.
        EdgennError: Bad data or configuration.
    """
    import dataclasses
    import inspect as signatures

    from edgenn.errors import UsageError
    from edgenn.host import train as host

    config = config or host.TrainConfig()
    calls = set(signatures.signature(host.train).parameters) - {"config", "output"}
    fields = {f.name for f in dataclasses.fields(config)} - {"data"}
    data_fields = {f.name for f in dataclasses.fields(config.data)}
    unknown = sorted(set(settings) - fields - data_fields - calls)
    if unknown:
        known = ", ".join(sorted(fields | data_fields | calls))
        raise UsageError(f"Unknown train setting(s) {', '.join(unknown)}; expected: {known}.")
    data = {k: v for k, v in settings.items() if k in data_fields and k not in fields}
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, **data),
        **{k: v for k, v in settings.items() if k in fields},
    )
    options = {k: v for k, v in settings.items() if k in calls}
    return host.train(config, _Path(output), **options)


def convert(
    source: str | os.PathLike, output: str | os.PathLike | None = None, **options: Any
) -> ConvertResult:
    """Convert a trained model to .tflite, as ``edgenn convert`` does (needs TensorFlow).

    The labels and preprocessing are embedded in the .tflite, the accuracy of the converted
    model is checked against the Keras model, and the target is checked.

    Args:
        source: A run directory from :func:`train` / ``edgenn train``, or its ``.keras`` file.
        output: The .tflite to write (default: ``model_<quantize>.tflite`` in the run directory).
        **options: Keywords of :func:`edgenn.host.convert.convert`: ``quantize`` (fp32, fp16,
            dynamic, int8), ``io_type``, ``target``, ``calibration_samples``,
            ``max_accuracy_drop``, ``overwrite``, ``verbose``, ``progress``.

    Returns:
        The :class:`edgenn.host.convert.ConvertResult` (``output``, sizes, accuracies, check).

    Raises:
        MissingDependencyError: TensorFlow is not installed.
        EdgennError: Missing inputs, a failed conversion or too large an accuracy drop.
    """
    from edgenn.host.convert import convert as host_convert

    return host_convert(_Path(source), None if output is None else _Path(output), **options)
