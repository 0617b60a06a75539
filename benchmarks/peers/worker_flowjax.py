"""FlowJAX's contestants (run by ``.venv-flowjax``): numpy, JAX and FlowJAX only
(with the equinox, optax and paramax FlowJAX is built on).

``flowjax.flows.coupling_flow`` with ``Affine`` or ``RationalQuadraticSpline``
transformers at the matched architecture, trained by FlowJAX's own training
step (``flowjax.train.train_utils.step`` with ``MaximumLikelihoodLoss``, the
step ``fit_to_data`` runs), in a loop that stops after a number of steps and
validates every ``eval_every`` of them: ``fit_to_data`` itself runs whole
epochs of its own train/validation split and reports no validation curve.
The optimizer is ``optax`` with ours' schedule; optax has no weight average,
so the average is updated in the compiled step.
"""

from __future__ import annotations

from benchmarks.peers import protocol

THREADS = protocol.setup_process()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import optax  # noqa: E402
import paramax  # noqa: E402
from flowjax.bijections import Affine, RationalQuadraticSpline  # noqa: E402
from flowjax.distributions import StandardNormal  # noqa: E402
from flowjax.flows import coupling_flow  # noqa: E402
from flowjax.train.losses import MaximumLikelihoodLoss  # noqa: E402
from flowjax.train.train_utils import step  # noqa: E402

protocol.mark_imported()

PACKAGES = ("flowjax", "jax", "jaxlib", "equinox", "optax", "paramax", "numpy")


def make_flow(coupling: str, settings: dict, key):
  """``coupling_flow`` with ``settings``' couplings and widths (FlowJAX's MLPs have one width)."""
  widths = set(settings["hidden_units"])
  if len(widths) != 1:
    raise ValueError("FlowJAX's coupling networks have equal widths, got "
                     f"{settings['hidden_units']}")
  transformer = Affine() if coupling == "affine" else RationalQuadraticSpline(
      knots=settings["spline_bins"], interval=settings["spline_bound"])
  return coupling_flow(key, base_dist=StandardNormal((2,)), transformer=transformer,
                       flow_layers=settings["num_couplings"], nn_width=widths.pop(),
                       nn_depth=len(settings["hidden_units"]))


class FlowJaxModel(protocol.Model):
  """A FlowJAX coupling flow with the matched optimizer and weight average."""

  def __init__(self, coupling: str, settings: dict, data: protocol.Data, seed: int):
    flow = make_flow(coupling, settings, jr.key(seed))
    self.params, static = eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable))
    self.parameters = int(sum(leaf.size for leaf in jax.tree.leaves(self.params)))
    table = jnp.asarray(protocol.learning_rate_table(settings))
    optimizer = optax.chain(
        optax.clip_by_global_norm(settings["clip_norm"]),
        optax.adam(lambda count: table[jnp.minimum(count, table.shape[0] - 1)],
                   eps=protocol.ADAM_EPSILON))
    self.opt_state = optimizer.init(self.params)
    self.average, self.best, self.updates = self.params, None, jnp.zeros((), jnp.int32)
    self.batches = protocol.Batches(data.train_std, settings["batch_size"], seed)
    loss_fn, decay = MaximumLikelihoodLoss(), settings["ema_decay"]

    @eqx.filter_jit
    def train_step(params, average, updates, opt_state, x):
      params, opt_state, loss = step(params, static, x, optimizer=optimizer,
                                     opt_state=opt_state, loss_fn=loss_fn)
      updates = updates + 1
      d = jnp.minimum(decay, (1.0 + updates) / (10.0 + updates))
      average = jax.tree.map(lambda a, p: a - (1.0 - d) * (a - p), average, params)
      return params, average, updates, opt_state, loss

    self._train_step = train_step
    self._nll = eqx.filter_jit(lambda params, x: -eqx.combine(params, static).log_prob(x).mean())
    self._static = static

  def train(self, n: int) -> float:
    for _ in range(n):
      self.params, self.average, self.updates, self.opt_state, loss = self._train_step(
          self.params, self.average, self.updates, self.opt_state,
          jnp.asarray(self.batches.next()))
    return float(loss)

  def nll(self, x) -> float:
    return float(self._nll(self.average, jnp.asarray(x)))

  def keep_best(self) -> None:
    self.best = self.average  # immutable: a reference is a copy

  def restore_best(self) -> None:
    self.average = self.best

  def throughput_fns(self, data: protocol.Data) -> dict:
    flow = eqx.combine(self.average, self._static)
    x, n, key = jnp.asarray(data.standardize(data.throughput)), len(data.throughput), jr.key(1)
    log_prob = eqx.filter_jit(lambda flow, x: flow.log_prob(x))
    sample = eqx.filter_jit(lambda flow, key: flow.sample(key, (n,)))
    return {"log_prob": lambda: log_prob(flow, x).block_until_ready(),
            "sample": lambda: sample(flow, key).block_until_ready()}


if __name__ == "__main__":
  protocol.serve(FlowJaxModel, PACKAGES)
