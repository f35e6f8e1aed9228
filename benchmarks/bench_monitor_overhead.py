"""Overhead of the HHLD monitor vs a plain training step, interleaved in one run (CPU).

    python benchmarks/bench_monitor_overhead.py [--rounds 20] [--block 10] [--threads 1] [--only gpt,lstm]
                                                [--cockpit] [--markdown] [--breakdown]

Workloads (each a plain ``torch.optim.SGD`` step, batch and sizes in the table it prints):

* ``mlp``  -- MLP 784-256-256-10, batch 128;
* ``cnn``  -- small CNN (conv 1->16, pool, conv 16->32, pool, linear), batch 128;
* ``gpt``  -- nanoGPT-style decoder (vocabulary 65, T = 64, width 128, 2 pre-LN blocks with 4 heads through
  ``F.scaled_dot_product_attention``, learned positions ``pos(arange(T))``, tied output weights, dropout
  0.1), batch 8;
* ``lstm`` -- one-layer LSTM classifier (32 inputs, 128 hidden, T = 50), batch 32.

One runner per mode (same initial weights, its own optimizer and monitor) is built first; then
``--rounds`` rounds each run ``--block`` steps of every mode, the mode order rotating from round to
round, so that load changes on a shared machine hit all modes alike. Modes: ``plain``; ``tier0``
(``tier1_every=None``); ``default`` (``Monitor(model, opt)``: tier 0 every step, a row and a tier-1 step every
:data:`hhld.torch.monitor.DEFAULT_TIER1_EVERY` steps); ``light`` (:data:`LIGHT`: tier 0 on every 5th step, the
uncertainty window sampled every 25 steps); ``every1`` (tier 1 every step: the cost of one
tier-1 step, from which the default schedule was chosen); ``cockpit`` (``--cockpit``, MLP and CNN:
Cockpit's "economy" configuration, cockpit-for-pytorch 1.0.2 on backpack-for-pytorch 1.7.1). Reported per
mode: the median step time, its ratio to the plain step, the *paired* ratio (median over rounds of the
mode's block mean / the plain block mean of the same round; a block of the default schedule holds one
tier-1 step) and the ratio of the 10th percentiles. ``--tier2`` times one warm tier-2 evaluation per round
on the MLP and the CNN (amortised over ``tier2_every=250``). ``--breakdown`` prints instead what each part of
the default schedule adds per step, one configuration on top of the other (:data:`BREAKDOWN`).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from hhld.torch import Monitor
from hhld.torch.monitor import DEFAULT_TIER1_EVERY


# ---------------------------------------------------------------------------------------------- workloads
def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * 7 * 7, 10))


class Block(nn.Module):
    def __init__(self, E, H, p):
        super().__init__()
        self.H, self.p = H, p
        self.ln1, self.ln2 = nn.LayerNorm(E), nn.LayerNorm(E)
        self.qkv, self.proj = nn.Linear(E, 3 * E), nn.Linear(E, E)
        self.mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E))
        self.drop = nn.Dropout(p)

    def forward(self, x):
        B, T, E = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(E, dim=2)
        q, k, v = (t.view(B, T, self.H, E // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, E)))
        return x + self.drop(self.mlp(self.ln2(x)))


class GPT(nn.Module):
    def __init__(self, V=65, T=64, E=128, H=4, L=2, p=0.1):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, E), nn.Embedding(T, E)
        self.blocks = nn.Sequential(*[Block(E, H, p) for _ in range(L)])
        self.ln_f = nn.LayerNorm(E)
        self.head = nn.Linear(E, V, bias=False)
        self.head.weight = self.tok.weight
        self.drop = nn.Dropout(p)

    def forward(self, idx):
        x = self.drop(self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device)))
        return self.head(self.ln_f(self.blocks(x)))


class LSTMClassifier(nn.Module):
    def __init__(self, n_in=32, hidden=128, n_out=10):
        super().__init__()
        self.rnn = nn.LSTM(n_in, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def _images(n, g):
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _tokens(n, g):
    x = torch.randint(0, 65, (n, 64), generator=g)
    return x, torch.roll(x, -1, 1)


def _sequences(n, g):
    x = torch.randn(n, 50, 32, generator=g)
    return x, (x[:, :, 0].sum(1) > 0).long()


def _ce(out, y):
    return F.cross_entropy(out, y)


def _ce_tokens(out, y):
    return F.cross_entropy(out.transpose(1, 2), y)


#: name -> (description, model factory, data factory, batch, loss)
WORKLOADS = {
    "mlp": ("MLP 784-256-256-10", mlp, _images, 128, _ce),
    "cnn": ("small CNN (conv 1->16, pool, conv 16->32, pool, linear)", cnn, _images, 128, _ce),
    "gpt": ("nanoGPT-style (V 65, T 64, E 128, 2 blocks x 4 heads, SDPA, tied, dropout 0.1)", GPT, _tokens, 8,
            _ce_tokens),
    "lstm": ("LSTM classifier (32 -> 128 hidden, T 50)", LSTMClassifier, _sequences, 32, _ce),
}


# ---------------------------------------------------------------------------------------------- timing
class Runner:
    def __init__(self, key, mode, seed=0, n_batches=20):
        _, model_fn, data_fn, batch, loss = WORKLOADS[key]
        torch.manual_seed(seed)
        self.mode = mode
        self.model = model_fn()
        self.lf = loss
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(seed)
        self.X, self.Y = data_fn(batch * n_batches, g)
        self.batch, self.n, self.s = batch, n_batches, 0
        self.mon = self.cockpit = None
        if mode in BREAKDOWN:
            self.mon = Monitor(self.model, self.opt, **BREAKDOWN[mode]) if BREAKDOWN[mode] is not None else None
        elif mode == "tier0":
            self.mon = Monitor(self.model, self.opt, tier1_every=None)
        elif mode == "default":
            self.mon = Monitor(self.model, self.opt)
        elif mode == "light":
            self.mon = Monitor(self.model, self.opt, **LIGHT)
        elif mode == "every1":
            self.mon = Monitor(self.model, self.opt, tier1_every=1)
        elif mode == "tier2":
            self.mon = Monitor(self.model, self.opt, log_every=50, loss_fn=self.lf,
                               hessian_batch=(self.X[:batch], self.Y[:batch]))
        elif mode == "cockpit":
            from backpack import extend
            from cockpit import Cockpit
            from cockpit.utils.configuration import configuration

            self.model = extend(self.model)
            self.lf_ce = extend(nn.CrossEntropyLoss(reduction="mean"))
            self.lf_ind = nn.CrossEntropyLoss(reduction="none")
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
            self.cockpit = Cockpit(self.model.parameters(), quantities=configuration("economy"))

    def step(self):
        i = self.s % self.n
        x, y = self.X[i * self.batch:(i + 1) * self.batch], self.Y[i * self.batch:(i + 1) * self.batch]
        self.opt.zero_grad()
        out = self.model(x)
        if self.cockpit is not None:
            loss = self.lf_ce(out, y)
            with self.cockpit(self.s, info={"batch_size": self.batch, "individual_losses": self.lf_ind(out, y),
                                            "loss": loss, "optimizer": self.opt}):
                loss.backward(create_graph=self.cockpit.create_graph(self.s))
        else:
            loss = self.lf(out, y)
            loss.backward()
        if self.mode == "norm_pass":  # the exact ||g||^2 tier 0 needs, alone: one fused norm over the gradients
            torch.stack(torch._foreach_norm([p.grad for p in self.model.parameters()])).tolist()
        self.opt.step()
        if self.mon is not None:
            self.mon.step(loss)
        self.s += 1

    def run(self, steps, clock=time.perf_counter):
        ts = []
        for _ in range(steps):
            t0 = clock()
            self.step()
            ts.append(clock() - t0)
        return ts

    def time_tier2(self):
        """One warm tier-2 evaluation (what a scheduled step adds), on the monitor's last step context."""
        mon = self.mon
        mon._internal = True
        en = mon.engine.enabled if mon.engine else None
        if mon.engine:
            mon.engine.enabled = False
        try:
            t0 = time.perf_counter()
            # tier 2 reads only what it declares: the model and the optimizer's L2 decay (none here)
            mon.curvature.post_step(SimpleNamespace(model=mon.inner, l2_decay=None))
            return time.perf_counter() - t0
        finally:
            mon._internal = False
            if mon.engine:
                mon.engine.enabled = en


