"""The parent process: write the data, run every phase, write the report.

``python -m benchmarks.peers --out DIR [--quick] [--seeds N] [--own-seeds N]
[--steps N] [--train-threads 1] [--contestants A,B] [--overwrite]`` from the repository root, with
the main virtual environment (the peers' run in ``.venv-flowjax`` and
``.venv-zuko``, see ``make bench-peers-env``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

from benchmarks.peers import phases, report, summary
from benchmarks.peers.data import write_data
from benchmarks.peers.processes import MissingEnvironment, log, missing_environments
from benchmarks.peers.settings import CONTESTANTS, LIBRARIES, PeerSettings
from tfp_realnvp.files import atomic_write_text, write_folder

__all__ = ["run_peers", "build_parser", "settings_from_args", "main"]


def run_peers(out_dir, settings: PeerSettings, contestants=tuple(CONTESTANTS), *,
              overwrite: bool = False, command: str = "python -m benchmarks.peers") -> dict:
  """Runs every phase for ``contestants``; writes ``results.json``, ``results.md`` and
  the plot into ``out_dir`` (assembled beside it and moved into place when complete).

  Order: the one-thread and default-thread timing windows (throughput in the
  latter), the matched training runs (each process's first request a start-up
  sample), more start-up samples, each library's own recipe.  Returns the
  ``results.json`` document.
  """
  out_dir = pathlib.Path(out_dir)
  if out_dir.exists() and not overwrite:
    raise FileExistsError(f"output folder {out_dir} exists; choose another or pass --overwrite")
  libraries = list(dict.fromkeys(CONTESTANTS[n][0] for n in contestants))
  missing = missing_environments(libraries)
  if missing:
    raise MissingEnvironment(f"missing virtual environments {missing}: run `make bench-peers-env`")
  document = {}

  def write_into(folder):
    start = time.perf_counter()
    logs = pathlib.Path(folder) / "logs"
    logs.mkdir()
    seconds = {}

    def phase(name, fn, *args, **kwargs):
      start_phase = time.perf_counter()
      result = fn(*args, **kwargs)
      seconds[name] = time.perf_counter() - start_phase
      return result

    with tempfile.TemporaryDirectory(prefix="peers-data-") as data_dir:
      paths, oracle = write_data(settings, data_dir)
      first = paths[settings.seeds[0]]
      windows = {threads: phase(f"timing_{threads}_threads", phases.interleaved, settings,
                                contestants, first, logs, threads,
                                throughput=threads == "default")
                 for threads in ("1", "default")}
      trained = {name: phase(f"training_{name}", phases.training, settings, name, paths, logs)
                 for name in contestants}
      more = phase("startup", phases.startup, settings, contestants, first, logs,
                   settings.startup_repeats - 1)
      own = {lib: phase(f"own_recipe_{lib}", phases.own_recipe, settings, lib, paths, logs)
             for lib in libraries}
    startup = {name: [trained[name]["startup"]] + more[name] for name in contestants}
    snippets = {lib: (phases.SNIPPETS / LIBRARIES[lib]["snippet"]).read_text()
                for lib in libraries}
    document.update(report.assemble(
        settings, command=command, total_seconds=time.perf_counter() - start, oracle=oracle,
        trained=trained, windows=windows, startup=startup, own=own, phase_seconds=seconds,
        lines={lib: summary.user_lines(text) for lib, text in snippets.items()}))
    folder = pathlib.Path(folder)
    atomic_write_text(folder / "results.json",
                      json.dumps(document, indent=1, allow_nan=False) + "\n")
    atomic_write_text(folder / "results.md", report.write_markdown(document))
    report.plot_nll_vs_wall_time(document, folder / "nll_vs_wall_time.png")

  out_dir.parent.mkdir(parents=True, exist_ok=True)
  write_folder(out_dir, write_into)
  return document


def build_parser() -> argparse.ArgumentParser:
  """The options of ``python -m benchmarks.peers``."""
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.peers",
      description="tfp_realnvp.RealNVP against FlowJAX and zuko on two moons.")
  parser.add_argument("--out", type=pathlib.Path, required=True, help="output folder")
  parser.add_argument("--quick", action="store_true",
                      help="tiny data, networks and budgets: a smoke test of every field")
  parser.add_argument("--seeds", type=int, default=None,
                      help="seeds of the matched runs (default: 5, or 1 with --quick)")
  parser.add_argument("--own-seeds", type=int, default=None,
                      help="seeds of each library's own recipe, the first of --seeds "
                           "(default: 2, or 1 with --quick)")
  parser.add_argument("--steps", type=int, default=None,
                      help="training steps of the matched runs (default: the package's "
                           "TrainingOptions.steps, or 30 with --quick)")
  parser.add_argument("--train-threads", choices=("default", "1"), default="default",
                      help="threads of the training runs: each library's default, or one "
                           "(pinned to CPU 0) on a machine that is not idle")
  parser.add_argument("--contestants", default=",".join(CONTESTANTS),
                      help=f"comma-separated subset of {', '.join(CONTESTANTS)} (default: all)")
  parser.add_argument("--overwrite", action="store_true", help="replace the output folder")
  return parser


def settings_from_args(args) -> tuple[PeerSettings, list]:
  """The settings and contestants of parsed arguments; ValueError naming a bad flag."""
  for flag in ("seeds", "own_seeds", "steps"):
    value = getattr(args, flag)
    if value is not None and value < 1:
      raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
  contestants = [c.strip() for c in args.contestants.split(",") if c.strip()]
  unknown = [c for c in contestants if c not in CONTESTANTS]
  if unknown or not contestants:
    raise ValueError(f"--contestants: unknown {unknown}; choose from {list(CONTESTANTS)}")
  kwargs = {k: getattr(args, k) for k in ("seeds", "own_seeds") if getattr(args, k) is not None}
  factory = PeerSettings.quick if args.quick else PeerSettings.full
  settings = dataclasses.replace(factory(steps=args.steps, **kwargs),
                                 train_threads=args.train_threads)
  return settings, contestants


def main(argv=None) -> int:
  """``python -m benchmarks.peers``: 0 when the report is written, 1 on bad arguments."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  argv = sys.argv[1:] if argv is None else list(argv)
  args = build_parser().parse_args(argv)
  try:
    settings, contestants = settings_from_args(args)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  document = run_peers(args.out, settings, contestants, overwrite=args.overwrite,
                       command="python -m benchmarks.peers " + " ".join(argv))
  log(f"wrote {args.out} ({document['total_seconds'] / 60:.1f} min)")
  return 0
