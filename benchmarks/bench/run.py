"""The parent process: measure the machine, run each model's worker, write the report."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

from benchmarks.bench import report, workers
from benchmarks.bench.settings import WORKERS, BenchSettings
from tfp_realnvp.experiment import commit_output_dir, prepare_output_dir
from tfp_realnvp.files import atomic_write_json, atomic_write_text

__all__ = ["run_benchmarks", "build_parser", "settings_from_args", "main"]


def run_benchmarks(out_dir, settings: BenchSettings | None = None, *, overwrite: bool = False,
                   progress: bool = True, command: str | None = None) -> dict:
  """Runs every worker, writes ``results.json``, ``results.md`` and the plot into ``out_dir``.

  The folder is assembled beside its destination and moved into place when
  complete.  Returns the ``results.json`` document.
  """
  from benchmarks.bench.measure import machine_flops  # TensorFlow: after argument checks

  settings = settings or BenchSettings.full()
  command = command or "python -m benchmarks.bench " + " ".join(sys.argv[1:])
  staging = prepare_output_dir(out_dir, overwrite)
  try:
    logs = staging / "logs"
    logs.mkdir()
    settings_path = logs / "settings.json"
    atomic_write_json(settings_path, settings.to_json(), indent=1)
    start = time.perf_counter()
    machine_start = machine_flops(settings)
    results = {}
    for worker in WORKERS:
      if progress:
        print(f"[bench] {worker} ...", file=sys.stderr, flush=True)
      results[worker] = workers.run_worker(worker, settings_path, logs / f"{worker}.json",
                                           logs / f"{worker}.log", progress)
    machine_end = machine_flops(settings)
    document = report.assemble(settings, results, machine_start, machine_end, command,
                               time.perf_counter() - start)
    atomic_write_text(staging / "results.json",
                      json.dumps(document, indent=1, allow_nan=False) + "\n")
    atomic_write_text(staging / "results.md", report.write_markdown(document))
    report.plot_nll_vs_wall_time(document, staging / "nll_vs_wall_time.png")
    commit_output_dir(staging, out_dir, overwrite)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return document


def build_parser() -> argparse.ArgumentParser:
  """The options of ``python -m benchmarks.bench``."""
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.bench",
      description="tfp_realnvp.RealNVP against TFP's built-in RealNVP and the book's model.")
  parser.add_argument("--out", type=pathlib.Path, required=True, help="output folder")
  parser.add_argument("--quick", action="store_true",
                      help="tiny data, networks and budgets (seconds): a smoke test of the fields")
  parser.add_argument("--seeds", type=int, default=None,
                      help="number of seeds (default: 5, or 1 with --quick)")
  parser.add_argument("--steps", type=int, default=None,
                      help="training steps of every contestant (default: the package's "
                           "TrainingOptions.steps; for development only)")
  parser.add_argument("--overwrite", action="store_true", help="replace the output folder")
  parser.add_argument("--no-progress", action="store_true", help="print nothing while running")
  return parser


def settings_from_args(args) -> BenchSettings:
  """The settings of parsed arguments; ValueError naming the flag when one is out of range."""
  for flag in ("seeds", "steps"):
    value = getattr(args, flag)
    if value is not None and value < 1:
      raise ValueError(f"--{flag} must be at least 1, got {value}")
  factory = BenchSettings.quick if args.quick else BenchSettings.full
  kwargs = {"steps": args.steps}
  if args.seeds is not None:
    kwargs["seeds"] = args.seeds
  return factory(**kwargs)


def main(argv=None) -> int:
  """``python -m benchmarks.bench``: 0 when the report is written, 1 on bad arguments."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  argv = sys.argv[1:] if argv is None else list(argv)
  args = build_parser().parse_args(argv)
  try:
    settings = settings_from_args(args)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  results = run_benchmarks(args.out, settings, overwrite=args.overwrite,
                           progress=not args.no_progress,
                           command="python -m benchmarks.bench " + " ".join(argv))
  print(f"wrote {args.out} ({results['total_seconds'] / 60:.1f} min)")
  return 0
