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
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras

from tfp_realnvp import datasets as datasets_lib
from tfp_realnvp import plots
from tfp_realnvp.distribution import RealNVP
from tfp_realnvp.training import fit

__all__ = ["TrainConfig", "train_experiment", "prepare_output_dir", "commit_output_dir"]


@dataclasses.dataclass
class TrainConfig:
  """Settings of the main job; the defaults are the tuned configuration."""

  dataset: str = "moons"
  n_train: int = 30000
  n_test: int = 10000
  noise: float | None = None  # None: the dataset's default noise
  num_couplings: int = 8
  hidden_units: tuple[int, ...] = (128, 128)
  log_scale_bound: float | None = 3.0
  steps: int = 6000
  batch_size: int = 512
  learning_rate: float = 1e-3
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


def prepare_output_dir(out_dir, overwrite: bool = False) -> pathlib.Path:
  """Checks ``out_dir`` may be written and returns a fresh staging folder beside it."""
  out_dir = pathlib.Path(out_dir)
  if out_dir.exists() and not overwrite:
    raise FileExistsError(
        f"output folder {out_dir} already exists; choose another one or pass --overwrite")
  if out_dir.exists() and not out_dir.is_dir():
    raise FileExistsError(f"output path {out_dir} exists and is not a folder")
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
  staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
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
  path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def train_experiment(config: TrainConfig, out_dir, *, progress: bool = True,
                     overwrite: bool = False) -> dict:
  """Trains on ``config.dataset`` and writes the run into ``out_dir``.

  Writes ``metrics.json``, ``loss_curve.png``, ``four_panels.png`` and
  ``density.png`` (2-D data), and the trained flow under ``model/``.

  Returns:
    The metrics written to ``metrics.json``.
  """
  config = config.resolved()
  dataset = datasets_lib.get_dataset(config.dataset)
  staging = prepare_output_dir(out_dir, overwrite)
  try:
    tf_keras.utils.set_random_seed(config.seed)
    x_train = dataset.sample(config.n_train, config.noise, config.seed)
    x_test = dataset.sample(config.n_test, config.noise, config.test_seed)
    flow = RealNVP(dataset.event_size, num_couplings=config.num_couplings,
                   hidden_units=config.hidden_units,
                   log_scale_bound=config.log_scale_bound)
    start = time.perf_counter()
    history = fit(flow, x_train, steps=config.steps, batch_size=config.batch_size,
                  learning_rate=config.learning_rate,
                  validation_data=config.validation_fraction, seed=config.seed,
                  progress=progress)
    train_time = time.perf_counter() - start

    test_nll = float(-np.mean(flow.log_prob(x_test).numpy()))
    oracle = None
    if dataset.log_prob is not None:
      oracle = float(-np.mean(dataset.log_prob(x_test, config.noise)))
    metrics = {
        "dataset": config.dataset,
        "test_nll": test_nll,
        "oracle_nll": oracle,
        "gap": None if oracle is None else test_nll - oracle,
        "steps": int(history.step[-1]),
        "epochs": len(history.epoch),
        "best_epoch": history.best_epoch,
        "best_val_nll": history.best_val_nll,
        "final_train_nll": history.train_nll[-1],
        "nonfinite_steps": int(sum(history.nonfinite_steps)),
        "wall_time_s": train_time,
        "parameters": int(sum(int(np.prod(v.shape)) for v in flow.trainable_variables)),
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(config).items()},
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
      plots.plot_density(flow, true_log_prob, limits=plots._limits(x_test, 0.1),
                         path=staging / "density.png")
    _save_model(flow, staging / "model")
    _write_json(staging / "metrics.json", metrics)
    commit_output_dir(staging, out_dir, overwrite)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return metrics


def _save_model(flow: RealNVP, folder: pathlib.Path) -> None:
  folder.mkdir()
  _write_json(folder / "config.json", {"format_version": 1, "class": "RealNVP",
                                       "config": flow.config})
  tf.train.Checkpoint(flow=flow).write(str(folder / "weights"))
