"""The parent process: measure the machine, run each model's worker, write the report."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

from benchmarks.bench import report, workers
from benchmarks.bench.settings import WORKERS, BenchSettings
from tfp_realnvp.files import atomic_write_json, atomic_write_text, write_folder

__all__ = ["run_benchmarks", "build_parser", "settings_from_args", "main"]


def run_benchmarks(out_dir, settings: BenchSettings | None = None, *, overwrite: bool = False,
                   progress: bool = True, command: str | None = None) -> dict:
  """Runs every worker, writes ``results.json``, ``results.md`` and the plot into ``out_dir``.

  The folder is written whole (:func:`tfp_realnvp.files.write_folder`: assembled
  beside its destination and renamed into place when complete); an existing
  ``out_dir`` is replaced only with ``overwrite``.  Returns the ``results.json``
  document.
  """
  from benchmarks.bench.measure import machine_flops  # TensorFlow: after argument checks

  if os.path.lexists(out_dir) and not overwrite:
    raise FileExistsError(
        f"output folder {out_dir} already exists; choose another one or pass --overwrite")
  settings = settings or BenchSettings.full()
  command = command or "python -m benchmarks.bench " + " ".join(sys.argv[1:])
  document = {}

  def write_into(folder):
    logs = pathlib.Path(folder) / "logs"
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
    document.update(report.assemble(settings, results, machine_start, machine_end, command,
                                    time.perf_counter() - start))
    atomic_write_text(logs.parent / "results.json",
                      json.dumps(document, indent=1, allow_nan=False) + "\n")
    atomic_write_text(logs.parent / "results.md", report.write_markdown(document))
    report.plot_nll_vs_wall_time(document, logs.parent / "nll_vs_wall_time.png")

  pathlib.Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
  write_folder(out_dir, write_into)
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
