"""RealNVP as a chain of TFP bijectors: couplings, mixing steps and optional actnorm.

:func:`real_nvp_bijector` builds it as a :class:`ConditionalChain`, which hands
``conditional_input=`` to every coupling.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
# The CompositeTensor `tfb.Chain` cannot hold Keras networks (tf.Module's variable
# collection and tf.function arguments flatten it and fail): `tfb.Chain(...)` then
# returns this class.
from tensorflow_probability.python.bijectors.chain import _Chain

from tfp_realnvp.actnorm import ActNorm
from tfp_realnvp.couplings import coupling_factory
from tfp_realnvp.options import FlowOptions
from tfp_realnvp.permutations import make_permutation

tfb = tfp.bijectors

__all__ = ["ConditionalChain", "real_nvp_bijector", "coupling_names", "clear_caches"]


class ConditionalChain(_Chain):
  """A chain of bijectors that routes ``conditional_input=`` to its members.

  ``chain.forward(x, conditional_input=c)`` (and ``inverse`` and both
  log-dets) passes ``conditional_input=c`` to every member named in
  ``conditioned``; TFP's per-name form (``chain.forward(x, coupling_0={...})``)
  still works and adds to (or overrides) the routed arguments.

  ```python
  chain = real_nvp_bijector(2, num_couplings=4, hidden_units=(32,), conditional_size=3)
  y = chain.forward(tf.zeros([5, 2]), conditional_input=tf.ones([5, 3]))
  ```

  Args:
    bijectors: the members, applied right to left in ``forward``.
    conditioned: names of the members that take ``conditional_input=``;
      ``None``: the members that are conditional ``ConditionalChain``\\ s.
    validate_args, validate_event_size, name: as for ``tfb.Chain``.
  """

  def __init__(self, bijectors, conditioned=None, validate_args: bool = False,
               validate_event_size: bool = False, name: str | None = None):
    parameters = dict(locals())
    bijectors = list(bijectors)
    if conditioned is None:
      conditioned = [b.name for b in bijectors
                     if isinstance(b, ConditionalChain) and b.conditioned]
    unknown = sorted(set(conditioned) - {b.name for b in bijectors})
    if unknown:
      raise ValueError(f"conditioned names {unknown} are not members of the chain; its "
                       f"members are {[b.name for b in bijectors]}")
    self._conditioned = tuple(conditioned)
    super().__init__(bijectors, validate_args=validate_args,
                     validate_event_size=validate_event_size, parameters=parameters, name=name)

  @property
  def conditioned(self) -> tuple:
    """Names of the members that receive ``conditional_input``."""
    return self._conditioned

  def member_kwargs(self, conditional_input=None, **kwargs) -> dict:
    """TFP's per-member keyword arguments: ``{name: {...}}``, the condition routed."""
    if conditional_input is None:
      return kwargs
    if not self._conditioned:
      raise ValueError(f"{self.name} is not conditional (no member takes a condition; build "
                       "it with conditional_size > 0) but got conditional_input")
    routed = {name: {"conditional_input": conditional_input} for name in self._conditioned}
    for name, member in kwargs.items():
      routed[name] = {**routed.get(name, {}), **member}
    return routed

  def _walk_forward(self, step_fn, x, **kwargs):
    return super()._walk_forward(step_fn, x, **self.member_kwargs(**kwargs))

  def _walk_inverse(self, step_fn, y, **kwargs):
    return super()._walk_inverse(step_fn, y, **self.member_kwargs(**kwargs))

  def _is_increasing(self, **kwargs):
    return super()._is_increasing(**self.member_kwargs(**kwargs))


def clear_caches(bijector: tfb.Bijector) -> None:
  """Drops TFP's cached results of ``bijector`` and of every bijector inside it.

  TFP caches ``forward``/``inverse`` and their log-dets by input tensor, not by
  weight value: call this after the weights change (training, a restore).
  Recurses into ``.bijectors`` (chains) and ``.bijector`` (``tfb.Invert``).
  """
  bijector._cache.clear()  # pylint: disable=protected-access
  for member in list(getattr(bijector, "bijectors", ())) + [getattr(bijector, "bijector", None)]:
    if isinstance(member, tfb.Bijector):
      clear_caches(member)


def coupling_names(num_couplings: int) -> list[str]:
  """Names of the couplings in a chain made by :func:`real_nvp_bijector`."""
  return [f"coupling_{i}" for i in range(num_couplings)]


def real_nvp_bijector(event_size: int, options: FlowOptions | None = None, *, seed=None,
                      dtype=tf.float32, validate_args: bool = False, name: str = "real_nvp",
                      **overrides) -> ConditionalChain:
  """A :class:`ConditionalChain` of couplings and mixing steps, mapping latent to data space.

  Each coupling keeps ``event_size // 2`` coordinates and transforms the others
  (see :mod:`tfp_realnvp.couplings`).  The couplings are ``coupling_0``
  (applied first in ``forward``) to ``coupling_{num_couplings - 1}``; after
  ``coupling_i`` come ``actnorm_i`` (an :class:`~tfp_realnvp.actnorm.ActNorm`,
  with ``actnorm``) and ``permute_i`` (:mod:`tfp_realnvp.permutations`).

  ```python
  bij = real_nvp_bijector(event_size=3, num_couplings=4, hidden_units=(32, 32))
  x = tf.random.normal([8, 3])                          # any batch shape
  y = bij.forward(x)                                    # identity at init
  ldj = bij.forward_log_det_jacobian(x, event_ndims=1)  # shape [8]
  ```

  Args:
    event_size: dimensions of an event, at least 2.
    options: a :class:`~tfp_realnvp.options.FlowOptions` (default: tuned).
    seed: seed of the random permutations.
    dtype, validate_args, name: TFP's conventions, for every bijector.
    **overrides: ``FlowOptions`` fields replacing those of ``options``.
  """
  if not isinstance(event_size, (int, np.integer)) or isinstance(event_size, bool) \
      or event_size < 2:
    raise ValueError(f"event_size must be an integer >= 2, got {event_size!r}")
  event_size = int(event_size)
  base = {} if options is None else vars(options)  # (not as_dict: no deep copy of a factory)
  options = FlowOptions.from_kwargs({**base, **overrides}, where="real_nvp_bijector")
  factory = coupling_factory(options.coupling)
  common = dict(dtype=dtype, validate_args=validate_args)
  forward_order = []  # bijectors in the order forward() applies them
  for i, coupling_name in enumerate(coupling_names(options.num_couplings)):
    if i > 0:
      if options.actnorm:
        forward_order.append(ActNorm(event_size, name=f"actnorm_{i - 1}", **common))
      forward_order.append(make_permutation(options.permutation, event_size, i, seed,
                                            name=f"permute_{i - 1}", **common))
    forward_order.append(factory(event_size // 2, event_size - event_size // 2,
                                 options=options, name=coupling_name, **common))
  conditioned = coupling_names(options.num_couplings) if options.conditional_size else ()
  # A chain applies its list right to left in forward().
  return ConditionalChain(forward_order[::-1], conditioned=conditioned,
                          validate_args=validate_args, name=name)
