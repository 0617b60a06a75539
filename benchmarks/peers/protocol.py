"""The workers' side of the comparison, shared by every library (standard library and numpy only).

A worker is ``python -m benchmarks.peers.worker_LIB [--threads 1]``, run by its
library's interpreter.  It reads one JSON request per line on stdin and writes
one JSON reply per line on stdout; everything else the libraries print goes to
stderr, the worker's log.  Every reply carries ``rss_mb`` (peak resident
memory so far) and, on failure, ``error`` (the traceback).  Requests (``op``):

* ``startup``, ``build``, ``train_run``: build a model of ``coupling`` from
  ``settings`` (:meth:`PeerSettings.to_json`) on the data file ``data`` with
  ``seed``.  ``startup`` then takes one training step and replies with the
  wall-clock times (``time.time()``) when the imports were done, the model
  built and the step finished; ``build`` then warms it up with
  ``timing_warmup_blocks`` blocks of steps; ``train_run`` trains it for
  ``steps`` steps with validation (:func:`train_run`) and replies with the
  run's record.
* ``steps``: ``n`` more training steps of the built model; replies ``seconds``.
* ``throughput``: points per second of the built model's ``log_prob`` and
  ``sample`` (:func:`rates`).
* ``versions``: the library's package versions.  ``exit``: the last request.

A worker module defines its model class (see :class:`Model`) and calls
:func:`setup_process` before importing its library, :func:`mark_imported`
after, and :func:`serve` to answer requests.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
import traceback
from importlib import metadata

import numpy as np

__all__ = ["ADAM_EPSILON", "ONE_THREAD_ENV", "setup_process", "mark_imported", "Data", "Batches",
           "learning_rate_table", "ema_decay", "to_data_units", "finite", "Model", "train_run",
           "rates", "rss_mb", "serve"]

#: Adam's epsilon in every library: tf_keras's default (optax's and torch's are 1e-8).
ADAM_EPSILON = 1e-7

#: One thread for everything that reads its thread count from the environment at start.
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}

_imported_at = None


def setup_process(argv=None) -> str:
  """Parses the worker's ``--threads`` (``1`` or ``default``) and applies it.

  With ``1`` the process is pinned to CPU 0 and the environment asks every
  runtime for one thread (the worker also sets its library's own thread
  counts after importing it).  Call before importing the library: XLA and the
  BLAS read these variables when they start.
  """
  parser = argparse.ArgumentParser()
  parser.add_argument("--threads", choices=("1", "default"), default="default")
  threads = parser.parse_args(sys.argv[1:] if argv is None else argv).threads
  if threads == "1":
    os.sched_setaffinity(0, {0})
    os.environ.update(ONE_THREAD_ENV)
  return threads


def mark_imported() -> None:
  """Records when the library's imports were done (the start-up's first stage)."""
  global _imported_at
  _imported_at = time.time()


class Data:
  """One seed's data file: the points in data units and standardized by the
  training set's mean and standard deviation (as the peers are trained)."""

  def __init__(self, path):
    with np.load(path) as f:
      arrays = {k: f[k] for k in f.files}
    self.train, self.val, self.test = arrays["train"], arrays["val"], arrays["test"]
    self.throughput = arrays["throughput"]
    self.mean, self.std = arrays["mean"], arrays["std"]
    self.train_std, self.val_std, self.test_std = (
        self.standardize(x) for x in (self.train, self.val, self.test))

  def standardize(self, x: np.ndarray) -> np.ndarray:
    return ((x - self.mean) / self.std).astype(np.float32)


def to_data_units(nll_standardized: float, std) -> float:
  """The NLL of points in data units from that of the standardized points.

  ``x = mean + std * z``, so ``-log p(x) = -log p(z) + sum(log std)``.
  """
  return float(nll_standardized) + float(np.sum(np.log(std)))


class Batches:
  """``next()``: the next batch of a stream of epochs, each a fresh permutation
  of the rows, cut into batches of ``batch_size`` across epoch ends (as fit's
  ``shuffle().repeat().batch()``)."""

  def __init__(self, x: np.ndarray, batch_size: int, seed: int):
    self.x, self.batch_size = x, batch_size
    self.rng = np.random.default_rng(seed)
    self.order = np.empty(0, dtype=np.int64)

  def next(self) -> np.ndarray:
    while self.order.size < self.batch_size:
      self.order = np.concatenate([self.order, self.rng.permutation(len(self.x))])
    rows, self.order = self.order[:self.batch_size], self.order[self.batch_size:]
    return self.x[rows]


def learning_rate_table(settings: dict) -> np.ndarray:
  """The learning rate of each step ``t = 0 .. steps`` (the last holds for any later step).

  ``tfp_realnvp.training.default_optimizer``'s schedule: with ``W =
  min(warmup_steps, steps - 1)``, peak ``r`` and final fraction ``f``, ``r/100
  + (t/W) (r - r/100)`` for ``t < W``, then ``r (f + (1 - f) (1 + cos(pi
  min(t - W, T) / T)) / 2)`` with ``T = max(steps - W, 1)``.
  """
  steps, r = settings["steps"], settings["learning_rate"]
  f = settings["final_learning_rate_fraction"]
  warmup = min(settings["warmup_steps"], max(steps - 1, 0))
  decay = max(steps - warmup, 1)
  t = np.arange(steps + 1, dtype=np.float64)
  cosine = r * (f + (1 - f) * (1 + np.cos(np.pi * np.minimum(t - warmup, decay) / decay)) / 2)
  rising = r / 100 + t / max(warmup, 1) * (r - r / 100)
  return np.where(t < warmup, rising, cosine).astype(np.float32)


