"""Overhead of the HHLD monitor vs a plain SGD step, interleaved in one run (CPU).

    python benchmarks/bench_monitor_overhead.py [--rounds 30] [--block 10] [--threads 1] [--cockpit]

Cases: MLP 784-256-256-10 and a small CNN (conv 1->16, pool, conv 16->32, pool, linear), batch
128, ``torch.optim.SGD``. One runner per mode (same initial weights, its own optimizer and
monitor) is built first; then ``--rounds`` rounds each run ``--block`` steps of every mode,
the mode order rotating from round to round, so that load changes on a shared machine hit all
modes alike. Reported per mode: the median step time and its ratio to the plain step, and the
*paired* ratio (median over rounds of the mode's block median / the plain block median of the
same round) and the ratio of the 10th percentiles of the step times (the least load-disturbed
figure when other jobs share the cores).

Modes: ``plain``; ``tier0`` (``tier1_every=None``); ``tier01`` (tier 0 + tier 1 every step,
the defaults); ``tier012`` (the defaults plus tier 2: ``loss_fn``, a 128-sample
``hessian_batch``, ``tier2_every=250``). The tier-2 cost at its default schedule is measured
directly: each round times one warm tier-2 evaluation (Hutchinson, 4 probes, + 3 warm-started
power iterations; the one-off cold start with 10 iterations is reported separately), and the
amortised addition is ``(median evaluation time) / 250`` relative to the plain step.

``--cockpit``: Cockpit's ``"economy"`` configuration (cockpit-for-pytorch 1.0.2 on
backpack-for-pytorch 1.7.1; installed with ``pip install --no-deps`` plus json_tricks,
seaborn, einops, unfoldNd, see ``pip install 'hhld[cockpit]'``) timed the same way, with
``--cockpit-block`` steps per round. BackPACK's ``extend`` is applied to its own model copy.
torchvision is not needed: only ``backpack.utils.examples`` imports it, and that is never
imported here.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch
from torch import nn

from hhld.torch import Monitor
from hhld.torch.quantities import StepContext


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 7 * 7, 10))


class Runner:
    def __init__(self, model_fn, mode, data, batch=128, seed=0):
        torch.manual_seed(seed)
        self.mode = mode
        self.model = model_fn()
        self.lf = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.X, self.Y = data
        self.batch = batch
        self.n = self.X.shape[0] // batch
        self.s = 0
        self.mon = self.cockpit = None
        if mode == "tier0":
            self.mon = Monitor(self.model, self.opt, log_every=50, tier1_every=None)
        elif mode == "tier01":
            self.mon = Monitor(self.model, self.opt, log_every=50)
        elif mode == "tier012":
            self.mon = Monitor(self.model, self.opt, log_every=50, loss_fn=self.lf,
                               hessian_batch=(self.X[:batch], self.Y[:batch]))
        elif mode == "cockpit":
            from backpack import extend
            from cockpit import Cockpit
            from cockpit.utils.configuration import configuration

            self.model = extend(self.model)
            self.lf = extend(nn.CrossEntropyLoss(reduction="mean"))
            self.lf_ind = nn.CrossEntropyLoss(reduction="none")
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
            self.cockpit = Cockpit(self.model.parameters(), quantities=configuration("economy"))

    def step(self):
        i = self.s % self.n
        x, y = self.X[i * self.batch:(i + 1) * self.batch], self.Y[i * self.batch:(i + 1) * self.batch]
        self.opt.zero_grad()
        out = self.model(x)
        loss = self.lf(out, y)
        if self.cockpit is not None:
            losses = self.lf_ind(out, y)
            with self.cockpit(self.s, info={"batch_size": self.batch, "individual_losses": losses, "loss": loss,
                                            "optimizer": self.opt}):
                loss.backward(create_graph=self.cockpit.create_graph(self.s))
        else:
            loss.backward()
        self.opt.step()
        if self.mon is not None:
            self.mon.step(loss)
        self.s += 1

    def run(self, steps):
        ts = []
        for _ in range(steps):
            t0 = time.perf_counter()
            self.step()
            ts.append(time.perf_counter() - t0)
        return ts

    def time_tier2(self):
        """One tier-2 evaluation (what a scheduled step adds), timed on the monitor's last step context."""
        mon = self.mon
        ctx = StepContext(step=mon.step_count, names=mon.names, params=mon.params, grads=[], lr=0.01,
                          batch_size=self.batch, n_micro=1, dim=mon.dim, extra={"model": mon.inner})
        mon._internal = True
        en = mon.hooks.enabled
        mon.hooks.enabled = False
        try:
            t0 = time.perf_counter()
            mon.curvature.post_step(ctx)
            return time.perf_counter() - t0
        finally:
            mon._internal = False
            mon.hooks.enabled = en


