"""zuko's contestants (run by ``.venv-zuko``): numpy, PyTorch and zuko only.

``zuko.flows.RealNVP`` (affine couplings) and, for a spline *coupling* flow,
``zuko.flows.NICE`` with ``MonotonicRQSTransform`` (zuko's ``NSF`` is
autoregressive), at the matched architecture, trained by a plain PyTorch loop
as zuko's documentation does, with ours' optimizer settings: Adam, the same
schedule through ``LambdaLR``, ``clip_grad_norm_`` and the weight average as
``torch.optim.swa_utils.AveragedModel`` with ours' warm-up of the decay.
Called as is: no ``torch.compile``.
"""

from __future__ import annotations

from benchmarks.peers import protocol

THREADS = protocol.setup_process()

import copy  # noqa: E402
from functools import partial  # noqa: E402

import torch  # noqa: E402
import zuko  # noqa: E402
from torch.optim.swa_utils import AveragedModel  # noqa: E402
from zuko.transforms import MonotonicRQSTransform  # noqa: E402

protocol.mark_imported()
if THREADS == "1":
  torch.set_num_threads(1)
  torch.set_num_interop_threads(1)

PACKAGES = ("zuko", "torch", "numpy")


def make_flow(coupling: str, settings: dict):
  """``RealNVP`` or a spline ``NICE`` with ``settings``' couplings, widths and spline."""
  common = {"transforms": settings["num_couplings"],
            "hidden_features": tuple(settings["hidden_units"])}
  if coupling == "affine":
    return zuko.flows.RealNVP(2, **common)
  bins = settings["spline_bins"]
  return zuko.flows.NICE(2, univariate=partial(MonotonicRQSTransform,
                                               bound=settings["spline_bound"]),
                         shapes=[(bins,), (bins,), (bins - 1,)], **common)


def warmup_ema(decay: float):
  """``AveragedModel``'s ``multi_avg_fn`` for ours' average: decay ``min(decay, (1+n)/(10+n))``."""

  def update(averages, weights, num_averaged):
    # num_averaged counts the initial copy, so it is n for the n-th step's update.
    torch._foreach_lerp_(averages, weights, 1.0 - protocol.ema_decay(int(num_averaged), decay))
  return update


class ZukoModel(protocol.Model):
  """A zuko coupling flow with the matched optimizer and weight average."""

  def __init__(self, coupling: str, settings: dict, data: protocol.Data, seed: int):
    torch.manual_seed(seed)
    self.flow = make_flow(coupling, settings)
    self.parameters = sum(p.numel() for p in self.flow.parameters())
    table, peak = protocol.learning_rate_table(settings), settings["learning_rate"]
    self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=peak, eps=protocol.ADAM_EPSILON)
    self.scheduler = torch.optim.lr_scheduler.LambdaLR(
        self.optimizer, lambda t: float(table[min(t, len(table) - 1)]) / peak)
    self.average = AveragedModel(self.flow, multi_avg_fn=warmup_ema(settings["ema_decay"]))
    self.average.update_parameters(self.flow)  # starts from the initial weights, as ours
    self.clip_norm, self.best = settings["clip_norm"], None
    self.batches = protocol.Batches(data.train_std, settings["batch_size"], seed)

  def train(self, n: int) -> float:
    for _ in range(n):
      loss = -self.flow().log_prob(torch.from_numpy(self.batches.next())).mean()
      self.optimizer.zero_grad()
      loss.backward()
      torch.nn.utils.clip_grad_norm_(self.flow.parameters(), self.clip_norm)
      self.optimizer.step()
      self.scheduler.step()
      self.average.update_parameters(self.flow)
    return loss.item()

  def nll(self, x) -> float:
    with torch.no_grad():
      return -self.average().log_prob(torch.from_numpy(x)).mean().item()

  def keep_best(self) -> None:
    self.best = copy.deepcopy(self.average.module.state_dict())

  def restore_best(self) -> None:
    self.average.module.load_state_dict(self.best)

  def throughput_fns(self, data: protocol.Data) -> dict:
    x, n = torch.from_numpy(data.standardize(data.throughput)), len(data.throughput)

    def log_prob():
      with torch.no_grad():
        self.average().log_prob(x)

    def sample():
      with torch.no_grad():
        self.average().sample((n,))
    return {"log_prob": log_prob, "sample": sample}


if __name__ == "__main__":
  protocol.serve(ZukoModel, PACKAGES)
