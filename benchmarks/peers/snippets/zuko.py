"""zuko as its "Train from data" tutorial shows it: a DataLoader of batches of 64,
Adam at 1e-3 for 8 epochs, the flow's defaults; standardized by hand; print the
test NLL (in data units), draw samples.

Run: python -P benchmarks/peers/snippets/zuko.py DATA.npz SEED [--quick]
(-P: this file's name would shadow the library; lines ending in "# harness" are
the benchmark's plumbing and not counted as user code.)
"""
import sys  # harness

import numpy as np
import torch
import zuko

data, seed = np.load(sys.argv[1]), int(sys.argv[2])  # harness
epochs = 1 if "--quick" in sys.argv else 8  # harness
tiny = {"transforms": 2, "hidden_features": (8, 8)} if "--quick" in sys.argv else {}  # harness

torch.manual_seed(seed)
x, x_test = torch.from_numpy(data["train"]), torch.from_numpy(data["test"])
mean, std = x.mean(dim=0), x.std(dim=0)
loader = torch.utils.data.DataLoader((x - mean) / std, batch_size=64, shuffle=True)
flow = zuko.flows.RealNVP(2, **tiny)
optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
for epoch in range(epochs):
    for batch in loader:
        loss = -flow().log_prob(batch).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
with torch.no_grad():
    nll = -flow().log_prob((x_test - mean) / std).mean() + std.log().sum()
print("test NLL", nll.item())
samples = flow().sample((1000,)) * std + mean
