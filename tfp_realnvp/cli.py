"""Command line: ``tfp-realnvp train`` (the main job).

The flow and training flags are derived from the fields of :class:`~tfp_realnvp.options.FlowOptions`
and :class:`~tfp_realnvp.options.TrainingOptions` (``--num-couplings`` for ``num_couplings``,
with its default, choices and help); ``--couplings`` and ``--hidden`` remain as aliases.
Parsing (and ``--help``) does not import TensorFlow; a run imports it with its start-up
messages silenced, so the first lines on screen are ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import sys
import tempfile

from tfp_realnvp.options import FlowOptions, TrainingOptions

__all__ = ["main", "build_parser"]

_ALIASES = {"num_couplings": ["--couplings"], "hidden_units": ["--hidden"]}


def _number(kind, optional: bool):
  def parse(text: str):
    if optional and text.lower() == "none":
      return None
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(
          f"expected {'an integer' if kind is int else 'a number'}"
          f"{' or none' if optional else ''}, got {text!r}") from None
    if not math.isfinite(value):
      raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value
  return parse


def _widths(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(part) for part in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated positive integers such as 128,128, got {text!r}") from None


def _add_options(group, options_class) -> None:
  """One flag per field of ``options_class`` whose metadata says ``cli``."""
  for field in dataclasses.fields(options_class):
    if not field.metadata.get("cli", True):
      continue
    flags = [f"--{field.name.replace('_', '-')}", *_ALIASES.get(field.name, [])]
    kwargs = dict(default=field.default, help=field.metadata["help"], dest=field.name)
    if isinstance(field.default, bool):
      kwargs["action"] = argparse.BooleanOptionalAction
    elif isinstance(field.default, tuple):
      kwargs.update(type=_widths, metavar="W1,W2,...")
    elif field.metadata.get("choices"):
      kwargs["choices"] = field.metadata["choices"]
    elif isinstance(field.default, (int, float)) or "None" in str(field.type):
      kind = int if isinstance(field.default, int) else float
      kwargs["type"] = _number(kind, "None" in str(field.type))
    group.add_argument(*flags, **kwargs)


def build_parser() -> argparse.ArgumentParser:
  """The ``tfp-realnvp`` argument parser (imports no TensorFlow)."""
  from tfp_realnvp.datasets import DATASETS  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(
      prog="tfp-realnvp",
      description="RealNVP normalizing flows as TensorFlow Probability distributions.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  train = sub.add_parser(
      "train", help="train a flow and write figures, metrics and weights",
      description="Train RealNVP on a dataset (default: two moons) and write loss_curve.png, "
                  "four_panels.png, density.png, metrics.json and model/ into an output folder.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  train.set_defaults(command_parser=train)
  data = train.add_argument_group("data")
  data.add_argument("--dataset", default="moons", choices=sorted(DATASETS),
                    help="dataset to train on")
  data.add_argument("--n-train", type=_number(int, False), default=30000,
                    help="number of training points (a fraction is held out for validation)")
  data.add_argument("--n-test", type=_number(int, False), default=10000,
                    help="number of test points, drawn with a different seed")
  data.add_argument("--noise", type=_number(float, False), default=None,
                    help="noise level of the dataset (default: the dataset's own)")
  data.add_argument("--validation-fraction", type=_number(float, False), default=0.1,
                    help="fraction of the training points held out for validation")
  data.add_argument("--seed", type=_number(int, False), default=0,
                    help="seed of the data, the initialization and the shuffling")
  _add_options(train.add_argument_group("flow"), FlowOptions)
  _add_options(train.add_argument_group("training"), TrainingOptions)
  run = train.add_argument_group("run")
  run.add_argument("--out", type=pathlib.Path, default=None,
                   help="output folder (default: runs/DATASET-TIMESTAMP)")
  run.add_argument("--overwrite", action="store_true",
                   help="replace the output folder if it is an earlier run's")
  run.add_argument("--checkpoint-every", type=_number(int, False), default=None, metavar="STEPS",
                   help="checkpoint every so many steps (rounded to whole epochs) so that an "
                        "interrupted run can be resumed")
  run.add_argument("--resume", type=pathlib.Path, default=None, metavar="DIR",
                   help="continue the interrupted run whose output folder is DIR, with its own "
                        "settings")
  run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  return parser


def _config(args):
  from tfp_realnvp.experiment import TrainConfig  # pylint: disable=import-outside-toplevel

  def pick(options_class):
    return options_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(options_class)
                            if hasattr(args, f.name)})

  data = ("dataset", "n_train", "n_test", "noise", "validation_fraction", "seed")
  return TrainConfig(**{name: getattr(args, name) for name in data}, flow=pick(FlowOptions),
                     training=pick(TrainingOptions)).resolved()


def _import_tensorflow_quietly() -> None:
  """Imports TensorFlow with its start-up messages (oneDNN, CUDA probing) silenced.

  ``TF_CPP_MIN_LOG_LEVEL`` (unless the user set it) hides its C++ log; what it prints
  before logging starts goes to a temporary file, shown only if the import fails.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if "tensorflow" in sys.modules:
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except BaseException:
      os.dup2(saved, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode(errors="replace"))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def _train(args, parser) -> int:
  from tfp_realnvp.experiment import train_experiment  # pylint: disable=import-outside-toplevel

  resume = args.resume is not None
  if resume:
    if args.out is not None and args.out != args.resume:
      parser.error("--resume DIR continues into DIR; do not give a different --out")
    config, out = None, args.resume
  else:
    try:
      config = _config(args)
    except (TypeError, ValueError) as e:
      parser.error(str(e))
    out = args.out or pathlib.Path("runs") / (
        f"{args.dataset}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    if args.checkpoint_every is not None:
      print(f"checkpointing every {args.checkpoint_every} steps; if interrupted, continue with "
            f"tfp-realnvp train --resume {out}", file=sys.stderr)
  # A resumed run keeps its own folder: --overwrite applies to new runs only.
  metrics = train_experiment(config, out, progress=not args.no_progress,
                             overwrite=args.overwrite and not resume,
                             checkpoint_every=args.checkpoint_every, resume=resume)
  keys = ["test_nll", "oracle_nll", "gap", "steps", "resumed_from_step", "wall_time_s",
          "parameters"]
  if metrics.get("test_bits_per_dim") is not None:
    keys.insert(1, "test_bits_per_dim")
  print(json.dumps({k: metrics[k] for k in keys}, indent=2))
  print(f"wrote {out}")
  return 0


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    _import_tensorflow_quietly()
    return _train(args, args.command_parser)
  except KeyboardInterrupt:
    print("tfp-realnvp: interrupted; continue with --resume if it was checkpointing",
          file=sys.stderr)
    return 130
  except Exception as e:  # one line, not a TensorFlow traceback
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"tfp-realnvp {args.command}: error: {type(e).__name__}: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
