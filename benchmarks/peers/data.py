"""The data files every contestant reads: one ``.npz`` per seed, written by the parent.

The points are those of the built-in benchmark (:func:`benchmarks.bench.contestants.training_data`
and :func:`~benchmarks.bench.contestants.fixed_sets`: the same sizes, noise and
seeds); each file also holds the training set's mean and standard deviation
(the peers' standardization), the oracle NLLs of the validation and test sets
and the points of the throughput measurement.
"""

from __future__ import annotations

import pathlib

import numpy as np

from benchmarks.peers.settings import PeerSettings

__all__ = ["THROUGHPUT_SEED", "write_data"]

THROUGHPUT_SEED = 12345  # as the built-in benchmark's throughput points


def write_data(settings: PeerSettings, folder) -> tuple[dict, dict]:
  """Writes ``seed_N.npz`` for every seed of ``settings`` into ``folder``.

  Returns ``{seed: path}`` and the oracle NLLs ``{"val_nll": ..., "test_nll": ...}``
  (the validation and test sets are those of every seed).
  """
  from benchmarks.bench import contestants  # TensorFlow: only when data is written
  from tfp_realnvp import datasets

  bench = settings.bench()
  x_val, x_test, oracle_val, oracle_test = contestants.fixed_sets(bench)
  throughput = datasets.moons(settings.throughput_points, settings.noise, THROUGHPUT_SEED)
  paths = {}
  for seed in settings.seeds:  # own_seeds are the first of them
    x_train = contestants.training_data(bench, seed)
    std = x_train.std(axis=0)
    path = pathlib.Path(folder) / f"seed_{seed}.npz"
    np.savez(path, train=x_train, val=x_val, test=x_test, throughput=throughput,
             mean=x_train.mean(axis=0), std=np.where(std > 0, std, 1.0),
             oracle_val_nll=oracle_val, oracle_test_nll=oracle_test, noise=settings.noise)
    paths[seed] = path
  return paths, {"val_nll": float(oracle_val), "test_nll": float(oracle_test)}
