"""Statistics of the raw figures (no TensorFlow): gaps to the oracle, quality over
seeds, step-time and throughput ratios to ours, parameter counts, user code size."""

from __future__ import annotations

import io
import math
import statistics
import tokenize

from benchmarks.bench.stats import median_worst, time_to_gap
from benchmarks.peers.settings import CONTESTANTS, GAP_THRESHOLDS, REFERENCE

__all__ = ["PARAMETER_TOLERANCE", "reference", "with_gaps", "quality", "startup", "step_times",
           "throughput_ratios", "parameter_match", "user_lines", "targets"]

PARAMETER_TOLERANCE = 0.05


def reference(contestant: str) -> str:
  """The contestant ``contestant`` is compared with: ours with the same coupling."""
  return REFERENCE[CONTESTANTS[contestant][1]]


def with_gaps(run: dict, oracle_val: float, oracle_test: float) -> dict:
  """``run`` with its test gap and the time and steps until the validation gap was
  first within each of ``GAP_THRESHOLDS`` (None: never)."""
  run = dict(run, gap=None if run["test_nll"] is None else run["test_nll"] - oracle_test)
  for threshold in GAP_THRESHOLDS:
    seconds, steps = time_to_gap(run["history"], oracle_val, threshold)
    run[f"time_to_gap_{threshold}_s"], run[f"steps_to_gap_{threshold}"] = seconds, steps
  return run


def quality(runs: list) -> dict:
  """Median / worst over seeds of the test NLL, the gap and the times and steps to each gap."""
  out = {"seeds": [r["seed"] for r in runs],
         "test_nll": median_worst([r["test_nll"] for r in runs]),
         "gap": median_worst([r["gap"] for r in runs]),
         "train_seconds": median_worst([r["train_seconds"] for r in runs]),
         "diverged_runs": sum(bool(r["diverged"]) for r in runs)}
  for threshold in GAP_THRESHOLDS:
    for key in (f"time_to_gap_{threshold}_s", f"steps_to_gap_{threshold}"):
      out[key] = median_worst([r[key] for r in runs])
  return out


def startup(samples: list) -> dict:
  """The median of each stage of the start-up samples (seconds from the process's start)."""
  return {"median": {stage: statistics.median(s[stage] for s in samples) for stage in samples[0]},
          "samples": samples}


def step_times(window: dict) -> dict:
  """Per contestant: median ms per step over the rounds, and its time over ours' (the
  reference with the same coupling) in the same round: median, min and max over rounds.

  A ratio above 1: ours is slower per step.
  """
  rounds, out = window["rounds"], {}
  for name in rounds[0]:
    ms = [1e3 * r[name] for r in rounds]
    entry = {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}
    ref = reference(name)
    if ref != name and ref in rounds[0]:
      ratios = [r[ref] / r[name] for r in rounds]
      entry["ours_over_peer"] = {"median": statistics.median(ratios), "min": min(ratios),
                                 "max": max(ratios)}
    out[name] = entry
  return out


def throughput_ratios(throughput: dict) -> dict:
  """Per contestant: points per second of ``log_prob`` and ``sample``, and ours'
  rate over the peer's (above 1: ours is faster); ours' ``tf.function`` graphs."""
  out = {}
  for name, reply in throughput.items():
    entry = {"points": reply["points"], **reply["rates"]}
    ref = reference(name)
    if ref != name and ref in throughput:
      entry["ours_over_peer"] = {k: throughput[ref]["rates"][k] / reply["rates"][k]
                                 for k in ("log_prob", "sample")}
    out[name] = entry
  return out


def parameter_match(parameters: dict) -> dict:
  """Per contestant: its trainable parameters, relative to ours (same coupling), and
  whether that is within ``PARAMETER_TOLERANCE``."""
  out = {}
  for name, count in parameters.items():
    ref = parameters.get(reference(name))
    relative = None if ref is None else count / ref - 1.0
    out[name] = {"parameters": count, "relative_to_ours": relative,
                 "within_tolerance": relative is not None
                 and abs(relative) <= PARAMETER_TOLERANCE}
  return out


def user_lines(source: str) -> int:
  """Lines of user code: not blank, not only a comment, not the module docstring, and
  not the benchmark's plumbing (a line ending in ``# harness``)."""
  counted, skipped = set(), set()
  first_statement = True
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                      tokenize.ENDMARKER):
      continue
    if token.type == tokenize.COMMENT:
      if token.string.strip() == "# harness":
        skipped.add(token.start[0])
      continue
    if first_statement and token.type == tokenize.STRING:  # the module docstring
      skipped.update(range(token.start[0], token.end[0] + 1))
    first_statement = False
    counted.update(range(token.start[0], token.end[0] + 1))
  return len(counted - skipped)


def _or_inf(value) -> float:
  return math.inf if value is None else value


def targets(contestants: dict, step_time: dict, startup: dict) -> dict:
  """The issue's targets, met or missed, for the contestants that were run.

  Per coupling: ours reaches a validation gap of 0.01 no later (median wall
  time) than every peer, and has the best median test gap; ours is not slower
  per step than FlowJAX (median ratio over rounds, each thread setting).  Ours'
  start-up to its first finished step is at most 1.5 times the fastest peer's.
  """
  out = {}
  for coupling, ours in REFERENCE.items():
    peers = [n for n in contestants if CONTESTANTS[n][1] == coupling and n != ours]
    if ours not in contestants or not peers:
      continue
    last = GAP_THRESHOLDS[-1]
    for key, label in ((f"time_to_gap_{last}_s", "first_to_gap"), ("gap", "best_gap")):
      values = {n: contestants[n]["quality"][key]["median"] for n in [ours] + peers}
      out[f"{label}_{coupling}"] = {
          "medians": values,
          "met": values[ours] is not None
          and all(values[ours] <= _or_inf(values[n]) for n in peers)}
    flowjax = f"flowjax_{coupling}"
    for threads, times in step_time.items():
      ratio = times.get(flowjax, {}).get("ours_over_peer")
      if ratio is not None:
        out[f"step_not_slower_than_flowjax_{coupling}_{threads}_threads"] = {
            "ours_over_flowjax": ratio["median"], "met": ratio["median"] <= 1.0}
  peer_startups = [s["median"]["first_step"] for n, s in startup.items()
                   if CONTESTANTS[n][0] != "ours"]
  for ours in REFERENCE.values():
    if ours in startup and peer_startups:
      ratio = startup[ours]["median"]["first_step"] / min(peer_startups)
      out[f"startup_{ours}_within_1.5x_fastest_peer"] = {"ratio": ratio, "met": ratio <= 1.5}
  return out
