"""FlowJAX as its documentation shows it: standardize by hand, fit_to_data with
its defaults, print the test NLL (in data units), draw samples.

Run: python -P benchmarks/peers/snippets/flowjax.py DATA.npz SEED [--quick]
(-P: this file's name would shadow the library; lines ending in "# harness" are
the benchmark's plumbing and not counted as user code.)
"""
import sys  # harness

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from flowjax.distributions import Normal
from flowjax.flows import coupling_flow
from flowjax.train import fit_to_data

data, seed = np.load(sys.argv[1]), int(sys.argv[2])  # harness
budget = {"max_epochs": 2} if "--quick" in sys.argv else {}  # harness
tiny = {"flow_layers": 2, "nn_width": 8} if "--quick" in sys.argv else {}  # harness

x, x_test = data["train"], data["test"]
mean, std = x.mean(axis=0), x.std(axis=0)
flow_key, train_key, sample_key = jr.split(jr.key(seed), 3)
flow = coupling_flow(flow_key, base_dist=Normal(jnp.zeros(2)), **tiny)
flow, losses = fit_to_data(train_key, flow, (x - mean) / std, **budget)
nll = -flow.log_prob((x_test - mean) / std).mean() + jnp.log(std).sum()
print("test NLL", nll)
samples = flow.sample(sample_key, (1000,)) * std + mean
