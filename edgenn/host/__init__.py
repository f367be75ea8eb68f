"""Everything that needs TensorFlow: model builders, training, conversion, the Keras side of bench.

This is the only package allowed to import TensorFlow or Keras (ruff's banned-import rule and
``tests/test_imports.py`` enforce it), and it does so inside functions, through
:mod:`edgenn.host.tfutil`, so that importing a module here for its constants stays cheap. Install
with ``pip install 'edgenn[train]'``; a device never needs this package.
"""