#: ``--breakdown``: what each part of the default schedule adds, one configuration on top of the other
#: a cheaper schedule than the default, for small models: tier 0 on every 5th step (and each row's last), the
#: uncertainty window sampled every 25 steps (4 samples per 100-step window)
LIGHT = dict(tier0_every=5, uncertainty_every=25)

BREAKDOWN = {
    "norm_pass": None,                                                               # no monitor: the norm alone
    "grad_only": dict(tier1_every=None, window=None, track_update=False),            # tier 0: ||g||^2, C_sgd
    "grad_update": dict(tier1_every=None, window=None),                              # + update/parameter norms
    "tier0_all": dict(tier1_every=None),                                             # + the uncertainty window
    "default_all": dict(),                                                           # + tier 1 every 25 steps
}


def breakdown(key, rounds, block, warmup, clock):
    """Added time per step (median over rounds of block-mean differences from the plain step), in us."""
    modes = ["plain"] + list(BREAKDOWN)
    runners = {m: Runner(key, m) for m in modes}
    for r in runners.values():
        r.run(warmup)
    diff = {m: [] for m in modes}
    for rd in range(rounds):
        order = modes[rd % len(modes):] + modes[:rd % len(modes)]
        blk = {m: statistics.fmean(runners[m].run(block, clock)) for m in order}
        for m in modes:
            diff[m].append(blk[m] - blk["plain"])
        plain = blk["plain"]
    for r in runners.values():
        if r.mon is not None:
            r.mon.close()
    return plain, {m: 1e6 * statistics.median(diff[m]) for m in modes[1:]}


