"""Command line: ``tfp-realnvp train`` (the main job)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
  return value


def _positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
  if not value > 0 or value == float("inf"):
    raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
  return value


def _fraction(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
  if not 0.0 < value < 1.0:
    raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
  return value


def _widths(text: str) -> tuple[int, ...]:
  try:
    widths = tuple(int(part) for part in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated positive integers such as 128,128, got {text!r}") from None
  if not widths or min(widths) < 1:
    raise argparse.ArgumentTypeError(f"expected positive widths, got {text!r}")
  return widths


def _bound(text: str) -> float | None:
  if text.lower() == "none":
    return None
  return _positive_float(text)


def _weight_decay(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
  if not 0.0 <= value < 1.0:
    raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
  return value


def _ema_decay(text: str) -> float | None:
  if text.lower() == "none":
    return None
  return _fraction(text)


def build_parser() -> argparse.ArgumentParser:
  from tfp_realnvp.experiment import TrainConfig
  from tfp_realnvp.datasets import DATASETS

  defaults = TrainConfig()
  parser = argparse.ArgumentParser(
      prog="tfp-realnvp",
      description="RealNVP normalizing flows as TensorFlow Probability distributions.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

  train = sub.add_parser(
      "train", help="train a flow and write figures, metrics and weights",
      description="Train RealNVP on a dataset (default: two moons) and write loss_curve.png, "
                  "four_panels.png, density.png, metrics.json and model/ into an output folder.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  train.add_argument("--dataset", default=defaults.dataset, choices=sorted(DATASETS),
                     help="dataset to train on")
  train.add_argument("--n-train", type=_positive_int, default=defaults.n_train,
                     help="number of training points (10%% of them are held out for validation)")
  train.add_argument("--n-test", type=_positive_int, default=defaults.n_test,
                     help="number of test points, drawn with a different seed")
  train.add_argument("--noise", type=_positive_float, default=None,
                     help="noise level of the dataset (default: the dataset's own, 0.05 for moons)")
  train.add_argument("--couplings", type=_positive_int, default=defaults.num_couplings,
                     help="number of affine coupling layers")
  train.add_argument("--hidden", type=_widths, default=defaults.hidden_units,
                     help="hidden widths of each coupling network, comma-separated")
  train.add_argument("--coupling", default=defaults.coupling, choices=("affine", "additive", "spline"),
                     help="coupling type: affine (RealNVP), additive (NICE) or a rational-quadratic spline")
  train.add_argument("--permutation", default=defaults.permutation,
                     choices=("reverse", "random", "lu"),
                     help="mixing between couplings: reverse order, a fixed random permutation, "
                          "or a learned LU-decomposed linear map")
  train.add_argument("--actnorm", action="store_true",
                     help="add data-initialized activation normalization between couplings")
  train.add_argument("--log-scale-bound", type=_bound, default=defaults.log_scale_bound,
                     help="soft bound on each coupling's log-scale ('none': unbounded)")
  train.add_argument("--steps", type=_positive_int, default=defaults.steps,
                     help="optimizer steps")
  train.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                     help="points per step")
  train.add_argument("--learning-rate", type=_positive_float, default=defaults.learning_rate,
                     help="peak learning rate (Adam, warm-up then cosine decay)")
  train.add_argument("--weight-decay", type=_weight_decay, default=defaults.weight_decay,
                     help="decoupled weight decay (AdamW) per unit learning rate; 0: plain Adam")
  train.add_argument("--ema-decay", type=_ema_decay, default=defaults.ema_decay,
                     help="decay of the moving average of the weights that is validated "
                          "and kept; 'none' keeps the raw weights")
  train.add_argument("--validation-fraction", type=_fraction,
                     default=defaults.validation_fraction,
                     help="fraction of the training points held out for validation")
  train.add_argument("--seed", type=int, default=defaults.seed,
                     help="seed of the data, the initialization and the shuffling")
  train.add_argument("--out", type=pathlib.Path, default=None,
                     help="output folder (default: runs/DATASET-TIMESTAMP)")
  train.add_argument("--overwrite", action="store_true",
                     help="replace the output folder if it exists")
  train.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="STEPS",
                     help="checkpoint every so many steps (rounded to whole epochs) so that an "
                          "interrupted run can be resumed")
  train.add_argument("--resume", type=pathlib.Path, default=None, metavar="DIR",
                     help="continue the interrupted run whose output folder is DIR, from its "
                          "last checkpoint, with its own settings")
  train.add_argument("--no-progress", action="store_true", help="hide the progress bar")

  return parser


def _train(args) -> int:
  from tfp_realnvp.experiment import TrainConfig, train_experiment

  if args.resume is not None:
    if args.out is not None and args.out != args.resume:
      raise ValueError("--resume DIR continues into DIR; do not give a different --out")
    metrics = train_experiment(None, args.resume, progress=not args.no_progress, resume=True,
                               checkpoint_every=args.checkpoint_every)
    _print_summary(metrics, args.resume)
    return 0

  config = TrainConfig(
      dataset=args.dataset, n_train=args.n_train, n_test=args.n_test, noise=args.noise,
      num_couplings=args.couplings, hidden_units=args.hidden, coupling=args.coupling,
      permutation=args.permutation, actnorm=args.actnorm,
      log_scale_bound=args.log_scale_bound, steps=args.steps, batch_size=args.batch_size,
      learning_rate=args.learning_rate, weight_decay=args.weight_decay,
      ema_decay=args.ema_decay, validation_fraction=args.validation_fraction,
      seed=args.seed)
  out = args.out
  if out is None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = pathlib.Path("runs") / f"{args.dataset}-{stamp}"
  if args.checkpoint_every is not None:
    print(f"checkpointing every {args.checkpoint_every} steps; if interrupted, continue with "
          f"tfp-realnvp train --resume {out}", file=sys.stderr)
  metrics = train_experiment(config, out, progress=not args.no_progress,
                             overwrite=args.overwrite, checkpoint_every=args.checkpoint_every)
  _print_summary(metrics, out)
  return 0


def _print_summary(metrics: dict, out) -> None:
  keys = ["test_nll", "oracle_nll", "gap", "steps", "resumed_from_step", "wall_time_s",
          "parameters"]
  if metrics.get("test_bits_per_dim") is not None:
    keys.insert(1, "test_bits_per_dim")
  summary = {k: metrics[k] for k in keys}
  print(json.dumps(summary, indent=2))
  print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  try:
    if args.command == "train":
      return _train(args)
  except KeyboardInterrupt:
    print("tfp-realnvp: interrupted; no output folder was written", file=sys.stderr)
    return 130
  except Exception as e:  # one line, not a TensorFlow traceback
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"tfp-realnvp {args.command}: error: {type(e).__name__}: {message}", file=sys.stderr)
    return 1
  parser.error(f"unknown command {args.command!r}")
  return 2


if __name__ == "__main__":
  sys.exit(main())