def q10(ts):
    """Lower decile of the step times: the least load-disturbed estimate on a shared machine."""
    return statistics.quantiles(ts, n=10)[0]


def bench(name, model_fn, modes, data, rounds, block, cockpit_block, warmup):
    runners = {m: Runner(model_fn, m, data) for m in modes}
    for r in runners.values():
        r.run(warmup if r.mode != "cockpit" else 3)
    tier2_cold = None
    if "tier012" in runners:  # the first (cold) evaluation: 10 power iterations
        runners["tier012"].mon.curvature._vec = None
        tier2_cold = runners["tier012"].time_tier2()
    times = {m: [] for m in modes}
    paired = {m: [] for m in modes}
    tier2 = []
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        blk = {}
        for m in order:
            ts = runners[m].run(block if m != "cockpit" else cockpit_block)
            times[m] += ts
            blk[m] = statistics.median(ts)
            if m == "tier012":
                tier2.append(runners[m].time_tier2())
        for m in modes:
            paired[m].append(blk[m] / blk["plain"])
    for r in runners.values():
        if r.mon is not None:
            r.mon.close()
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"{name}: plain step {med['plain'] * 1e3:.2f} ms (median of {len(times['plain'])} steps)")
    for m in modes[1:]:
        print(f"  {m:8s} {med[m] * 1e3:8.2f} ms  ({(med[m] - med['plain']) * 1e3:+.2f} ms)  ratio {med[m] / med['plain']:.2f}x  "
              f"paired ratio {statistics.median(paired[m]):.2f}x "
              f"(rounds: q25 {statistics.quantiles(paired[m], n=4)[0]:.2f}, q75 {statistics.quantiles(paired[m], n=4)[2]:.2f}); "
              f"10th-percentile ratio {q10(times[m]) / q10(times['plain']):.2f}x")
        if m == "cockpit" and "tier01" in med:
            print(f"  cockpit / tier01 {med['cockpit'] / med['tier01']:.1f}x")
    if tier2:
        t2 = statistics.median(tier2)
        print(f"  tier 2 evaluation {t2 * 1e3:.1f} ms warm (median of {len(tier2)}), {tier2_cold * 1e3:.1f} ms cold; "
              f"at tier2_every=250 it adds {100 * t2 / 250 / med['plain']:+.1f}% of a plain step, "
              f"{100 * t2 / 250 / med['tier01']:+.1f}% of a tier 0+1 step")
    return med


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cockpit", action="store_true")
    ap.add_argument("--cockpit-block", type=int, default=2)
    ap.add_argument("--only", choices=["mlp", "cnn"], default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}, "
          f"load average at start {load}")
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(128 * 20, 1, 28, 28, generator=g), torch.randint(0, 10, (128 * 20,), generator=g))
    modes = ["plain", "tier0", "tier01", "tier012"]
    if args.cockpit:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import backpack  # noqa: F401
                import cockpit  # noqa: F401
            modes.append("cockpit")
        except Exception as exc:  # noqa: BLE001
            print(f"cockpit not available: {type(exc).__name__}: {exc}")
    cases = [("MLP 784-256-256-10", mlp, "mlp"), ("small CNN", cnn, "cnn")]
    for name, fn, key in cases:
        if args.only and key != args.only:
            continue
        bench(name, fn, modes, data, args.rounds, args.block, args.cockpit_block, args.warmup)
    if hasattr(os, "getloadavg"):
        print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
