"""What a benchmark run does: the contestants, the settings and fit's arguments.

The flow of ``ours`` and the training settings every contestant shares are
not re-declared here: they are :class:`tfp_realnvp.options.FlowOptions` and
:class:`tfp_realnvp.options.TrainingOptions`, the package's tuned defaults.
The data sizes, noise and seeds are those of the main job
(:class:`tfp_realnvp.experiment.TrainConfig`).
"""

from __future__ import annotations

import dataclasses
import inspect

from tfp_realnvp.options import FLOW_DEFAULTS, TRAINING_DEFAULTS, FlowOptions, TrainingOptions

__all__ = ["BenchSettings", "CONTESTANTS", "LABELS", "WORKERS", "GAP_THRESHOLDS",
           "fit_kwargs", "fit_defaults"]

CONTESTANTS = ("ours", "tfp_builtin_our_lr", "tfp_builtin_best_lr", "book")
LABELS = {
    "ours": "tfp_realnvp.RealNVP (defaults)",
    "tfp_builtin_our_lr": "TFP built-in RealNVP, our LR",
    "tfp_builtin_best_lr": "TFP built-in RealNVP, best stable LR",
    "book": "Book (GDL 2nd ed. ch. 6) as TFP chain",
}
# Processes: one per model; both built-in contestants share the "builtin" one.
WORKERS = {"ours": ("ours",), "builtin": ("tfp_builtin_our_lr", "tfp_builtin_best_lr"),
           "book": ("book",)}
GAP_THRESHOLDS = (0.05, 0.02)


@dataclasses.dataclass
class BenchSettings:
  """What a benchmark run does; :meth:`full` and :meth:`quick` are the two modes.

  ``flow`` is the architecture of ``ours`` (the built-in gets its couplings and
  widths); ``training`` holds the steps, batch size, learning rate and
  optimizer settings every contestant trains with (the built-in's sweep and
  the book change only the learning rate, and the book its batch size).
  """

  mode: str
  seeds: list
  n_train: int
  n_val: int
  n_test: int
  noise: float
  eval_every: int
  flow: FlowOptions
  training: TrainingOptions
  sweep_learning_rates: list
  book_num_couplings: int = 2
  book_width: int = 256
  book_depth: int = 4
  book_learning_rate: float = 1e-4
  book_batch_size: int = 256
  timing_chunk: int = 50
  timing_chunks: int = 12
  timing_learning_rate: float = 1e-4
  throughput_points: int = 100_000
  throughput_repeats: int = 5
  matmul_size: int = 1024
  data_seed_offset: int = 0
  val_seed: int = 0
  test_seed: int = 0
  jit_compile: bool = False

  @classmethod
  def full(cls, seeds: int = 5, steps: int | None = None) -> "BenchSettings":
    """The package's tuned flow and training settings on the main job's data, 5 seeds."""
    from tfp_realnvp.experiment import TrainConfig

    cfg = TrainConfig().resolved()
    training = TRAINING_DEFAULTS if steps is None else dataclasses.replace(
        TRAINING_DEFAULTS, steps=int(steps))
    n_val = max(1, int(round(cfg.validation_fraction * cfg.n_train)))
    return cls(
        mode="full", seeds=[cfg.seed + i for i in range(seeds)],
        n_train=cfg.n_train - n_val, n_val=n_val, n_test=cfg.n_test, noise=cfg.noise,
        eval_every=max(1, training.steps // 30), flow=FLOW_DEFAULTS, training=training,
        sweep_learning_rates=sorted({1e-3, 3e-4, 1e-4, training.learning_rate}, reverse=True),
        val_seed=cfg.test_seed + 1000, test_seed=cfg.test_seed,
        jit_compile=bool(fit_defaults()["jit_compile"]))

  @classmethod
  def quick(cls, seeds: int = 1, steps: int | None = None) -> "BenchSettings":
    """Tiny data, networks and budgets: checks every field is produced (seconds)."""
    full = cls.full(seeds=seeds)
    steps = 40 if steps is None else int(steps)
    return dataclasses.replace(
        full, mode="quick", n_train=1500, n_val=300, n_test=500,
        eval_every=max(1, steps // 4),
        flow=dataclasses.replace(full.flow, num_couplings=2, hidden_units=(16, 16)),
        training=dataclasses.replace(full.training, steps=steps, batch_size=64),
        sweep_learning_rates=full.sweep_learning_rates[:2],
        book_width=16, book_batch_size=32, timing_chunk=5, timing_chunks=3,
        throughput_points=2000, throughput_repeats=2, matmul_size=128)

  def to_json(self) -> dict:
    """Plain JSON values (``flow`` and ``training`` as objects)."""
    values = dataclasses.asdict(self)
    values["flow"] = self.flow.as_dict()
    return values

  @classmethod
  def from_json(cls, values: dict) -> "BenchSettings":
    """The inverse of :meth:`to_json`."""
    values = dict(values, flow=FlowOptions(**values["flow"]),
                  training=TrainingOptions(**values["training"]))
    return cls(**values)


def fit_kwargs(settings: BenchSettings, learning_rate: float, steps: int) -> dict:
  """fit's optimizer and weight-average arguments for a run of ``steps`` steps: the
  package's training settings at ``learning_rate`` (the one place the benchmark builds them).
  """
  from tfp_realnvp.training import default_optimizer

  t = settings.training
  optimizer = default_optimizer(
      steps, learning_rate=learning_rate, schedule=t.schedule, warmup_steps=t.warmup_steps,
      final_learning_rate_fraction=t.final_learning_rate_fraction, clip_norm=t.clip_norm,
      weight_decay=t.weight_decay)
  return {"optimizer": optimizer, "ema_decay": t.ema_decay}


def fit_defaults() -> dict:
  """The defaults of fit's own loop arguments the benchmark leaves alone (for the record)."""
  from tfp_realnvp import fit

  params = inspect.signature(fit).parameters
  return {k: params[k].default
          for k in ("max_nonfinite_steps", "restore_best_weights", "jit_compile")}