def q10(ts):
    """Lower decile of the step times: the least load-disturbed estimate on a shared machine."""
    return statistics.quantiles(ts, n=10)[0]


def bench(key, modes, rounds, block, warmup, clock=time.perf_counter):
    runners = {m: Runner(key, m) for m in modes}
    for r in runners.values():
        r.run(warmup if r.mode != "cockpit" else 3)
    times = {m: [] for m in modes}
    paired = {m: [] for m in modes}
    t2 = []
    for rd in range(rounds):
        order = modes[rd % len(modes):] + modes[:rd % len(modes)]
        blk = {}
        for m in order:
            n = block if m != "cockpit" else max(1, block // 5)
            ts = runners[m].run(n, clock)
            times[m] += ts
            blk[m] = statistics.fmean(ts)
            if m == "tier2":
                t2.append(runners[m].time_tier2())
        for m in modes:
            paired[m].append(blk[m] / blk["plain"])
    for r in runners.values():
        if r.mon is not None:
            r.mon.close()
    med = {m: statistics.median(v) for m, v in times.items()}
    mean = {m: statistics.fmean(v) for m, v in times.items()}
    res = {"plain_ms": 1e3 * med["plain"]}
    for m in modes[1:]:
        res[m] = {"median_ratio": med[m] / med["plain"], "mean_ratio": mean[m] / mean["plain"],
                  "paired": statistics.median(paired[m]), "q10_ratio": q10(times[m]) / q10(times["plain"])}
    if t2:
        res["tier2_ms"] = 1e3 * statistics.median(t2)
        res["tier2_amortised"] = statistics.median(t2) / 250 / med["plain"]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=DEFAULT_TIER1_EVERY)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(WORKLOADS))
    ap.add_argument("--cockpit", action="store_true", help="also Cockpit 'economy' (MLP and CNN)")
    ap.add_argument("--tier2", action="store_true", help="also time tier 2 (MLP and CNN)")
    ap.add_argument("--breakdown", action="store_true",
                    help="what each part of the default schedule adds per step (us), configuration on configuration")
    ap.add_argument("--quick", action="store_true", help="a smoke run (2 rounds, small blocks): for the tests")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time, or this thread's CPU time (robust when other jobs share the cores)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.block, args.warmup = 2, 2, 1
    torch.set_num_threads(args.threads)
    keys = args.only.split(",") if args.only else list(WORKLOADS)
    bad = [k for k in keys if k not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s) {bad}; choose from {list(WORKLOADS)}")
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}, "
          f"load average at start {load0}; default schedule tier1_every={DEFAULT_TIER1_EVERY}, block {args.block} steps, "
          f"{args.clock} clock")
    have_cockpit = False
    if args.cockpit:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import backpack  # noqa: F401
                import cockpit  # noqa: F401
            have_cockpit = True
        except Exception as exc:  # noqa: BLE001
            print(f"cockpit not available: {type(exc).__name__}: {exc}")
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    if args.breakdown:
        for key in keys:
            plain, add = breakdown(key, args.rounds, args.block, args.warmup, clock)
            prev, parts = 0.0, []
            for m, v in add.items():
                parts.append(f"{m} +{v:.0f} us" + (f" (+{v - prev:.0f})" if m != "norm_pass" else ""))
                prev = v if m != "norm_pass" else prev
            print(f"{key}: plain {1e3 * plain:.2f} ms; " + "; ".join(parts), flush=True)
        return
    goals = {"mlp": 1.1, "cnn": 1.1, "gpt": 1.2, "lstm": 1.2}
    rows = []
    for key in keys:
        modes = ["plain", "tier0", "default", "light", "every1"]
        if args.tier2 and key in ("mlp", "cnn"):
            modes.append("tier2")
        if have_cockpit and key in ("mlp", "cnn"):
            modes.append("cockpit")
        res = bench(key, modes, args.rounds, args.block, args.warmup, clock)
        d = res["default"]
        ok = d["paired"] <= goals[key]
        line = (f"{key}: plain {res['plain_ms']:.2f} ms; tier0 x{res['tier0']['paired']:.3f}; default "
                f"x{d['paired']:.3f} (mean x{d['mean_ratio']:.3f}, q10 x{d['q10_ratio']:.3f}); light "
                f"x{res['light']['paired']:.3f}; one tier-1 step "
                f"x{res['every1']['median_ratio']:.2f}; goal <= {goals[key]} {'met' if ok else 'NOT met'}")
        if "tier2_ms" in res:
            line += f"; tier 2 {res['tier2_ms']:.1f} ms = +{100 * res['tier2_amortised']:.1f}% at every 250"
        if "cockpit" in res:
            line += f"; Cockpit economy x{res['cockpit']['paired']:.1f}"
        print(line, flush=True)
        rows.append((key, res, ok))
    load1 = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"load average at end {load1}")
    if args.markdown:
        print("\n| workload | plain step | tier 0 | default (tier 1 every %d) | light (%s) | one tier-1 step | goal "
              "| verdict |" % (DEFAULT_TIER1_EVERY, ", ".join(f"{k}={v}" for k, v in LIGHT.items())))
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for key, res, ok in rows:
            d = res["default"]
            print(f"| {WORKLOADS[key][0]}, batch {WORKLOADS[key][3]} | {res['plain_ms']:.2f} ms | "
                  f"{res['tier0']['paired']:.3f}x | **{d['paired']:.3f}x** (mean {d['mean_ratio']:.3f}x) | "
                  f"{res['light']['paired']:.3f}x | "
                  f"{res['every1']['median_ratio']:.2f}x | <= {goals[key]}x | {'met' if ok else 'not met'} |")


if __name__ == "__main__":
    main()
