"""tfp_realnvp as a user writes it: train on two moons, print the test NLL, draw samples.

Run: python -P benchmarks/peers/snippets/ours.py DATA.npz SEED [--quick]
(DATA.npz: a data file of the peers benchmark; lines ending in "# harness" are
the benchmark's plumbing and not counted as user code.)
"""
import sys  # harness

import numpy as np

import tfp_realnvp

data, seed = np.load(sys.argv[1]), int(sys.argv[2])  # harness
budget = {"steps": 30} if "--quick" in sys.argv else {}  # harness
tiny = {"num_couplings": 2, "hidden_units": (8, 8)} if "--quick" in sys.argv else {}  # harness

flow = tfp_realnvp.RealNVP(2, seed=seed, **tiny)
tfp_realnvp.fit(flow, data["train"], seed=seed, **budget)
print("test NLL", -np.mean(flow.log_prob(data["test"])))
samples = flow.sample(1000, seed=seed)
