"""One tuning run: ours on the benchmark's data, one seed, chosen fit and flow options.

The README's tuning table comes from runs of this script, one at a time:

    python benchmarks/tune_one.py '{"seed": 1, "learning_rate": 0.002}'
    python benchmarks/tune_one.py '{"seed": 3, "weight_decay": 0.01, "flow": {"num_couplings": 12}}'

The JSON object holds `fit` keyword arguments, plus `seed`, `steps` (default:
the package's budget) and `flow` (RealNVP options replacing the package
defaults).  Prints one JSON line: the test gap,
training seconds, wall time and steps to validation gaps 0.05 and 0.02, and
the first validation gaps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402

from tfp_realnvp import bench, fit  # noqa: E402


def main(argv: list[str]) -> int:
  options = json.loads(argv[0]) if argv else {}
  seed = options.pop("seed", 0)
  steps = options.pop("steps", None)
  settings = bench.BenchSettings.full()
  settings = dataclasses.replace(
      settings, flow_options={**settings.flow_options, **options.pop("flow", {})})
  steps = settings.steps if steps is None else int(steps)
  options.setdefault("learning_rate", settings.learning_rate)
  x_val, x_test, oracle_val, oracle_test = bench._fixed_sets(settings)
  x_train = bench._data(settings, seed)
  tf_keras.utils.set_random_seed(seed)
  flow, variables = bench._make_ours(settings, x_train, seed)
  start = time.perf_counter()
  history = fit(flow, x_train, steps=steps, batch_size=settings.batch_size,
                validation_data=x_val, eval_every=min(settings.eval_every, steps),
                trainable_variables=variables, seed=seed, progress=False, **options)
  seconds = time.perf_counter() - start
  h = history.as_dict()
  print(json.dumps({
      "seed": seed, "options": options, "flow": settings.flow_options,
      "gap": round(float(-np.mean(flow.log_prob(x_test).numpy())) - oracle_test, 4),
      "train_s": round(seconds, 1),
      "to_gap_0.05": bench.time_to_gap(h, oracle_val, 0.05),
      "to_gap_0.02": bench.time_to_gap(h, oracle_val, 0.02),
      "val_gaps": [round(v - oracle_val, 3) for v in h["val_nll"][:10]]}))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