def ema_decay(n: int, decay: float) -> float:
  """The decay of the ``n``-th update (from 1) of ours' weight average."""
  return min(decay, (1.0 + n) / (10.0 + n))


class Model:
  """What a peer's model class provides (ours' overrides ``first_step`` and has its own run).

  ``Model(coupling, settings, data, seed)`` builds the flow at the matched
  architecture with the matched optimizer and weight average;
  ``parameters`` is its trainable parameter count.  ``train(n)`` takes ``n``
  steps and returns the last loss once they are done; ``nll(x)`` is the mean
  NLL of standardized points ``x`` under the averaged weights (standardized
  units); ``keep_best()`` keeps the averaged weights, ``restore_best()`` puts
  them back; ``throughput_fns(data)`` maps a name to a call of ``log_prob`` on
  ``data.throughput`` (the flow's units) or of ``sample`` of as many, returning
  when done.
  """

  parameters: int

  def first_step(self) -> None:
    """The start-up's first training step."""
    self.train(1)


def finite(value) -> float | None:
  """A JSON-safe float: None for NaN and inf."""
  value = float(value)
  return value if math.isfinite(value) else None


def train_run(model: Model, data: Data, settings: dict, seed: int) -> dict:
  """``settings["steps"]`` steps, validated every ``eval_every`` steps; the run's record.

  Wall times are those of the training steps only (the first includes
  compilation), not of the validations.  The averaged weights of the best
  validation are kept and tested, as ``tfp_realnvp.fit`` does.
  """
  del seed  # the model drew its batches and weights from it
  history = {"step": [], "val_nll": [], "wall_time": []}
  best, done, elapsed = math.inf, 0, 0.0
  while done < settings["steps"]:
    n = min(settings["eval_every"], settings["steps"] - done)
    start = time.perf_counter()
    model.train(n)
    elapsed += time.perf_counter() - start
    done += n
    val = to_data_units(model.nll(data.val_std), data.std)
    history["step"].append(done)
    history["val_nll"].append(finite(val))
    history["wall_time"].append(elapsed)
    if val < best:
      best = val
      model.keep_best()
  if math.isfinite(best):
    model.restore_best()
  return {"test_nll": finite(to_data_units(model.nll(data.test_std), data.std)),
          "steps_done": done, "train_seconds": elapsed, "nonfinite_steps": None,
          "diverged": not math.isfinite(best), "history": history}


def rates(fns: dict, points: int, repeats: int) -> dict:
  """Points per second of each call in ``fns``: the median of ``repeats`` after a compiling one."""
  out = {}
  for name, fn in fns.items():
    fn()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    out[name] = points / float(np.median(times))
  return out


def rss_mb() -> float:
  """Peak resident set size of this process so far, in MiB: ``VmHWM``, that of its own
  program.  (``getrusage``'s ``ru_maxrss`` is no use here: Linux carries it across
  fork and exec, so every worker would report at least the parent's peak.)"""
  with open("/proc/self/status") as status:
    for line in status:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024.0
  raise RuntimeError("/proc/self/status has no VmHWM line")


def _reply_stream():
  """The protocol's own copy of stdout; fd 1 itself then goes to stderr (the log)."""
  replies = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)
  return replies


def serve(model_class, packages, run=train_run) -> None:
  """Answers requests until ``exit`` (or the end of stdin)."""
  replies = _reply_stream()
  state = {}

  def build(request):
    gc.collect()  # earlier models' garbage, outside the timed region
    state["data"] = Data(request["data"])
    state["model"] = model_class(request["coupling"], request["settings"], state["data"],
                                 request["seed"])
    return state["model"]

  def handle(request) -> dict:
    op = request["op"]
    if op == "startup":
      model = build(request)
      built_at = time.time()
      model.first_step()
      return {"imported_at": _imported_at, "built_at": built_at,
              "first_step_at": time.time(), "parameters": model.parameters}
    if op == "build":
      model = build(request)
      settings = request["settings"]
      start = time.perf_counter()
      for _ in range(settings["timing_warmup_blocks"]):
        model.train(settings["timing_block"])
      return {"parameters": model.parameters, "warmup_seconds": time.perf_counter() - start}
    if op == "train_run":
      model = build(request)
      record = run(model, state["data"], request["settings"], request["seed"])
      return dict(record, seed=request["seed"], parameters=model.parameters)
    if op == "steps":
      start = time.perf_counter()
      state["model"].train(request["n"])
      return {"seconds": time.perf_counter() - start}
    if op == "throughput":
      points = len(state["data"].throughput)
      return {"points": points,
              "rates": rates(state["model"].throughput_fns(state["data"]), points,
                             request["repeats"])}
    if op == "versions":
      return {"python": platform.python_version(),
              "packages": {p: metadata.version(p) for p in packages}}
    if op == "exit":
      return {}
    raise ValueError(f"unknown request {op!r}")

  for line in sys.stdin:
    request = json.loads(line)
    try:
      reply = handle(request)
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
      reply = {"error": traceback.format_exc()}
    reply["rss_mb"] = rss_mb()
    replies.write(json.dumps(reply) + "\n")
    replies.flush()
    if request["op"] == "exit":
      break
