import os

os.environ.setdefault("MPLBACKEND", "Agg")
# One intra-op thread per test process: `make test` runs two xdist workers on two cores, and torch's default pool
# (one thread per core in each worker) waits at its barriers whenever the other worker holds a core (a 50-step
# MLP loop took 6 s instead of 0.2 s). Tests that need another count set it themselves.
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import torch
except ImportError:  # pragma: no cover - the suite's torch-free parts
    torch = None
if torch is not None:
    torch.set_num_threads(1)
