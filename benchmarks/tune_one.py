"""One tuning run: ours on the benchmark's data, one seed, chosen options.

The README's tuning table comes from runs of this script, one at a time:

    python benchmarks/tune_one.py '{"seed": 1, "learning_rate": 0.002}'
    python benchmarks/tune_one.py '{"seed": 3, "weight_decay": 0.01, "flow": {"num_couplings": 12}}'

The JSON object may hold `seed`, `flow` (RealNVP options replacing the
package defaults), `steps` (default: the package's budget) and the training
settings `learning_rate`, `batch_size`, `weight_decay`, `ema_decay` and
`jit_compile`.  The run is the benchmark's own (`tfp_realnvp.bench`), so it
measures what the benchmark measures.  Prints one JSON line: the test gap,
training seconds, wall time and steps to validation gaps 0.05 and 0.02, and
the first validation gaps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfp_realnvp import bench  # noqa: E402

SETTINGS = ("learning_rate", "batch_size", "weight_decay", "ema_decay", "jit_compile")


def main(argv: list[str]) -> int:
  options = json.loads(argv[0]) if argv else {}
  seed = options.pop("seed", 0)
  flow = options.pop("flow", {})
  steps = options.pop("steps", None)
  unknown = set(options) - set(SETTINGS)
  if unknown:
    raise ValueError(
        f"unknown options {sorted(unknown)}; expected seed, flow, steps or {SETTINGS}")
  settings = bench.BenchSettings.full()
  settings = dataclasses.replace(
      settings, flow_options={**settings.flow_options, **flow}, **options)
  if steps is not None:  # the default evaluation period; a shorter run is evaluated once
    settings = dataclasses.replace(settings, steps=int(steps))
  sets = bench._fixed_sets(settings)
  run = bench._train_run("ours", settings, bench._make_ours, seed, settings.learning_rate,
                         settings.batch_size, settings.steps, sets)
  oracle_val = sets[2]
  print(json.dumps({
      "seed": seed, "options": options, "flow": settings.flow_options,
      "gap": None if run["gap"] is None else round(run["gap"], 4),
      "train_s": round(run["train_seconds"], 1),
      "to_gap_0.05": [run["time_to_gap_0.05_s"], run["steps_to_gap_0.05"]],
      "to_gap_0.02": [run["time_to_gap_0.02_s"], run["steps_to_gap_0.02"]],
      "val_gaps": [round(v - oracle_val, 3) for v in run["history"]["val_nll"][:10]]}))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
