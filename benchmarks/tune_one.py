"""One tuning run: ours on the benchmark's data, one seed, chosen options.

The README's tuning table comes from runs of this script, one at a time
(from the repository root):

    python benchmarks/tune_one.py '{"seed": 1, "learning_rate": 0.002}'
    python benchmarks/tune_one.py '{"seed": 3, "weight_decay": 0.01, "flow": {"num_couplings": 12}}'

The JSON object may hold `seed`, `flow` (`FlowOptions` fields replacing the
package defaults), `steps` (default: the package's budget), `jit_compile` and
any other `TrainingOptions` field (`learning_rate`, `batch_size`,
`weight_decay`, `ema_decay`, ...).  The run is the benchmark's own
(`benchmarks.bench.measure.train_run`), so it measures what the benchmark
measures.  Prints one JSON line: the test gap, training seconds, wall time
and steps to validation gaps 0.05 and 0.02, and the first validation gaps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.bench import BenchSettings  # noqa: E402
from benchmarks.bench.contestants import fixed_sets, make_ours  # noqa: E402
from benchmarks.bench.measure import train_run  # noqa: E402
from tfp_realnvp.options import TrainingOptions  # noqa: E402

TRAINING = tuple(f.name for f in dataclasses.fields(TrainingOptions) if f.name != "steps")


def settings_for(options: dict, flow: dict, steps: int | None) -> BenchSettings:
  """The full benchmark's settings with ``flow``, ``steps`` and the training ``options``."""
  unknown = set(options) - set(TRAINING) - {"jit_compile"}
  if unknown:
    raise ValueError(f"unknown options {sorted(unknown)}; expected seed, flow, steps, "
                     f"jit_compile or a TrainingOptions field {TRAINING}")
  settings = BenchSettings.full()
  training = {k: v for k, v in options.items() if k != "jit_compile"}
  if steps is not None:  # the default evaluation period: a shorter run is evaluated once
    training["steps"] = int(steps)
  return dataclasses.replace(
      settings, flow=dataclasses.replace(settings.flow, **flow),
      training=dataclasses.replace(settings.training, **training),
      jit_compile=options.get("jit_compile", settings.jit_compile))


def main(argv: list[str]) -> int:
  options = json.loads(argv[0]) if argv else {}
  seed = options.pop("seed", 0)
  flow = options.pop("flow", {})
  steps = options.pop("steps", None)
  settings = settings_for(options, flow, steps)
  sets = fixed_sets(settings)
  t = settings.training
  run = train_run("ours", settings, make_ours, seed, t.learning_rate, t.batch_size, t.steps,
                  sets)
  oracle_val = sets[2]
  print(json.dumps({
      "seed": seed, "options": options, "flow": settings.flow.as_dict(),
      "gap": None if run["gap"] is None else round(run["gap"], 4),
      "train_s": round(run["train_seconds"], 1),
      "to_gap_0.05": [run["time_to_gap_0.05_s"], run["steps_to_gap_0.05"]],
      "to_gap_0.02": [run["time_to_gap_0.02_s"], run["steps_to_gap_0.02"]],
      "val_gaps": [round(v - oracle_val, 3) for v in run["history"]["val_nll"][:10]]}))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
