"""What a peer comparison does: the contestants, their libraries and :class:`PeerSettings`.

Nothing is re-declared: the data sizes, noise and seeds are the built-in
benchmark's (:meth:`benchmarks.bench.settings.BenchSettings.full`), the
architecture is the package's ``FLOW_DEFAULTS`` and the optimizer settings are
``TRAINING_DEFAULTS``.  The peers' workers receive :meth:`PeerSettings.to_json`.
"""

from __future__ import annotations

import dataclasses
import pathlib

from benchmarks.bench.settings import BenchSettings
from tfp_realnvp.options import FLOW_DEFAULTS

__all__ = ["ROOT", "LIBRARIES", "CONTESTANTS", "REFERENCE", "GAP_THRESHOLDS", "PeerSettings"]

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the repository root

#: Each library's virtual environment (None: the main one), worker module and snippet.
LIBRARIES = {
    "ours": {"venv": None, "worker": "benchmarks.peers.worker_ours", "snippet": "ours.py",
             "label": "tfp_realnvp"},
    "flowjax": {"venv": ".venv-flowjax", "worker": "benchmarks.peers.worker_flowjax",
                "snippet": "flowjax.py", "label": "FlowJAX"},
    "zuko": {"venv": ".venv-zuko", "worker": "benchmarks.peers.worker_zuko",
             "snippet": "zuko.py", "label": "zuko"},
}

#: Contestant -> (library, coupling); every one at the matched architecture.
CONTESTANTS = {
    "ours_affine": ("ours", "affine"),
    "ours_spline": ("ours", "spline"),
    "flowjax_affine": ("flowjax", "affine"),
    "flowjax_spline": ("flowjax", "spline"),
    "zuko_affine": ("zuko", "affine"),
    "zuko_spline": ("zuko", "spline"),
}

#: The contestant each one is compared with (ratios, parameter counts): ours, same coupling.
REFERENCE = {"affine": "ours_affine", "spline": "ours_spline"}

GAP_THRESHOLDS = (0.05, 0.01)


@dataclasses.dataclass
class PeerSettings:
  """What a run does; :meth:`full` and :meth:`quick` are the two modes.

  The matched architecture: ``num_couplings`` couplings whose networks have
  ``hidden_units``; splines of ``spline_bins`` bins on
  ``[-spline_bound, spline_bound]``.  The matched training: ``steps`` steps of
  ``batch_size`` points, Adam at peak ``learning_rate`` after
  ``warmup_steps`` of linear warm-up, cosine decay to
  ``final_learning_rate_fraction`` of it, gradients clipped to global norm
  ``clip_norm``, a moving average of the weights of decay ``ema_decay``
  (validated, and its best validation epoch kept).  The training runs use
  ``train_threads`` (``"default"``: each library's own; ``"1"``: one thread,
  pinned to CPU 0, as the one-thread timing).
  """

  mode: str
  seeds: list
  own_seeds: list
  n_train: int
  n_val: int
  n_test: int
  noise: float
  val_seed: int
  test_seed: int
  data_seed_offset: int
  num_couplings: int
  hidden_units: list
  spline_bins: int
  spline_bound: float
  steps: int
  batch_size: int
  learning_rate: float
  warmup_steps: int
  final_learning_rate_fraction: float
  clip_norm: float
  ema_decay: float
  eval_every: int = 250
  timing_block: int = 50
  timing_warmup_blocks: int = 2
  timing_rounds: int = 8
  throughput_points: int = 100_000
  throughput_repeats: int = 5
  startup_repeats: int = 3
  train_threads: str = "default"
  quick_snippets: bool = False

  @classmethod
  def full(cls, seeds: int = 5, steps: int | None = None, own_seeds: int = 2) -> "PeerSettings":
    """The package's defaults on the built-in benchmark's data; 5 seeds, 2 for own recipes."""
    bench = BenchSettings.full(seeds=seeds, steps=steps)
    t, f = bench.training, FLOW_DEFAULTS
    if t.weight_decay:
      raise ValueError("the peers' optimizers are plain Adam: TRAINING_DEFAULTS.weight_decay "
                       f"must be 0, got {t.weight_decay}")
    return cls(
        mode="full", seeds=list(bench.seeds), own_seeds=list(bench.seeds[:own_seeds]),
        n_train=bench.n_train, n_val=bench.n_val, n_test=bench.n_test, noise=bench.noise,
        val_seed=bench.val_seed, test_seed=bench.test_seed,
        data_seed_offset=bench.data_seed_offset, num_couplings=f.num_couplings,
        hidden_units=list(f.hidden_units), spline_bins=f.spline_bins,
        spline_bound=f.spline_bound, steps=t.steps, batch_size=t.batch_size,
        learning_rate=t.learning_rate, warmup_steps=t.warmup_steps,
        final_learning_rate_fraction=t.final_learning_rate_fraction, clip_norm=t.clip_norm,
        ema_decay=t.ema_decay, eval_every=min(250, t.steps))

  @classmethod
  def quick(cls, seeds: int = 1, steps: int | None = None, own_seeds: int = 1) -> "PeerSettings":
    """Tiny data, networks and budgets: checks every field is produced (seconds a contestant)."""
    steps = 30 if steps is None else int(steps)
    full = cls.full(seeds=seeds, steps=steps, own_seeds=own_seeds)
    return dataclasses.replace(
        full, mode="quick", n_train=1500, n_val=300, n_test=500, num_couplings=2,
        hidden_units=[8, 8], batch_size=64, eval_every=max(1, steps // 3),
        timing_block=5, timing_warmup_blocks=1, timing_rounds=2, throughput_points=2000,
        throughput_repeats=2, startup_repeats=1, quick_snippets=True)

  def bench(self) -> BenchSettings:
    """The built-in benchmark's settings with these data sizes (for its data functions)."""
    return dataclasses.replace(
        BenchSettings.full(seeds=len(self.seeds)), seeds=list(self.seeds),
        n_train=self.n_train, n_val=self.n_val, n_test=self.n_test, noise=self.noise,
        val_seed=self.val_seed, test_seed=self.test_seed,
        data_seed_offset=self.data_seed_offset)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, values: dict) -> "PeerSettings":
    return cls(**values)
