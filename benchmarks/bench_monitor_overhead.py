"""Overhead of the HHLD monitor vs a plain SGD step, interleaved in one run (CPU).

    python benchmarks/bench_monitor_overhead.py [--steps 60] [--rounds 5] [--cockpit]

Cases: MLP 784-256-256-10 and a small CNN, batch 128. For each, rounds alternate
plain / tier 0+1 every step / tier 0+1+2 (default schedule); the median per-step time of
each is compared. With --cockpit, Cockpit's "economy" preset is timed the same way when
cockpit-for-pytorch / backpack-for-pytorch import.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from hhld.torch import Monitor


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 7 * 7, 10))


def run(model_fn, mode, steps, data, seed=0):
    torch.manual_seed(seed)
    model = model_fn()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    lf = nn.CrossEntropyLoss()
    X, Y = data
    mon = cockpit = None
    if mode == "tier0":
        mon = Monitor(model, opt, log_every=50, tier1_every=None)
    elif mode == "tier01":
        mon = Monitor(model, opt, log_every=50)
    elif mode == "tier012":
        mon = Monitor(model, opt, log_every=50, loss_fn=lf, hessian_batch=(X[:128], Y[:128]))
    elif mode == "cockpit":
        from backpack import extend
        from cockpit import Cockpit, CockpitPlotter  # noqa: F401
        from cockpit.utils.configuration import configuration
        model = extend(model)
        lf = extend(nn.CrossEntropyLoss(reduction="mean"))
        lf_ind = nn.CrossEntropyLoss(reduction="none")
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        cockpit = Cockpit(model.parameters(), quantities=configuration("economy"))
    n = X.shape[0] // 128
    times = []
    for s in range(steps):
        i = s % n
        x, y = X[i * 128:(i + 1) * 128], Y[i * 128:(i + 1) * 128]
        t0 = time.perf_counter()
        opt.zero_grad()
        out = model(x)
        loss = lf(out, y)
        if cockpit is not None:
            losses = lf_ind(out, y)
            with cockpit(s, info={"batch_size": 128, "individual_losses": losses, "loss": loss, "optimizer": opt}):
                loss.backward(create_graph=cockpit.create_graph(s))
        else:
            loss.backward()
        opt.step()
        if mon is not None:
            mon.step(loss)
        times.append(time.perf_counter() - t0)
    if mon is not None:
        mon.close()
    return times[5:]  # drop warm-up


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cockpit", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(128 * 20, 1, 28, 28, generator=g), torch.randint(0, 10, (128 * 20,), generator=g))
    modes = ["plain", "tier0", "tier01", "tier012"]
    if args.cockpit:
        try:
            import backpack  # noqa: F401
            import cockpit  # noqa: F401
            modes.append("cockpit")
        except Exception as exc:  # noqa: BLE001
            print(f"cockpit not available: {exc}")
    for name, fn in (("MLP 784-256-256-10", mlp), ("small CNN", cnn)):
        res = {m: [] for m in modes}
        for r in range(args.rounds):
            for m in modes:
                steps = args.steps if m != "cockpit" else max(20, args.steps // 10)
                res[m] += run(fn, m, steps, data, seed=r)
        med = {m: statistics.median(v) for m, v in res.items()}
        print(f"{name}: plain step {med['plain'] * 1e3:.2f} ms (median, {torch.get_num_threads()} threads)")
        for m in modes[1:]:
            print(f"  {m:8s} {med[m] * 1e3:8.2f} ms  ratio {med[m] / med['plain']:.2f}x"
                  + (f"  (mean ratio {statistics.mean(res[m]) / statistics.mean(res['plain']):.2f}x)"))
        if "tier012" in med:
            print(f"  tier 2 adds {100 * (statistics.mean(res['tier012']) / statistics.mean(res['tier01']) - 1):+.1f}% "
                  "(mean step time, default schedule, amortised)")


if __name__ == "__main__":
    main()
