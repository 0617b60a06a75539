"""The default `tfp-realnvp train` configuration over seeds and noise levels.

Runs exactly what `tfp-realnvp train --seed S --noise N` runs, for 5 seeds and
the noise levels 0.05 and 0.1, and writes `robustness.json` and
`robustness.md` (gap to the oracle per run, median and worst per noise level).

    python benchmarks/robustness.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tfp_realnvp.experiment import TrainConfig, train_experiment  # noqa: E402
from tfp_realnvp.files import atomic_write_json, atomic_write_text  # noqa: E402


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, required=True)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
  parser.add_argument("--noises", type=float, nargs="+", default=[0.05, 0.1])
  parser.add_argument("--steps", type=int, default=None, help="override the default budget")
  args = parser.parse_args(argv)
  args.out.mkdir(parents=True, exist_ok=True)
  runs = []
  with tempfile.TemporaryDirectory() as scratch:
    for noise in args.noises:
      for seed in args.seeds:
        config = TrainConfig(noise=noise, seed=seed)
        if args.steps:
          config = dataclasses.replace(
              config, training=dataclasses.replace(config.training, steps=args.steps))
        metrics = train_experiment(config, pathlib.Path(scratch) / f"n{noise}-s{seed}",
                                   progress=False)
        runs.append({k: metrics[k] for k in ("test_nll", "oracle_nll", "gap", "steps",
                                             "wall_time_s", "parameters")}
                    | {"noise": noise, "seed": seed})
        print(json.dumps(runs[-1]), flush=True)
  summary = {}
  for noise in args.noises:
    gaps = [r["gap"] for r in runs if r["noise"] == noise]
    times = [r["wall_time_s"] for r in runs if r["noise"] == noise]
    summary[str(noise)] = {"median_gap": statistics.median(gaps), "worst_gap": max(gaps),
                           "median_train_time_s": statistics.median(times)}
  result = {"config": TrainConfig().to_json(),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
            "runs": runs, "summary": summary}
  atomic_write_json(args.out / "robustness.json", result)
  lines = ["| noise | seed | test NLL | oracle NLL | gap (nats) | train time (s) |",
           "|---|---|---|---|---|---|"]
  for r in runs:
    lines.append(f"| {r['noise']} | {r['seed']} | {r['test_nll']:.4f} | {r['oracle_nll']:.4f} | "
                 f"{r['gap']:.4f} | {r['wall_time_s']:.0f} |")
  lines += ["", "| noise | median gap | worst gap | median train time (s) |", "|---|---|---|---|"]
  for noise, s in summary.items():
    lines.append(f"| {noise} | {s['median_gap']:.4f} | {s['worst_gap']:.4f} | "
                 f"{s['median_train_time_s']:.0f} |")
  atomic_write_text(args.out / "robustness.md", "\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
