"""The main job: train a flow on a dataset and write figures, metrics, weights.

:func:`train_experiment` is what ``tfp-realnvp train`` runs.  The output folder
is assembled under a temporary name beside its destination and renamed into
place only when complete, so it is never left half-written; an existing folder
is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import shutil
import time

import numpy as np
import tensorflow as tf
import tf_keras

from tfp_realnvp import datasets as datasets_lib
from tfp_realnvp import plots
from tfp_realnvp.distribution import RealNVP
from tfp_realnvp.training import _atomic_write_text, fit

__all__ = ["TrainConfig", "train_experiment", "prepare_output_dir", "commit_output_dir",
           "staging_dir", "load_run_config"]


@dataclasses.dataclass
class TrainConfig:
  """Settings of the main job; the defaults are the tuned configuration.

  Tuned on two moons over 5 seeds (see the README): 16 couplings gave a
  median gap of 0.0074 nats against 0.0091 with 12; with the weight average
  (``ema_decay``) the flow trains stably at twice ``fit``'s generic peak rate
  of 1e-3.  Weight decay 0.01 helped one seed and hurt two, so it is off.
  """

  dataset: str = "moons"
  n_train: int = 30000
  n_test: int = 10000
  noise: float | None = None  # None: the dataset's default noise
  num_couplings: int = 16
  hidden_units: tuple[int, ...] = (128, 128)
  coupling: str = "affine"
  permutation: str = "reverse"
  actnorm: bool = False
  log_scale_bound: float | None = 3.0
  steps: int = 8000
  batch_size: int = 512
  learning_rate: float = 2e-3
  weight_decay: float = 0.0
  ema_decay: float | None = 0.99
  validation_fraction: float = 0.1
  seed: int = 0
  test_seed: int | None = None  # None: seed + 1000, a set disjoint from training

  def resolved(self) -> "TrainConfig":
    dataset = datasets_lib.get_dataset(self.dataset)
    return dataclasses.replace(
        self,
        noise=dataset.default_noise if self.noise is None else float(self.noise),
        hidden_units=tuple(int(h) for h in self.hidden_units),
        test_seed=self.seed + 1000 if self.test_seed is None else self.test_seed)


def staging_dir(out_dir) -> pathlib.Path:
  """Where a run into ``out_dir`` is assembled (and checkpointed) until complete."""
  out_dir = pathlib.Path(out_dir)
  return out_dir.parent / f".{out_dir.name}.partial"


def prepare_output_dir(out_dir, overwrite: bool = False, resume: bool = False) -> pathlib.Path:
  """Checks ``out_dir`` may be written and returns its staging folder.

  A fresh run gets an empty staging folder; with ``resume`` the staging
  folder of an interrupted run is returned as it is.
  """
  out_dir = pathlib.Path(out_dir)
  staging = staging_dir(out_dir)
  if out_dir.exists() and not out_dir.is_dir():
    raise FileExistsError(f"output path {out_dir} exists and is not a folder")
  if resume:
    if out_dir.exists() and not overwrite:
      raise FileExistsError(f"{out_dir} is already complete; there is nothing to resume")
    if not (staging / "run_config.json").is_file():
      raise FileNotFoundError(
          f"no interrupted run of {out_dir} to resume (expected {staging}/run_config.json)")
    return staging
  if out_dir.exists() and not overwrite:
    raise FileExistsError(
        f"output folder {out_dir} already exists; choose another one or pass --overwrite")
  if staging.exists():
    if not overwrite:
      raise FileExistsError(
          f"an interrupted run of {out_dir} is in {staging}; continue it with --resume "
          f"{out_dir}, or pass --overwrite to start again")
    shutil.rmtree(staging)
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  staging.mkdir()
  return staging


def commit_output_dir(staging: pathlib.Path, out_dir, overwrite: bool = False) -> pathlib.Path:
  """Moves a complete staging folder to ``out_dir`` (replacing it only if allowed)."""
  out_dir = pathlib.Path(out_dir)
  if out_dir.exists():
    if not overwrite:
      raise FileExistsError(f"output folder {out_dir} appeared while training; results left in {staging}")
    old = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}")
    os.rename(out_dir, old)
    os.rename(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.rename(staging, out_dir)
  return out_dir


def _write_json(path: pathlib.Path, payload: dict) -> None:
  _atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _config_to_json(config: TrainConfig) -> dict:
  return {k: (list(v) if isinstance(v, tuple) else v)
          for k, v in dataclasses.asdict(config).items()}


def load_run_config(out_dir) -> TrainConfig:
  """The configuration of an interrupted run of ``out_dir``."""
  path = staging_dir(out_dir) / "run_config.json"
  values = json.loads(path.read_text())
  values["hidden_units"] = tuple(values["hidden_units"])
  return TrainConfig(**values)


def train_experiment(config: TrainConfig | None, out_dir, *, progress: bool = True,
                     overwrite: bool = False, checkpoint_every: int | None = None,
                     resume: bool = False) -> dict:
  """Trains on ``config.dataset`` and writes the run into ``out_dir``.

  Writes ``metrics.json``, ``loss_curve.png``, and for 2-D data
  ``four_panels.png`` and ``density.png``, and the trained flow under
  ``model/`` (read it back with :func:`tfp_realnvp.load`).

  The run is assembled in a staging folder beside ``out_dir`` and renamed
  into place only when complete.  With ``checkpoint_every`` it checkpoints
  there every so many steps; if the run is interrupted, ``resume=True`` (with
  ``config=None``: the interrupted run's own configuration) continues it from
  the last checkpoint and does only the remaining steps.

  Returns:
    The metrics written to ``metrics.json``.
  """
  from tfp_realnvp.serialization import save  # noqa: PLC0415 (keeps import order light)

  staging = prepare_output_dir(out_dir, overwrite, resume)
  if resume:
    saved = load_run_config(out_dir)
    if config is not None and config.resolved() != saved:
      raise ValueError(
          f"--resume continues the interrupted run with its own settings; they differ from "
          f"the ones given: {saved}")
    config = saved
  config = config.resolved()
  dataset = datasets_lib.get_dataset(config.dataset)
  checkpoints = staging / "checkpoints"
  if not resume:
    _write_json(staging / "run_config.json", _config_to_json(config))
  try:
    tf_keras.utils.set_random_seed(config.seed)
    x_train, x_test = dataset.train_test(config.n_train, config.n_test, config.noise,
                                         seed=config.seed, test_seed=config.test_seed)
    flow = RealNVP(dataset.event_size, num_couplings=config.num_couplings,
                   hidden_units=config.hidden_units, coupling=config.coupling,
                   permutation=config.permutation, actnorm=config.actnorm,
                   log_scale_bound=config.log_scale_bound, seed=config.seed)
    history = fit(flow, x_train, steps=config.steps, batch_size=config.batch_size,
                  learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                  ema_decay=config.ema_decay, validation_data=config.validation_fraction, seed=config.seed,
                  progress=progress,
                  checkpoint_dir=checkpoints if (checkpoint_every or resume) else None,
                  checkpoint_every=checkpoint_every)

    test_nll = float(-np.mean(flow.log_prob(x_test).numpy()))
    oracle = None
    if dataset.log_prob is not None:
      oracle = float(-np.mean(dataset.log_prob(x_test, config.noise)))
    metrics = {
        "dataset": config.dataset,
        "test_nll": test_nll,
        "oracle_nll": oracle,
        "gap": None if oracle is None else test_nll - oracle,
        "test_bits_per_dim": (None if dataset.bits_per_dim is None
                              else float(dataset.bits_per_dim(test_nll))),
        "steps": int(history.step[-1]),
        "resumed_from_step": int(history.resumed_from_step),
        "epochs": len(history.epoch),
        "best_epoch": history.best_epoch,
        "best_val_nll": history.best_val_nll,
        "final_train_nll": history.train_nll[-1],
        "nonfinite_steps": int(sum(history.nonfinite_steps)),
        "wall_time_s": history.wall_time[-1],
        "parameters": int(sum(int(np.prod(v.shape)) for v in flow.trainable_variables)),
        "config": _config_to_json(config),
        "flow": flow.config,
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                    "gpus": len(tf.config.list_physical_devices("GPU"))},
        "history": history.as_dict(),
    }

    plots.plot_loss_curve(history, oracle, path=staging / "loss_curve.png",
                          title=f"{config.dataset}: negative log-likelihood")
    if dataset.event_size == 2:
      plots.plot_four_panels(flow, x_test, seed=config.seed, path=staging / "four_panels.png")
      true_log_prob = None
      if dataset.log_prob is not None:
        true_log_prob = lambda g: dataset.log_prob(g, config.noise)  # noqa: E731
      plots.plot_density(flow, true_log_prob, limits=plots.limits(x_test, 0.1),
                         path=staging / "density.png")
    save(flow, staging / "model")
    shutil.rmtree(checkpoints, ignore_errors=True)  # model/ holds the final weights
    _write_json(staging / "metrics.json", metrics)
    commit_output_dir(staging, out_dir, overwrite)
  except BaseException:
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
      # Keep what training achieved: `--resume` continues from it.
      for partial in ("metrics.json", "loss_curve.png", "four_panels.png", "density.png"):
        (staging / partial).unlink(missing_ok=True)
      shutil.rmtree(staging / "model", ignore_errors=True)
    else:
      shutil.rmtree(staging, ignore_errors=True)
    raise
  return metrics
