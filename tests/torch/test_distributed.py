"""DistributedNoiseStats under a real 2-process gloo DDP run vs the exact single-process values."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from hhld.torch.distributed import DistributedNoiseStats, register_noise_hook
from hhld.torch.noise import gradient_noise_stats

import workloads as W

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

WORLD = 2
B_LOCAL = 4


def _problem():
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(WORLD * B_LOCAL, 3, generator=g, dtype=torch.float64)
    y = torch.randn(WORLD * B_LOCAL, 2, generator=g, dtype=torch.float64) + 3.0  # ||G||^2 > 0
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    return model, x, y


def _worker(rank, port, out_path):
    W.in_gloo_group(rank, WORLD, port, _train_and_write, rank, out_path)


def _train_and_write(rank, out_path):
    model, x, y = _problem()
    ddp = nn.parallel.DistributedDataParallel(model)
    loss_fn = nn.MSELoss()
    results = {}
    # b = B_LOCAL per worker, two identical steps (averaging over steps must not change it)
    stats = register_noise_hook(ddp, DistributedNoiseStats(local_batch_size=B_LOCAL))
    sl = slice(rank * B_LOCAL, (rank + 1) * B_LOCAL)
    for _ in range(2):
        ddp.zero_grad()
        loss_fn(ddp(x[sl]), y[sl]).backward()
    est = stats.compute()
    results["grouped"] = est.__dict__
    # b = 1 per worker: must coincide with the per-sample estimator of noise.py on x[:2]
    stats.reset()
    stats.local_batch_size = 1
    ddp.zero_grad()
    loss_fn(ddp(x[rank:rank + 1]), y[rank:rank + 1]).backward()
    results["single"] = stats.compute().__dict__
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)


def _per_sample_grads(model, x, y):
    out = []
    for i in range(x.shape[0]):
        model.zero_grad()
        nn.MSELoss()(model(x[i:i + 1]), y[i:i + 1]).backward()
        out.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    return torch.stack(out)


def test_ddp_noise_hook_matches_exact(tmp_path, monkeypatch):
    out_path = tmp_path / "stats.json"
    # the spawned children copy the parent's sys.path and unpickle _worker by its module
    # name (tests.torch.test_distributed under --import-mode=importlib): put the root on it
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    monkeypatch.syspath_prepend(root)
    torch.multiprocessing.spawn(_worker, args=(W._free_port(), str(out_path)), nprocs=WORLD, join=True)
    res = json.loads(out_path.read_text())

    model, x, y = _problem()
    g = _per_sample_grads(model, x, y)                      # (B, d) float64
    B, b = WORLD * B_LOCAL, B_LOCAL
    gw = g.reshape(WORLD, B_LOCAL, -1).mean(1)              # per-worker mean gradients
    s_small = (gw ** 2).sum(1).mean().item()
    s_big = (g.mean(0) ** 2).sum().item()
    tr = (s_small - s_big) / (1 / b - 1 / B)
    gsq = (B * s_big - b * s_small) / (B - b)
    r = res["grouped"]
    assert r["steps"] == 2 and r["world_size"] == WORLD and r["batch_size"] == B
    assert r["local_grad_sq_norm"] == pytest.approx(s_small, rel=1e-12)
    assert r["batch_grad_sq_norm"] == pytest.approx(s_big, rel=1e-12)
    assert r["tr_sigma"] == pytest.approx(tr, rel=1e-10)
    assert r["grad_sq_norm_unbiased"] == pytest.approx(gsq, rel=1e-10, abs=1e-12)
    assert gsq > 0 and r["b_simple"] == pytest.approx(tr / gsq, rel=1e-9)

    # b = 1: identical to noise.py's tr Sigma = 1/(B-1) sum_i ||g_i - gbar||^2 on the 2 samples
    g2 = g[:WORLD]
    tr2 = ((g2 - g2.mean(0)) ** 2).sum().item() / (WORLD - 1)
    ns = gradient_noise_stats(model, nn.MSELoss(), x[:WORLD], y[:WORLD])
    s = res["single"]
    assert s["steps"] == 1
    assert s["tr_sigma"] == pytest.approx(tr2, rel=1e-10)
    assert s["tr_sigma"] == pytest.approx(ns.tr_sigma, rel=1e-9)
    assert s["grad_sq_norm_unbiased"] == pytest.approx(ns.grad_sq_norm_unbiased, rel=1e-9, abs=1e-12)
