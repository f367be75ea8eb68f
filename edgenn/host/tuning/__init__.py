"""[host] The parts of ``edgenn tune`` (the front door is :mod:`edgenn.host.tune`).

- :mod:`.objectives`  what a trial is scored on, the hard constraints, byte sizes
- :mod:`.space`       the search space over the model builders and training options
- :mod:`.study`       Optuna's storage and study: workers, resuming, trials killed mid-way
- :mod:`.trial`       one trial: check size and arena, train, convert, measure, prune
- :mod:`.arena`       the TFLite Micro arena, measured in a child process
- :mod:`.report`      trials.csv, best.json, best/, pareto.png and the Pareto table
"""
