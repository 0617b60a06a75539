"""One process per model: the worker side (``worker_main``) and the parent's launcher.

Each model is trained in its own Python process, so its peak resident memory
is its own and XLA caches are not shared (both built-in contestants share the
``builtin`` process).  The parent runs
``python -m benchmarks.bench.workers --worker NAME --settings S --result R``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

from benchmarks.bench.settings import WORKERS, BenchSettings, fit_defaults

__all__ = ["worker_main", "run_worker", "rss_mb"]

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the repository: benchmarks/ and tfp_realnvp/


def rss_mb() -> float:
  """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss in KiB)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


class _Phases:
  """Seconds spent in each phase of a worker, for planning budgets."""

  def __init__(self):
    self.seconds = {}

  def __call__(self, phase, fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
    return result


def worker_main(worker: str, settings: BenchSettings, result_path: pathlib.Path) -> None:
  """Runs one model's worker (``ours``, ``builtin`` or ``book``) and writes its JSON."""
  import warnings
  warnings.filterwarnings("ignore")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf

  from benchmarks.bench import contestants, measure, stats
  from tfp_realnvp.files import atomic_write_json

  tf.get_logger().setLevel("ERROR")
  # After importing TensorFlow, TFP and tfp_realnvp, as when the harness was in the package.
  result = {"worker": worker, "rss_after_import_mb": rss_mb()}
  phases = _Phases()
  sets = contestants.fixed_sets(settings)
  result["oracle_val_nll"], result["oracle_test_nll"] = sets[2], sets[3]
  make, batch = {"ours": (contestants.make_ours, settings.training.batch_size),
                 "builtin": (contestants.make_builtin, settings.training.batch_size),
                 "book": (contestants.make_book, settings.book_batch_size)}[worker]
  result["contestants"] = {}

  def train(contestant, lr, seed):
    run = phases(f"train_{contestant}", measure.train_run, contestant, settings, make, seed,
                 lr, batch, settings.training.steps, sets)
    # Peak memory of the process after its first training run: the TF runtime, the data,
    # one model trained with its compiled step (later runs and phases add their graphs).
    result.setdefault("rss_after_first_run_mb", rss_mb())
    return run

  def contestant(name, lr, runs):
    result["contestants"][name] = {"learning_rate": lr, "batch_size": batch, "runs": runs,
                                   "quality": stats.quality(runs)}

  if worker == "builtin":
    ours_lr = settings.training.learning_rate
    sweep, runs_by_lr = measure.sweep(settings, lambda lr, seed: train("tfp_builtin", lr, seed))
    contestant("tfp_builtin_our_lr", ours_lr, runs_by_lr[ours_lr])
    best_lr = sweep["best_stable_learning_rate"]
    contestant("tfp_builtin_best_lr", best_lr, runs_by_lr[best_lr])
    if best_lr == ours_lr:  # the same runs, drawn and counted once
      result["contestants"]["tfp_builtin_best_lr"]["same_runs_as"] = "tfp_builtin_our_lr"
    result["sweep"] = sweep
  else:
    lr = settings.training.learning_rate if worker == "ours" else settings.book_learning_rate
    contestant(worker, lr, [train(worker, lr, seed) for seed in settings.seeds])
  result["model"] = measure.model_figures(worker, settings, make, batch, phases)
  result["phase_seconds"] = phases.seconds
  result["fit_defaults"] = fit_defaults()
  result["peak_rss_mb"] = rss_mb()
  atomic_write_json(result_path, result, indent=1)


def run_worker(worker: str, settings_path: pathlib.Path, result_path: pathlib.Path,
               log_path: pathlib.Path, progress: bool) -> dict:
  """Runs ``worker`` in a fresh Python process, its output into ``log_path``; its result."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  command = [sys.executable, "-m", "benchmarks.bench.workers", "--worker", worker,
             "--settings", str(settings_path), "--result", str(result_path)]
  start = time.perf_counter()
  with open(log_path, "w") as log:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, cwd=ROOT)
    for line in process.stdout:
      log.write(line)
      if progress and line.startswith("[bench"):
        print(line, end="", file=sys.stderr, flush=True)
    code = process.wait()
  if code != 0 or not result_path.exists():
    tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
    raise RuntimeError(f"benchmark worker {worker!r} failed (exit {code}); "
                       f"log {log_path}:\n{tail}")
  result = json.loads(result_path.read_text())
  result["wall_seconds"] = time.perf_counter() - start
  return result


def _main(argv) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.bench.workers")
  parser.add_argument("--worker", required=True, choices=tuple(WORKERS))
  parser.add_argument("--settings", type=pathlib.Path, required=True)
  parser.add_argument("--result", type=pathlib.Path, required=True)
  args = parser.parse_args(argv)
  settings = BenchSettings.from_json(json.loads(args.settings.read_text()))
  worker_main(args.worker, settings, args.result)
  return 0


if __name__ == "__main__":
  sys.exit(_main(sys.argv[1:]))
