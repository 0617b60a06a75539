"""tfp_realnvp.RealNVP against the flows a user would pick instead: FlowJAX and zuko.

``python -m benchmarks.peers --out DIR`` (``make bench-peers``) trains, on the
built-in benchmark's two-moons data, seeds, validation and test sets, ours,
FlowJAX's and zuko's affine and spline coupling flows at the same architecture
with the same optimizer settings, and each library's own documented recipe;
it times their steps interleaved, their start-up and throughput.  See
``benchmarks/peers/README.md``.

Modules: :mod:`~benchmarks.peers.settings` (contestants, libraries,
:class:`PeerSettings`), :mod:`~benchmarks.peers.data` (the data files),
:mod:`~benchmarks.peers.processes` (worker processes), :mod:`~benchmarks.peers.phases`
(what the parent measures), :mod:`~benchmarks.peers.summary` and
:mod:`~benchmarks.peers.report` (statistics, ``results.json``, ``results.md``,
the plot), :mod:`~benchmarks.peers.run` (the command line).  The workers:
:mod:`~benchmarks.peers.protocol` (their shared side: standard library and
numpy only) and ``worker_ours``, ``worker_flowjax`` and ``worker_zuko``, each
run by its library's virtual environment.  This package imports nothing at
import time: the peers' interpreters import it too.
"""
