"""The main job: train a flow on a dataset and write figures, metrics, weights.

:func:`train_experiment` is what ``tfp-realnvp train`` runs.  The run is
assembled in a staging folder ``.NAME.partial`` beside its output folder and
renamed into place only when complete, under a lock that keeps a second
process out.  Its finishing sequence (final model, then its history, then
figures and metrics, then the rename) is ordered so that a kill at any point
is continued by one ``resume=True`` call, without retraining a run whose final
model was written.  An existing folder is replaced only with ``overwrite=True``
and only if it is a run folder (it holds :data:`RUN_MARKER`) or empty.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import shutil

import numpy as np
import tensorflow as tf
import tf_keras

from tfp_realnvp import datasets as datasets_lib
from tfp_realnvp import files, plots
from tfp_realnvp.distribution import RealNVP
from tfp_realnvp.options import FLOW_DEFAULTS, TRAINING_DEFAULTS, FlowOptions, TrainingOptions
from tfp_realnvp.serialization import load, minimum_parameter_count, save
from tfp_realnvp.training import History, default_optimizer, fit

__all__ = ["TrainConfig", "train_experiment", "staging_dir", "load_run_config", "RUN_MARKER",
           "MAX_PARAMETERS"]

#: The file that marks a folder (staging or finished) as a run of ours.
RUN_MARKER = "run_config.json"
#: Largest flow the main job builds (a guard against typos such as 10**6 couplings).
MAX_PARAMETERS = 10**8
_FINAL_HISTORY = "history.json"
_OPTIMIZER_KNOBS = ("learning_rate", "schedule", "warmup_steps", "final_learning_rate_fraction",
                    "clip_norm", "weight_decay")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Settings of the main job: the data, the flow's and the training's options.

  ``flow`` and ``training`` default to the tuned :data:`FLOW_DEFAULTS` and
  :data:`TRAINING_DEFAULTS` (see the README's results).  ``noise=None`` is the
  dataset's own noise; ``test_seed=None`` is ``seed + 1000``, a test set
  disjoint from training.
  """

  dataset: str = "moons"
  n_train: int = 30000
  n_test: int = 10000
  noise: float | None = None
  validation_fraction: float = 0.1
  seed: int = 0
  test_seed: int | None = None
  flow: FlowOptions = FLOW_DEFAULTS
  training: TrainingOptions = TRAINING_DEFAULTS

  def resolved(self) -> "TrainConfig":
    """The same run with the dataset's defaults filled in, checked against sane bounds."""
    dataset = datasets_lib.get_dataset(self.dataset)
    for name in ("n_train", "n_test"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {getattr(self, name)!r}")
    if not 0.0 < self.validation_fraction < 1.0:
      raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
    size = minimum_parameter_count(dataset.event_size, self.flow)
    if size > MAX_PARAMETERS:
      raise ValueError(
          f"this flow would have at least {size:,} parameters (more than {MAX_PARAMETERS:,}); "
          "choose fewer couplings or narrower hidden layers")
    return dataclasses.replace(
        self, noise=dataset.default_noise if self.noise is None else float(self.noise),
        test_seed=self.seed + 1000 if self.test_seed is None else self.test_seed)

  def to_json(self) -> dict:
    return dict(vars(self), flow=self.flow.as_dict(), training=dataclasses.asdict(self.training))

  @classmethod
  def from_json(cls, values: dict) -> "TrainConfig":
    """Reads :meth:`to_json`'s layout, and the flat one of older runs."""
    values = dict(values)
    for key, options in (("flow", FlowOptions), ("training", TrainingOptions)):
      names = {f.name for f in dataclasses.fields(options)}
      given = dict(values.pop(key, {}))
      given.update({k: values.pop(k) for k in list(values) if k in names})
      if "hidden_units" in given:
        given["hidden_units"] = tuple(given["hidden_units"])
      values[key] = options(**given)
    return cls(**values)


def staging_dir(out_dir) -> pathlib.Path:
  """Where a run into ``out_dir`` is assembled (and checkpointed) until complete."""
  out_dir = pathlib.Path(out_dir)
  return out_dir.parent / f".{out_dir.name}.partial"


def load_run_config(out_dir) -> TrainConfig:
  """The configuration of the interrupted run of ``out_dir``."""
  path = staging_dir(out_dir) / RUN_MARKER
  try:
    return TrainConfig.from_json(json.loads(path.read_text()))
  except FileNotFoundError:
    raise FileNotFoundError(
        f"no interrupted run of {out_dir} to resume (expected {path})") from None
  except (ValueError, TypeError, RecursionError) as e:
    raise ValueError(f"{path} is damaged ({type(e).__name__}: {e})") from None


def _check_replaceable(out_dir: pathlib.Path, overwrite: bool) -> None:
  if not out_dir.exists() and not out_dir.is_symlink():
    return
  if not overwrite:
    raise FileExistsError(
        f"output folder {out_dir} already exists; choose another one or pass --overwrite")
  if out_dir.is_symlink() or not out_dir.is_dir():
    raise FileExistsError(f"refusing to overwrite {out_dir}: it is not a folder")
  if any(out_dir.iterdir()) and not (out_dir / RUN_MARKER).is_file():
    raise FileExistsError(
        f"refusing to overwrite {out_dir}: it is not a run folder of tfp-realnvp (it has no "
        f"{RUN_MARKER}); move it away or choose another --out")


def _start(config, out_dir, staging, overwrite, resume) -> TrainConfig:
  """Checks the run may be written (and continued); returns its resolved config."""
  if resume:
    if out_dir.exists() and not staging.exists():
      raise FileExistsError(f"{out_dir} is already complete; there is nothing to resume")
    saved = load_run_config(out_dir)
    if config is not None and config.resolved() != saved.resolved():
      raise ValueError(f"--resume continues the interrupted run with its own settings; they "
                       f"differ from the ones given: {saved}")
    _check_replaceable(out_dir, overwrite)
    files.remove_temporaries(staging)
    return saved.resolved()
  _check_replaceable(out_dir, overwrite)
  if staging.exists() and not overwrite:
    raise FileExistsError(
        f"an interrupted run of {out_dir} is in {staging}; continue it with --resume "
        f"{out_dir}, or pass --overwrite to start again")
  return (config or TrainConfig()).resolved()


def _train(config: TrainConfig, flow, x_train, staging, progress, checkpoint_every, resume):
  """Trains ``flow`` (or loads the final model of a finished run); returns (flow, history)."""
  final_model, final_history = staging / "model", staging / _FINAL_HISTORY
  if final_history.is_file():  # killed after training was complete: do not retrain
    return load(final_model), History.from_dict(json.loads(final_history.read_text()))
  t = config.training
  optimizer = default_optimizer(t.steps, **{k: getattr(t, k) for k in _OPTIMIZER_KNOBS})
  history = fit(flow, x_train, steps=t.steps, batch_size=t.batch_size, ema_decay=t.ema_decay,
                optimizer=optimizer,
                validation_data=config.validation_fraction, seed=config.seed, progress=progress,
                checkpoint_dir=staging / "checkpoints" if (checkpoint_every or resume) else None,
                checkpoint_every=checkpoint_every)
  save(flow, final_model, overwrite=True)
  files.atomic_write_json(final_history, history.as_dict(), allow_nan=True)
  return flow, history


def _metrics(config, dataset, flow, history, x_test) -> dict:
  test_nll = float(-np.mean(flow.log_prob(x_test).numpy()))
  oracle = None if dataset.log_prob is None else float(
      -np.mean(dataset.log_prob(x_test, config.noise)))
  return {
      "dataset": config.dataset, "test_nll": test_nll, "oracle_nll": oracle,
      "gap": None if oracle is None else test_nll - oracle,
      "test_bits_per_dim": (None if dataset.bits_per_dim is None
                            else float(dataset.bits_per_dim(test_nll))),
      "steps": int(history.step[-1]), "resumed_from_step": int(history.resumed_from_step),
      "epochs": len(history.epoch), "best_epoch": history.best_epoch,
      "best_val_nll": history.best_val_nll, "final_train_nll": history.train_nll[-1],
      "nonfinite_steps": int(sum(history.nonfinite_steps)),
      "wall_time_s": history.wall_time[-1],
      "parameters": int(sum(int(np.prod(v.shape)) for v in flow.trainable_variables)),
      "config": config.to_json(), "flow": flow.config,
      "machine": {"platform": platform.platform(), "processor": platform.machine(),
                  "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
                  "gpus": len(tf.config.list_physical_devices("GPU"))},
      "history": history.as_dict(),
  }


def _figures(config, dataset, flow, history, oracle, x_test, staging) -> None:
  plots.plot_loss_curve(history, oracle, path=staging / "loss_curve.png",
                        title=f"{config.dataset}: negative log-likelihood")
  if dataset.event_size == 2:
    plots.plot_four_panels(flow, x_test, seed=config.seed, path=staging / "four_panels.png")
    true_log_prob = None
    if dataset.log_prob is not None:
      true_log_prob = lambda g: dataset.log_prob(g, config.noise)  # noqa: E731
    plots.plot_density(flow, true_log_prob, limits=plots.limits(x_test, 0.1),
                       path=staging / "density.png")


def train_experiment(config: TrainConfig | None, out_dir, *, progress: bool = True,
                     overwrite: bool = False, checkpoint_every: int | None = None,
                     resume: bool = False) -> dict:
  """Trains on ``config.dataset``, writes the run into ``out_dir`` and returns its metrics.

  The run holds ``metrics.json``, ``loss_curve.png``, for 2-D data ``four_panels.png``
  and ``density.png``, the flow under ``model/`` (:func:`tfp_realnvp.load` reads it),
  ``history.json`` and ``run_config.json``.  ``checkpoint_every`` checkpoints every so
  many steps; ``resume=True`` continues an interrupted run (``config=None``: with its
  own settings).  The config is checked and the flow built before any folder is made.

  Raises:
    tfp_realnvp.files.FolderInUse: another process is writing this run.
    FileExistsError: ``out_dir`` exists and may not be replaced.
  """
  out_dir = pathlib.Path(out_dir)
  staging = staging_dir(out_dir)
  with files.lock(out_dir):
    config = _start(config, out_dir, staging, overwrite, resume)
    dataset = datasets_lib.get_dataset(config.dataset)
    tf_keras.utils.set_random_seed(config.seed)
    x_train, x_test = dataset.train_test(config.n_train, config.n_test, config.noise,
                                         seed=config.seed, test_seed=config.test_seed)
    flow = RealNVP(dataset.event_size, seed=config.seed, **config.flow.as_dict())
    if not resume:
      shutil.rmtree(staging, ignore_errors=True)
      staging.mkdir(parents=True)
      files.atomic_write_json(staging / RUN_MARKER, config.to_json())
    try:
      flow, history = _train(config, flow, x_train, staging, progress, checkpoint_every, resume)
      shutil.rmtree(staging / "checkpoints", ignore_errors=True)  # model/ holds the final weights
      metrics = _metrics(config, dataset, flow, history, x_test)
      _figures(config, dataset, flow, history, metrics["oracle_nll"], x_test, staging)
      files.atomic_write_json(staging / "metrics.json", metrics, allow_nan=True)
      files.replace_folder(staging, out_dir)
    except BaseException:
      if not any((staging / name).exists() for name in ("checkpoints", _FINAL_HISTORY)):
        shutil.rmtree(staging, ignore_errors=True)  # nothing trained is lost
      raise
  return metrics
