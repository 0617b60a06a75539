"""Summaries over seeds (no TensorFlow): median / worst, time to a gap, a run's quality."""

from __future__ import annotations

import math

from benchmarks.bench.settings import GAP_THRESHOLDS

__all__ = ["finite", "median_worst", "time_to_gap", "quality"]


def finite(value) -> float | None:
  """A JSON-safe float: None for NaN/inf/None."""
  if value is None:
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def median_worst(values, higher_is_worse: bool = True) -> dict:
  """Median and worst of per-seed values; None counts as worst ("never", diverged)."""
  bad = math.inf if higher_is_worse else -math.inf
  array = [bad if v is None else float(v) for v in values]
  if not array:
    return {"median": None, "worst": None}
  ordered = sorted(array, reverse=not higher_is_worse)
  mid = len(ordered) // 2
  median = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
  return {"median": finite(median), "worst": finite(ordered[-1])}


def time_to_gap(history: dict, oracle_val_nll: float, threshold: float):
  """(seconds, steps) when the validation NLL first came within ``threshold``; (None, None)."""
  for step, val, wall in zip(history["step"], history["val_nll"], history["wall_time"]):
    if val is not None and math.isfinite(val) and val - oracle_val_nll <= threshold:
      return float(wall), int(step)
  return None, None


def quality(runs: list) -> dict:
  """Median / worst over the runs (seeds) of test NLL, gap and times to each gap."""
  out = {"seeds": [r["seed"] for r in runs],
         "test_nll": median_worst([r["test_nll"] for r in runs]),
         "gap": median_worst([r["gap"] for r in runs]),
         "diverged_runs": sum(r["diverged"] for r in runs),
         "runs_with_nonfinite_steps": sum(r["nonfinite_steps"] > 0 or r["diverged"]
                                          for r in runs)}
  for threshold in GAP_THRESHOLDS:
    out[f"time_to_gap_{threshold}_s"] = median_worst([r[f"time_to_gap_{threshold}_s"]
                                                      for r in runs])
    out[f"steps_to_gap_{threshold}"] = median_worst([r[f"steps_to_gap_{threshold}"]
                                                     for r in runs])
  return out
