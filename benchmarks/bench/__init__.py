"""Benchmarks: ``tfp_realnvp.RealNVP`` against TFP's built-in RealNVP and the book's model.

``python -m benchmarks.bench --out DIR`` (``make bench``) trains, on the same
two-moons data, seeds, validation and test sets, with the same optimizer
(:func:`tfp_realnvp.fit` with the package's ``TrainingOptions``: Adam, warm-up
then cosine decay, gradient clipping, weight decay, a moving average of the
weights) and the same number of steps:

* ``ours``: :class:`tfp_realnvp.RealNVP` with the package's ``FlowOptions``.
* ``tfp_builtin_our_lr``: ``tfb.RealNVP`` couplings with
  ``tfb.real_nvp_default_template`` networks chained with ``tfb.Permute``,
  the same couplings and widths, in a ``tfd.TransformedDistribution``, at our
  learning rate.  The distribution tracks none of the templates' variables
  (TFP issue 1439): they are collected from the templates after a first call
  and passed to ``fit(trainable_variables=...)``.
* ``tfp_builtin_best_lr``: the same model at the best stable learning rate of a
  sweep (1e-3, 3e-4, 1e-4 and ours), every rate on every seed at the full
  budget (see :func:`benchmarks.bench.measure.sweep`).
* ``book``: *Generative Deep Learning* (2nd ed., ch. 6): 2 couplings, separate
  scale and translation towers of 4 x Dense(256, relu), tanh on the scale,
  Adam 1e-4, batch 256, as ``tfb.RealNVP`` couplings.

Modules: :mod:`~benchmarks.bench.settings` (what a run does),
:mod:`~benchmarks.bench.contestants` (data and models),
:mod:`~benchmarks.bench.measure` (what a worker measures),
:mod:`~benchmarks.bench.workers` (one process per model),
:mod:`~benchmarks.bench.stats` and :mod:`~benchmarks.bench.report` (summaries,
``results.json``, ``results.md``, the plot), :mod:`~benchmarks.bench.run` (the
parent process and its command line: ``run.run_benchmarks``).  ``benchmarks/README.md`` says
how each figure is measured.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.bench.settings import (CONTESTANTS, GAP_THRESHOLDS, LABELS,  # noqa: E402
                                       BenchSettings, fit_kwargs)
from benchmarks.bench.stats import median_worst, quality, time_to_gap  # noqa: E402

__all__ = ["BenchSettings", "CONTESTANTS", "LABELS", "GAP_THRESHOLDS", "fit_kwargs",
           "median_worst", "quality", "time_to_gap"]
